"""Sequence classification with an encoder (BERT, RoBERTa, MiniLM) and a task head.

The head (``classifier``) is new and trains in full next to the adapter; its size comes
from the task (``num_labels``; 1 is the STS-B regression, trained with MSE).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from transformers import AutoModelForSequenceClassification

from hadamard_lit.data.batch import Batch
from hadamard_lit.data.eval_sharding import scored_rows
from hadamard_lit.modules.base import AdapterModule, Stage, _batch_size
from hadamard_lit.modules.nlu import NLUTaskMixin


class SequenceClassificationModule(NLUTaskMixin, AdapterModule):
    """An encoder with a classification (or regression) head and an adapter.

    Args:
        num_labels: head size; ``None`` takes it from the task (the usual case).
        **kwargs: :class:`AdapterModule` arguments (backbone, adapter, task, optimiser).
    """

    auto_model_class = AutoModelForSequenceClassification

    def __init__(self, num_labels: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_labels = num_labels

    def build_model(self) -> nn.Module:
        """The encoder with a fresh head sized for the task, labelled with its label names."""
        num_labels = self.num_labels
        overrides: dict[str, Any] = {}
        if self.task is not None:
            spec = self.task_spec
            if num_labels is not None and num_labels != spec.num_labels:
                raise ValueError(
                    f"num_labels={num_labels} but task {spec.name!r} has {spec.num_labels}"
                )
            num_labels = spec.num_labels
            names = list(getattr(spec, "label_names", None) or [])
            if len(names) == num_labels and not spec.is_regression:
                overrides["id2label"] = dict(enumerate(names))
                overrides["label2id"] = {name: i for i, name in enumerate(names)}
        if num_labels is None:
            raise ValueError(
                "SequenceClassificationModule needs the head size: pass task=... (or num_labels), "
                "or fit/validate with an NLUDataModule, which names the task"
            )
        return self.load_backbone(num_labels=num_labels, **overrides)

    def build_metrics(self) -> MetricCollection | None:
        return self.task_metrics()

    def predictions(self, logits: Tensor) -> Tensor:
        """Class ids, or the regression value for a one-output head."""
        return logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(dim=-1)

    def evaluation_step(self, batch: Batch, stage: Stage) -> None:
        """Loss and the task's metrics on one batch."""
        outputs = self.model(**self.model_inputs(batch))
        keep = scored_rows(batch)
        if keep is None:
            self.log_eval_loss(stage, outputs.loss, _batch_size(batch))
        else:  # the loss of the scored rows only: the others are padding copies
            logits, labels = outputs.logits[keep], batch["labels"][keep]
            if logits.shape[-1] == 1:  # transformers' regression loss
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = F.cross_entropy(logits, labels)
            self.log_eval_loss(stage, loss, int(keep.sum()))
        self.update_metrics(stage, self.predictions(outputs.logits), batch)

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        """Each row's id, predicted label (its name; the score for STS-B) and label id."""
        inputs = {k: v for k, v in self.model_inputs(batch).items() if k != "labels"}
        predictions = self.predictions(self.model(**inputs).logits).tolist()
        return {
            "row_id": batch["row_id"].tolist(),
            "prediction": [self.task_spec.label_text(p) for p in predictions],
            "label_id": predictions,
        }
