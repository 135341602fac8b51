"""The evaluation half of :class:`~hadamard_lit.modules.AdapterModule` that no metric object
holds: the loss over every process's rows, and metric states kept in float32.

* The loss of a validation or test epoch is the mean over the rows every process scored
  (padding copies excluded, :mod:`~hadamard_lit.data.eval_sharding`): a sum and a row count
  per process, added across processes at the epoch's end. Not ``self.log(sync_dist=True)``,
  whose average of the processes' row counts is an integer division under gloo (5 rows
  on 2 processes were counted as 4), and not a torchmetrics mean, whose states a
  ``*-true`` precision casts to bf16 (which cannot count past 256).
* ``*-true`` precisions cast the whole module, torchmetrics' floating states included
  (Pearson's running means in bf16): they go back to float32 at each epoch's start.
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import Metric

#: The evaluation stages a module scores.
Stage = Literal["val", "test"]


def keep_float_metric_states_float32(module: torch.nn.Module) -> None:
    """Every torchmetrics metric under ``module`` whose states are all floating point, in
    float32 (metrics with counts, e.g. accuracy's, keep their integer states)."""
    for metric in module.modules():
        if not isinstance(metric, Metric):
            continue
        states = [
            t
            for value in metric.metric_state.values()
            for t in (value if isinstance(value, list) else [value])
            if isinstance(t, Tensor)
        ]
        floating = states and all(t.is_floating_point() for t in states)
        if floating and any(t.dtype != torch.float32 for t in states):
            metric.set_dtype(torch.float32)


class EvaluationAccounting(LightningModule):
    """Evaluation loss over every process's rows; metric states in float32."""

    def _loss_totals(self) -> dict[str, Tensor]:
        if not hasattr(self, "_eval_loss_totals"):
            self._eval_loss_totals: dict[str, Tensor] = {}
        return self._eval_loss_totals

    def log_eval_loss(self, stage: Stage, loss: Tensor, rows: int) -> None:
        """Add a batch of ``rows`` scored rows (its mean ``loss``) to ``stage``'s epoch."""
        batch = torch.stack(
            [loss.detach().float() * rows if rows else loss.new_zeros((), dtype=torch.float32),
             torch.tensor(float(rows), device=loss.device)]
        )  # fmt: skip
        totals = self._loss_totals()
        totals[stage] = batch if stage not in totals else totals[stage] + batch

    def log_eval_loss_of_epoch(self, stage: Stage) -> None:
        """Log ``<stage>/loss``: the epoch's mean over every process's rows."""
        totals = self._loss_totals().pop(stage, None)
        if totals is None:  # this process saw no batch; the others still add theirs
            totals = torch.zeros(2, device=self.device)
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        if float(totals[1]) > 0:
            self.log(f"{stage}/loss", totals[0] / totals[1], sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._loss_totals().pop("val", None)
        keep_float_metric_states_float32(self)

    def on_test_epoch_start(self) -> None:
        self._loss_totals().pop("test", None)
        keep_float_metric_states_float32(self)
