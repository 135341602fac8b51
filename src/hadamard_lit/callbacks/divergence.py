"""Stop a run whose loss or trained tensors stop being finite, before anything saves them.

A diverged run does not fail by itself: argmax over NaN logits still "predicts" a class
(the majority's accuracy), checkpoints and exports fill with NaN. :class:`DivergenceGuard`
(on by default in the CLI) checks after every training batch that the loss and every
trained tensor are finite and otherwise raises :class:`TrainingDiverged`, naming the step,
what is not finite and the last good checkpoint. It runs before the checkpoint callbacks of
the same batch (Lightning runs those last), so nothing from that step on is written. Every
rank takes part in the decision, so a distributed run stops everywhere at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from hadamard_lit.parallel.tensors import local_values


class TrainingDiverged(RuntimeError):
    """The loss, a gradient or a trained tensor is no longer finite."""


def last_good_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint file any of ``trainer``'s checkpoint callbacks wrote."""
    paths = [
        Path(p)
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint)
        for p in (callback.last_model_path, callback.best_model_path)
        if p and Path(p).exists()
    ]
    return str(max(paths, key=lambda p: p.stat().st_mtime)) if paths else None


def diverged_message(trainer: pl.Trainer, what: str) -> str:
    """``what`` went wrong at this step: the run stops, and how to go on."""
    optimizer = trainer.optimizers[0] if trainer.optimizers else None
    lr = optimizer.param_groups[0].get("lr") if optimizer is not None else None
    last = last_good_checkpoint(trainer)
    return (
        f"Training diverged at optimizer step {trainer.global_step} (epoch "
        f"{trainer.current_epoch}): {what}. The run stops here; nothing from this step on is "
        f"saved. Last good checkpoint: {last or 'none (none was saved yet)'}. Lower the "
        f"learning rate{f' (now {lr:g})' if isinstance(lr, float) else ''}, or clip gradients "
        "(trainer.gradient_clip_val)"
    )


class DivergenceGuard(Callback):
    """Raise :class:`TrainingDiverged` when the loss or a trained tensor is not finite.

    Args:
        check_parameters: also check every trained tensor after each step (they can go
            to inf with a finite loss); a pass over the trained values, about 1% of a
            full fine-tuning step and nothing for adapters.
    """

    def __init__(self, check_parameters: bool = True) -> None:
        self.check_parameters = check_parameters

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        problem = None
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            if trainer.precision == "16-mixed":
                # The gradient scaler skips a step whose loss overflowed, and lowers its scale.
                rank_zero_warn(f"loss {loss.item()} at step {trainer.global_step}: skipped (AMP)")
            else:
                problem = f"the loss is {loss.item()}"
        if problem is None and self.check_parameters:
            bad = [
                name
                for name, param in pl_module.named_parameters()
                if param.requires_grad and not bool(torch.isfinite(local_values(param)).all())
            ]
            if bad:
                problem = f"{len(bad)} trained tensors are not finite (e.g. {bad[0]})"
        if trainer.strategy.reduce_boolean_decision(problem is not None, all=False):
            raise TrainingDiverged(
                diverged_message(trainer, problem or "another process's loss is not finite")
            )
