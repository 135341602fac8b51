"""A ``ModelCheckpoint`` that keeps no "best" checkpoint from the middle of pruning, nor
one whose score or validation loss is not finite.

The AdaDHP authors' scripts evaluate every epoch and keep the best checkpoint, which can
be one with more than ``n_T`` modules still active. This subclass ranks monitored
checkpoints only once :class:`~hadamard_lit.callbacks.AdaptiveSelection` has processed
``t_final`` (``trainer.global_step >= t_final``); ``save_last`` and ``monitor=None``
checkpoints (the latest, not a choice among them) are unchanged. On a trainer without
selection it is a plain ``ModelCheckpoint``, so the CLI uses it as its default.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor
from typing_extensions import override

from hadamard_lit.callbacks.adaptive_selection import AdaptiveSelection


class SelectionAwareCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose top-k ranking starts after adaptive selection has finished.

    Takes exactly ``ModelCheckpoint``'s arguments. With no :class:`AdaptiveSelection`
    callback on the trainer it behaves as a plain ``ModelCheckpoint``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._selection: AdaptiveSelection | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # At most one: Lightning refuses two stateful callbacks with the same state key.
        found = [c for c in trainer.callbacks if isinstance(c, AdaptiveSelection)]  # type: ignore[attr-defined]
        self._selection = found[0] if found else None

    def selection_done(self, trainer: pl.Trainer) -> bool:
        """Whether pruning is over at the trainer's current step."""
        assert self._selection is not None
        return trainer.global_step >= self._selection.t_final

    @override
    def check_monitor_top_k(self, trainer: pl.Trainer, current: Tensor | None = None) -> bool:
        if self._selection is not None and not self.selection_done(trainer):
            return False
        # A non-finite score, or a finite score over non-finite losses (argmax of NaN logits
        # still "predicts" a class), never ranks as best.
        losses = [v for k, v in trainer.callback_metrics.items() if k.endswith("/loss")]
        if current is not None and not bool(torch.isfinite(current).all()):
            return False
        if any(not bool(torch.isfinite(v).all()) for v in losses if isinstance(v, Tensor)):
            return False
        return super().check_monitor_top_k(trainer, current)
