"""hadamard_lit.metrics: parity with direct computations, MultiRC, unparseable predictions.

The references are written out by hand (numpy; scikit-learn and scipy are not installed)
from the textbook definitions, on fixed predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hadamard_lit.data.tasks import AVERAGE_METRIC, TASKS, get_task
from hadamard_lit.metrics import (
    MAJORITY,
    GroupExactMatch,
    MathExactMatch,
    build_task_metrics,
    headline_metric,
)

PREDS = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1]
TARGET = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1]


def confusion(preds: list[int], target: list[int]) -> tuple[int, int, int, int]:
    p, t = np.array(preds), np.array(target)
    return (
        int(((p == 1) & (t == 1)).sum()),
        int(((p == 0) & (t == 0)).sum()),
        int(((p == 1) & (t == 0)).sum()),
        int(((p == 0) & (t == 1)).sum()),
    )


def ref_mcc(preds: list[int], target: list[int]) -> float:
    tp, tn, fp, fn = confusion(preds, target)
    return (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))


def ref_f1(preds: list[int], target: list[int]) -> float:
    tp, _, fp, fn = confusion(preds, target)
    return 2 * tp / (2 * tp + fp + fn)


def ref_accuracy(preds: list[int], target: list[int]) -> float:
    return float(np.mean(np.array(preds) == np.array(target)))


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (scipy's rankdata 'average')."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        r[tied] = r[tied].mean()
    return r


def ref_pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def compute(
    task: str, preds: list[float] | list[int], target: list[float] | list[int], **kw: torch.Tensor
) -> dict[str, float]:
    spec = get_task(task)
    dtype = torch.float32 if spec.is_regression else torch.long
    metrics = build_task_metrics(task)
    metrics.update(torch.tensor(preds, dtype=dtype), torch.tensor(target, dtype=dtype), **kw)
    return {k: float(v) for k, v in metrics.compute().items()}


def test_every_task_builds_its_metrics_and_headline() -> None:
    for name, spec in TASKS.items():
        metrics = build_task_metrics(spec)
        baseline = set() if spec.is_regression else {MAJORITY}
        assert set(metrics.keys()) == set(spec.metric_names) | baseline
        assert headline_metric(name) == spec.headline_metric
        n = spec.num_labels if not spec.is_regression else 1
        preds = torch.rand(6) * 5 if spec.is_regression else torch.arange(6) % n
        target = torch.linspace(0, 5, 6) if spec.is_regression else (torch.arange(6) + 1) % n
        metrics.update(
            preds, target, group=torch.tensor([0, 0, 1, 1, 2, 2])
        )  # group: ignored unless used
        assert spec.headline_metric in metrics.compute()


def test_cola_mcc_parity() -> None:
    assert compute("cola", PREDS, TARGET)["matthews_corrcoef"] == pytest.approx(
        ref_mcc(PREDS, TARGET), abs=1e-6
    )


@pytest.mark.parametrize("constant", [0, 1])
def test_cola_mcc_is_zero_for_one_class_predictions_as_in_glue(constant: int) -> None:
    # scikit-learn (GLUE's scorer) gives 0; torchmetrics' own epsilon formula gives ~0.04.
    target = [1] * 345 + [0] * 155
    assert compute("cola", [constant] * 500, target)["matthews_corrcoef"] == 0.0
    assert compute("cola", [1, 0, 1], [1, 1, 1])["matthews_corrcoef"] == 0.0
    assert compute("cola", [1, 0, 1, 0], [1, 0, 1, 0])["matthews_corrcoef"] == pytest.approx(1.0)


def test_mrpc_accuracy_f1_and_average() -> None:
    values = compute("mrpc", PREDS, TARGET)
    acc, f1 = ref_accuracy(PREDS, TARGET), ref_f1(PREDS, TARGET)
    assert values["accuracy"] == pytest.approx(acc) and values["f1"] == pytest.approx(f1)
    assert values[AVERAGE_METRIC] == pytest.approx((acc + f1) / 2)


def test_multiclass_accuracy_parity() -> None:
    preds, target = [0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 2, 1, 1, 0]
    assert compute("cb", preds, target)["accuracy"] == pytest.approx(ref_accuracy(preds, target))


def test_stsb_pearson_spearman_parity() -> None:
    rng = np.random.default_rng(0)
    target = np.round(rng.uniform(0, 5, 40) * 5) / 5  # ties, as in STS-B's 0.2 grid
    preds = np.clip(target + rng.normal(0, 1, 40), 0, 5).round(1)
    values = compute("stsb", preds.tolist(), target.tolist())
    assert values["pearson"] == pytest.approx(ref_pearson(preds, target), abs=1e-5)
    spearman = ref_pearson(ranks(preds), ranks(target))
    assert values["spearman"] == pytest.approx(spearman, abs=1e-5)
    assert values[AVERAGE_METRIC] == pytest.approx((values["pearson"] + values["spearman"]) / 2)


def test_multirc_f1a_and_exact_match_by_hand() -> None:
    # Question 10: 3 options, all right. Question 11: 2 options, one wrong.
    # Question 12: 3 options, all right. Rows of one question may come in separate batches.
    preds = [1, 0, 1, 1, 1, 0, 0, 1]
    target = [1, 0, 1, 1, 0, 0, 0, 1]
    group = [10, 10, 10, 11, 11, 12, 12, 12]
    metrics = build_task_metrics("multirc")
    for part in (slice(0, 4), slice(4, 8)):
        metrics.update(
            torch.tensor(preds[part]), torch.tensor(target[part]), group=torch.tensor(group[part])
        )
    values = {k: float(v) for k, v in metrics.compute().items()}
    # F1a over all 8 options: tp=4, fp=1, fn=0.
    assert values["f1a"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 0))
    assert values["exact_match"] == pytest.approx(2 / 3)
    assert values[AVERAGE_METRIC] == pytest.approx((8 / 9 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="group"):
        GroupExactMatch().update(torch.tensor([1]), torch.tensor([1]))


def test_unparseable_classification_counts_wrong() -> None:
    target = [1, 0, 1, 1, 0, 0]
    preds = [1, 0, -1, 1, -1, 0]  # two generations named no label
    as_wrong = [1, 0, 0, 1, 1, 0]  # what they are scored as: the other label
    values = compute("mrpc", preds, target)
    assert values["accuracy"] == pytest.approx(4 / 6)
    assert values["f1"] == pytest.approx(ref_f1(as_wrong, target))
    assert compute("cola", preds, target)["matthews_corrcoef"] == pytest.approx(
        ref_mcc(as_wrong, target), abs=1e-6
    )
    assert compute("cb", [-1, 2, 7], [0, 2, 1])["accuracy"] == pytest.approx(1 / 3)


def test_unparseable_stsb_is_maximally_wrong() -> None:
    target = [0.4, 4.6, 2.0, 3.0, 1.2]
    preds = [0.6, float("nan"), 2.2, float("nan"), 1.0]
    substituted = np.array([0.6, 0.0, 2.2, 0.0, 1.0])  # farthest end of [0, 5] from the gold
    values = compute("stsb", preds, target)
    assert values["pearson"] == pytest.approx(ref_pearson(substituted, np.array(target)), abs=1e-5)
    assert np.isfinite(values["spearman"])


def test_prefixed_clone_and_forward() -> None:
    metrics = build_task_metrics("mrpc").clone(prefix="val/")
    batch = metrics(torch.tensor([1, 0]), torch.tensor([1, 1]))
    assert set(batch) == {"val/accuracy", "val/f1", f"val/{AVERAGE_METRIC}", f"val/{MAJORITY}"}
    metrics.update(torch.tensor([1, 1]), torch.tensor([1, 1]))
    assert float(metrics.compute()["val/accuracy"]) == pytest.approx(3 / 4)
    metrics.reset()
    metrics.update(torch.tensor([0]), torch.tensor([0]))
    assert float(metrics.compute()["val/accuracy"]) == 1.0


def test_math_exact_match() -> None:
    metric = MathExactMatch()
    metric.update(
        ["1,000", None, "\\frac97", "5.00", "12"], ["1000", "3", "\\dfrac{9}{7}", "5", "13"]
    )
    assert float(metric.compute()) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="predictions"):
        metric.update(["1"], [])


@pytest.mark.parametrize(
    "task,target,expected",
    [
        ("sst2", [1, 1, 0, 1], 0.75),  # the majority's share
        ("rte", [0, 1, 1, 0], 0.5),  # a tie goes to label 0: still half right
        ("cola", [1, 1, 0, 1], 0.0),  # a constant has no correlation (GLUE's MCC: 0)
        ("mrpc", [1, 1, 0, 1], (0.75 + 6 / 7) / 2),  # accuracy and F1 of "equivalent"
        ("mnli", [0, 1, 2, 2], 0.5),
    ],
)
def test_majority_baseline_is_the_score_of_the_most_frequent_label(
    task: str, target: list[int], expected: float
) -> None:
    metrics = build_task_metrics(task)
    labels = torch.tensor(target)
    metrics.update(labels, labels)  # perfect predictions: the baseline ignores them
    assert float(metrics.compute()[MAJORITY]) == pytest.approx(expected)
    assert MAJORITY not in build_task_metrics("stsb")


def test_majority_baseline_scores_multirc_per_question() -> None:
    metrics = build_task_metrics("multirc")
    target = torch.tensor([0, 0, 1, 0, 0, 0])  # question 1 has a true option: all-0 misses it
    metrics.update(target, target, group=torch.tensor([0, 0, 1, 1, 2, 2]))
    # all-"false": F1a 0 (no positive predicted), exact match 2 of 3 questions.
    assert float(metrics.compute()[MAJORITY]) == pytest.approx((0.0 + 2 / 3) / 2)


def test_true_precision_casts_of_float_metric_states_are_undone() -> None:
    """``*-true`` precisions cast the whole module: Pearson's running means in bf16 would
    score STS-B wrong. Count states (accuracy's) stay integers."""
    from torch import nn
    from torchmetrics import PearsonCorrCoef
    from torchmetrics.classification import BinaryAccuracy

    from hadamard_lit.modules.evaluation import keep_float_metric_states_float32

    metrics = nn.ModuleDict({"pearson": PearsonCorrCoef(), "accuracy": BinaryAccuracy()})
    metrics.to(dtype=torch.bfloat16)
    assert metrics["pearson"].mean_x.dtype == torch.bfloat16
    keep_float_metric_states_float32(metrics)
    assert metrics["pearson"].mean_x.dtype == torch.float32
    assert metrics["accuracy"].tp.dtype == torch.int64
    metrics["pearson"].reset()
    assert metrics["pearson"].mean_x.dtype == torch.float32
