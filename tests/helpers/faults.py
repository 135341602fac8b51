"""Callbacks that make a run fail the way real ones do, by ``class_path`` in a run config."""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class Killed(RuntimeError):
    """Stands in for SIGKILL: nothing after it runs."""


class _AtStep(Callback):
    """Does :meth:`act` as optimizer step ``step`` begins."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, *args: object
    ) -> None:
        if trainer.global_step == self.step:
            self.act(pl_module)

    def act(self, pl_module: LightningModule) -> None:
        raise NotImplementedError


class CrashAtStep(_AtStep):
    """A killed job: the process dies as optimizer step ``step`` begins (no further saves)."""

    def act(self, pl_module: LightningModule) -> None:
        raise Killed(f"killed at step {self.step}")


class PoisonAtStep(_AtStep):
    """Divergence: at optimizer step ``step`` one trained tensor turns NaN."""

    def act(self, pl_module: LightningModule) -> None:
        param = next(p for p in pl_module.parameters() if p.requires_grad)
        with torch.no_grad():
            param.view(-1)[0] = math.nan
