"""Learning-rate schedules the modules build: linear warm-up, then linear decay or constant.

A schedule is a callable object, not a lambda, so ``LambdaLR.state_dict`` saves its fields
and a resumed run continues the same schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from lightning.pytorch.cli import LRSchedulerCallable
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from hadamard_lit.metrics import VAL_SCORE

LRSchedule = Literal["linear", "constant"]


def training_steps(trainer: Any) -> float:
    """The optimizer steps ``trainer``'s fit will take.

    ``trainer.estimated_stepping_batches``, but where the datamodule can count its own
    batches (hadamard_lit's can), counted without loading the training loader: Lightning's
    estimate loads it early, before a checkpoint's loader state is restored, and then never
    restores it (Lightning issue #20550), so a mid-epoch resume would replay the epoch.
    """
    if trainer.max_epochs in (None, -1) or trainer.train_dataloader is not None:
        return trainer.estimated_stepping_batches
    count = getattr(trainer.datamodule, "train_batches_per_epoch", None)
    if not callable(count):
        return trainer.estimated_stepping_batches
    batches = count(trainer.world_size)
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif isinstance(limit, float) and limit < 1.0:
        batches = int(batches * limit)
    steps = math.ceil(batches / trainer.accumulate_grad_batches) * max(trainer.max_epochs, 1)
    return min(steps, trainer.max_steps) if trainer.max_steps != -1 else steps


class LinearWarmupSchedule:
    """LR factor: linear warm-up over ``warmup_steps``, then linear decay to 0 or constant."""

    def __init__(self, warmup_steps: int, total_steps: int, decay: bool) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.decay = decay

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if not self.decay:
            return 1.0
        remaining = self.total_steps - step
        return max(0.0, remaining / max(1, self.total_steps - self.warmup_steps))


def optimizer_config(
    optimizer: Optimizer,
    factory: LRSchedulerCallable | None,
    schedule: LRSchedule,
    warmup_steps: int,
    total_steps: Callable[[], float],
) -> Any:
    """What ``configure_optimizers`` returns: the optimizer and its schedule, if any.

    A ``factory`` (LightningCLI's ``lr_scheduler``) wins; ``ReduceLROnPlateau`` watches
    ``val/score`` once per epoch. Otherwise ``schedule="linear"`` (or any warm-up) builds a
    :class:`LinearWarmupSchedule` over ``total_steps()`` optimizer steps (asked only then:
    a trainer's estimate may load the training data).

    Raises:
        ValueError: the linear schedule and an unbounded fit.
    """
    if factory is not None:
        scheduler = factory(optimizer)
        if isinstance(scheduler, ReduceLROnPlateau):
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": VAL_SCORE, "interval": "epoch"},
            }
    elif schedule == "linear" or warmup_steps:
        total = total_steps()
        if not math.isfinite(total):
            raise ValueError("lr_schedule='linear' needs a finite trainer.max_steps or max_epochs")
        factor = LinearWarmupSchedule(warmup_steps, int(total), schedule == "linear")
        scheduler = LambdaLR(optimizer, factor)
    else:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
