"""The frozen-backbone baseline: only the task head (``modules_to_save``) is trained.

It answers "how much do the adapters add over a linear probe on frozen features?", and
runs through the same modules, checkpoints and CLI as every other method.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hadamard_lit.adapters.base import AdapterLayer, AdapterStrategy


class HeadOnly(AdapterStrategy):
    """Freeze the whole backbone and train only ``modules_to_save`` (default: the head).

    Args:
        modules_to_save: the modules to train; ``None`` = the task head of a
            ``*ForSequenceClassification`` model (``classifier``, ``score``, ...). A model
            with no head (T5, causal LMs) would train nothing, which is an error.
    """

    def __init__(self, modules_to_save: list[str] | None = None) -> None:
        super().__init__(target_modules=None, modules_to_save=modules_to_save)

    def make_layer(
        self, name: str, base: nn.Module, **options: Any
    ) -> AdapterLayer:  # pragma: no cover
        raise NotImplementedError("HeadOnly injects no layers")

    def select_targets(self, model: nn.Module, exclude: list[str]) -> list[str]:
        return []

    def apply(self, model: nn.Module) -> list[str]:
        """Freeze ``model`` except ``modules_to_save``; returns ``[]`` (nothing is adapted)."""
        if not self._modules_to_save(model):
            raise ValueError(
                f"HeadOnly found no task head on {type(model).__name__} (looked for "
                "classifier, score, classification_head, qa_outputs); name the modules "
                "to train with modules_to_save"
            )
        return super().apply(model)
