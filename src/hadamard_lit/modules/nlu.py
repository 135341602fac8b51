"""What the two NLU shapes (text-to-text and classification) share: the task and its metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor
from torchmetrics import MetricCollection

from hadamard_lit.data.batch import Batch
from hadamard_lit.data.eval_sharding import scored_rows
from hadamard_lit.modules.base import Stage

if TYPE_CHECKING:
    from hadamard_lit.data.tasks import TaskSpec


class NLUTaskMixin:
    """``task_spec``, metrics and metric updates for modules whose ``task`` is an NLU task."""

    task: str | None

    if TYPE_CHECKING:  # provided by AdapterModule, which the mixin always comes with

        def stage_metrics(self, stage: Stage) -> MetricCollection: ...

    @property
    def task_spec(self) -> TaskSpec:
        """The :class:`~hadamard_lit.data.tasks.TaskSpec` of ``self.task``."""
        from hadamard_lit.data.tasks import get_task

        if self.task is None:
            raise ValueError(
                f"{type(self).__name__} does not know its task: pass task=... or train with a "
                "datamodule that has a task_spec (NLUDataModule)"
            )
        return get_task(self.task)

    def task_metrics(self) -> MetricCollection | None:
        """The task's metric collection (``None`` while the task is unknown)."""
        if self.task is None:
            return None
        from hadamard_lit.metrics import build_task_metrics

        return build_task_metrics(self.task_spec)

    def headline_metric(self) -> str | None:
        return self.task_spec.headline_metric if self.task is not None else None

    def update_metrics(self, stage: Stage, preds: Tensor, batch: Batch) -> None:
        """Update ``stage``'s metrics; ``group`` reaches the metrics that take it (MultiRC)."""
        target = batch["target"] if "target" in batch else batch["labels"]
        group = batch.get("group")
        keep = scored_rows(batch)
        if keep is not None:  # a padding copy of a row another process scores
            if not bool(keep.any()):
                return  # torchmetrics cannot take an empty update
            preds, target = preds[keep], target[keep]
            group = None if group is None else group[keep]
        if group is None:
            self.stage_metrics(stage).update(preds, target)
        else:
            self.stage_metrics(stage).update(preds, target, group=group)
