"""Callbacks that make a run fail the way real ones do, by ``class_path`` in a run config."""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class Killed(RuntimeError):
    """Stands in for SIGKILL: nothing after it runs."""


class CrashAtStep(Callback):
    """A killed job: the process dies as optimizer step ``step`` begins (no further saves)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, *args: object
    ) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed at step {self.step}")


class PoisonAtStep(Callback):
    """Divergence: at optimizer step ``step`` one trained tensor turns NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, *args: object
    ) -> None:
        if trainer.global_step == self.step:
            param = next(p for p in pl_module.parameters() if p.requires_grad)
            with torch.no_grad():
                param.view(-1)[0] = math.nan
