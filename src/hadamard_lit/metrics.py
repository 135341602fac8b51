"""Task metrics as the benchmarks define them, on torchmetrics.

:func:`build_task_metrics` gives a :class:`TaskMetrics` collection per NLU task:

====================== ===================================================== ==========
task                   metrics                                               headline
====================== ===================================================== ==========
CoLA                   ``matthews_corrcoef``                                 itself
MRPC, QQP              ``accuracy``, ``f1`` (binary F1 of the positive class) ``average``
STS-B                  ``pearson``, ``spearman``                             ``average``
MultiRC                ``f1a`` (F1 over all answer options), ``exact_match``  ``average``
                       (share of questions with every option right)
all others             ``accuracy``                                          itself
====================== ===================================================== ==========

``average`` is the mean of the two, as GLUE and SuperGLUE report these tasks
(``TaskSpec.headline_metric`` names the headline).

Interface: ``metrics.update(preds, target, group=None)``; ``preds`` are class ids
(``long``) or scores (``float``, STS-B), ``target`` the same, ``group`` MultiRC's question
ids (needed by ``exact_match``, ignored by the others). ``compute()`` returns every
metric and, for two-metric tasks, ``average``, under the collection's prefix.

A generation that names no label arrives as prediction -1 (classification) or NaN
(STS-B) and always counts as wrong: -1 is replaced by a label that differs from the
target (``(target + 1) % num_labels``), so it is an error for accuracy, F1 and MCC alike;
NaN is replaced by the end of the score range farthest from the target (0 for a gold
score of 2.5 or more, else 5), the largest error one prediction can make.

:class:`MathExactMatch` scores math answers (strings) after :func:`normalize_answer`.

Every module logs its task's headline again as ``<stage>/score`` (:func:`score_key`): the
one name checkpoints monitor (:data:`VAL_SCORE`), schedules watch and reports read.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import (
    Accuracy,
    F1Score,
    Metric,
    MetricCollection,
    PearsonCorrCoef,
    SpearmanCorrCoef,
)
from torchmetrics.classification import BinaryMatthewsCorrCoef, MulticlassMatthewsCorrCoef
from torchmetrics.utilities import dim_zero_cat

from hadamard_lit.data.answers import normalize_answer
from hadamard_lit.data.tasks import AVERAGE_METRIC, TaskSpec, get_task

#: The headline metric's name under every stage: ``val/score``, ``test/score``.
SCORE = "score"


def score_key(stage: str) -> str:
    """``<stage>/score``: where a module logs its task's headline metric."""
    return f"{stage}/{SCORE}"


#: What checkpoints and plateau schedules monitor, and a sweep compares.
VAL_SCORE = score_key("val")
TEST_SCORE = score_key("test")
#: The name :class:`MajorityBaseline` is logged under (``val/majority``, ``test/majority``).
MAJORITY = "majority"

__all__ = [
    "AVERAGE_METRIC",
    "MAJORITY",
    "SCORE",
    "TEST_SCORE",
    "VAL_SCORE",
    "GroupExactMatch",
    "MajorityBaseline",
    "MathExactMatch",
    "TaskMetrics",
    "build_task_metrics",
    "headline_metric",
    "score_key",
]


class GroupExactMatch(Metric):
    """Share of groups (MultiRC questions) whose every member (answer option) is right."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: list[Tensor]
    group: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Whole rows, not per-group tallies: a group's rows can sit in different batches
        # and, under DDP, on different ranks; "cat" gathers them before compute.
        self.add_state("correct", default=[], dist_reduce_fx="cat")
        self.add_state("group", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, group: Tensor | None = None) -> None:
        """Record which rows are right, and their group ids.

        Raises:
            ValueError: ``group`` is missing or does not match ``preds`` in length.
        """
        if group is None or group.numel() != preds.numel():
            raise ValueError(
                "GroupExactMatch needs `group`, one id per prediction (MultiRC question ids)"
            )
        self.correct.append((preds == target).reshape(-1).long())
        self.group.append(group.reshape(-1).long())

    def compute(self) -> Tensor:
        correct, group = dim_zero_cat(self.correct), dim_zero_cat(self.group)
        if group.numel() == 0:
            return torch.tensor(0.0, device=self.device)
        ids, inverse = torch.unique(group, return_inverse=True)
        wrong = torch.zeros(len(ids), device=group.device).scatter_add_(
            0, inverse, (1 - correct).float()
        )
        return (wrong == 0).float().mean()


class MathExactMatch(Metric):
    """Exact match of final math answers, compared after :func:`normalize_answer`.

    ``update(preds, target)``: ``preds`` the answers extracted from generations (``None``
    where none was found: wrong), ``target`` the gold answers.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str | None], target: Sequence[str]) -> None:
        if len(preds) != len(target):
            raise ValueError(
                f"MathExactMatch got {len(preds)} predictions for {len(target)} answers"
            )
        for pred, gold in zip(preds, target, strict=True):
            normalised = normalize_answer(pred)
            self.correct += int(normalised is not None and normalised == normalize_answer(gold))
        self.total += len(target)

    def compute(self) -> Tensor:
        return self.correct.float() / self.total.clamp(min=1)


class MajorityBaseline(Metric):
    """The task's headline score of always predicting the most frequent label of the rows
    evaluated: the line a method has to clear (accuracy: the majority's share; MCC: 0).

    Logged as ``<stage>/majority`` beside the task's metrics (classification tasks; a
    constant has no correlation with STS-B's scores). Ties go to the lower label id.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    target: list[Tensor]
    group: list[Tensor]

    def __init__(self, spec: TaskSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("group", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, group: Tensor | None = None) -> None:
        self.target.append(target.reshape(-1).long())
        self.group.append((group if group is not None else torch.full_like(target, -1)).reshape(-1))

    def compute(self) -> Tensor:
        target, group = dim_zero_cat(self.target), dim_zero_cat(self.group)
        if target.numel() == 0:
            return torch.tensor(0.0, device=self.device)
        counts = torch.bincount(target, minlength=self.spec.num_labels)
        constant = torch.full_like(target, int(counts.argmax()))
        scores = build_task_metrics(self.spec, baseline=False).to(target.device)
        if "exact_match" in self.spec.metric_names:  # MultiRC: scored per question
            scores.update(constant, target, group=group)
        else:
            scores.update(constant, target)
        return torch.as_tensor(scores.compute()[self.spec.headline_metric]).float()


class TaskMetrics(MetricCollection):
    """A task's metrics: unparseable predictions counted wrong, ``average`` added.

    Args:
        metrics: the metrics by name.
        num_labels: classes (1: regression).
        label_range: the score range of a regression task.
        average_of: metric names whose mean ``compute`` adds as ``average``.
        prefix: prepended to every name (``"val/"``).
    """

    def __init__(
        self,
        metrics: dict[str, Metric | MetricCollection],
        num_labels: int,
        label_range: tuple[float, float] = (0.0, 5.0),
        average_of: tuple[str, ...] = (),
        prefix: str | None = None,
    ) -> None:
        super().__init__(metrics, prefix=prefix)
        self.num_labels = num_labels
        self.label_range = label_range
        self.average_of = average_of

    def clean(self, preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``preds`` with unparseable entries (-1, NaN) replaced by a wrong value."""
        if self.num_labels == 1:
            preds, target = preds.float(), target.float()
            low, high = self.label_range
            worst = torch.where(target >= (low + high) / 2, low, high)
            return torch.where(torch.isfinite(preds), preds, worst), target
        preds, target = preds.long(), target.long()
        wrong = (target + 1) % self.num_labels
        valid = (preds >= 0) & (preds < self.num_labels)
        return torch.where(valid, preds, wrong), target

    def update(self, preds: Tensor, target: Tensor, group: Tensor | None = None) -> None:  # type: ignore[override]
        """Update every metric (``group`` reaches only the metrics that take it)."""
        preds, target = self.clean(preds, target)
        if group is None:
            super().update(preds, target)
        else:
            super().update(preds, target, group=group)

    def forward(self, preds: Tensor, target: Tensor, group: Tensor | None = None) -> dict[str, Any]:
        """Update, and return this batch's values (with ``average``)."""
        preds, target = self.clean(preds, target)
        values = (
            super().forward(preds, target)
            if group is None
            else super().forward(preds, target, group=group)
        )
        return self._add_average(values)

    def compute(self) -> dict[str, Any]:
        return self._add_average(super().compute())

    def _add_average(self, values: dict[str, Any]) -> dict[str, Any]:
        if self.average_of:
            parts = [values[self._full_name(name)] for name in self.average_of]
            values[self._full_name(AVERAGE_METRIC)] = torch.stack(
                [torch.as_tensor(p).float() for p in parts]
            ).mean()
        return values

    def _full_name(self, name: str) -> str:
        return f"{self.prefix or ''}{name}{self.postfix or ''}"


class _ZeroWhenDegenerate:
    """Matthews correlation as GLUE computes it (scikit-learn): 0 when every prediction, or
    every target, is one class (the formula's denominator is 0).

    torchmetrics (1.x) scores that case with an epsilon-based formula instead: a model that
    predicts "acceptable" for all 500 of CoLA's capped test rows would get 0.037, and
    look better than chance in a table.
    """

    confmat: Tensor

    def compute(self) -> Tensor:
        confmat = self.confmat
        predicted, actual = (confmat.sum(0) > 0).sum(), (confmat.sum(1) > 0).sum()
        if predicted < 2 or actual < 2:
            return torch.zeros((), device=confmat.device)
        return super().compute()  # type: ignore[misc]


class GlueBinaryMatthewsCorrCoef(_ZeroWhenDegenerate, BinaryMatthewsCorrCoef):
    """:class:`BinaryMatthewsCorrCoef`, 0 for one-class predictions or targets (GLUE)."""


class GlueMulticlassMatthewsCorrCoef(_ZeroWhenDegenerate, MulticlassMatthewsCorrCoef):
    """:class:`MulticlassMatthewsCorrCoef`, 0 for one-class predictions or targets (GLUE)."""


def _make_metric(name: str, spec: TaskSpec) -> Metric:
    if spec.num_labels == 2:
        kind: dict[str, Any] = {"task": "binary"}
    else:
        kind = {"task": "multiclass", "num_classes": spec.num_labels}
    if name == "accuracy":
        return Accuracy(**kind)
    if name in ("f1", "f1a"):
        # MRPC/QQP F1 and MultiRC's F1a: binary F1 of the positive class, over all rows.
        return F1Score(task="binary")
    if name == "matthews_corrcoef":
        if spec.num_labels == 2:
            return GlueBinaryMatthewsCorrCoef()
        return GlueMulticlassMatthewsCorrCoef(num_classes=spec.num_labels)
    if name == "pearson":
        return PearsonCorrCoef()
    if name == "spearman":
        with warnings.catch_warnings():
            # Its warning about buffering every score is moot at STS-B's 1,500 rows.
            warnings.filterwarnings("ignore", message=".*will save all targets and predictions")
            return SpearmanCorrCoef()
    if name == "exact_match":
        return GroupExactMatch()
    raise ValueError(f"task {spec.name!r}: no metric called {name!r}")


def build_task_metrics(task: str | TaskSpec, baseline: bool = True) -> TaskMetrics:
    """The metric collection of ``task`` (a name or a :class:`TaskSpec`).

    Args:
        baseline: add ``majority`` (:class:`MajorityBaseline`) for classification tasks.

    Raises:
        ValueError: an unknown task name.
    """
    spec = get_task(task) if isinstance(task, str) else task
    metrics: dict[str, Metric | MetricCollection] = {
        name: _make_metric(name, spec) for name in spec.metric_names
    }
    if baseline and spec.num_labels > 1:
        metrics[MAJORITY] = MajorityBaseline(spec)
    average_of = spec.metric_names if len(spec.metric_names) > 1 else ()
    return TaskMetrics(
        metrics, num_labels=spec.num_labels, label_range=spec.label_range, average_of=average_of
    )


def headline_metric(task: str | TaskSpec) -> str:
    """The name of the metric ``task`` is judged by (``TaskSpec.headline_metric``)."""
    spec = get_task(task) if isinstance(task, str) else task
    return spec.headline_metric
