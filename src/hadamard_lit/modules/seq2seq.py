"""Text-to-text NLU with an encoder-decoder (T5): train on target ids, evaluate by generation.

Every task is generation: the model writes the label's verbaliser (``positive``, ``0.4``
for STS-B) and ``task_spec.parse_prediction`` reads it back. A generation that names no
label counts as wrong (-1, or NaN for the STS-B regression), never as a guess.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import MetricCollection
from transformers import AutoModelForSeq2SeqLM

from hadamard_lit.data.batch import Batch
from hadamard_lit.data.collate import IGNORE_INDEX
from hadamard_lit.data.eval_sharding import scored_rows
from hadamard_lit.modules.base import AdapterModule, Stage, _batch_size
from hadamard_lit.modules.nlu import NLUTaskMixin


class Seq2SeqModule(NLUTaskMixin, AdapterModule):
    """An encoder-decoder (T5) with an adapter, on text-to-text NLU tasks.

    Args:
        max_new_tokens: generation length at evaluation (verbalisers are a few tokens).
        **kwargs: :class:`AdapterModule` arguments (backbone, adapter, task, optimiser).
    """

    auto_model_class = AutoModelForSeq2SeqLM
    model_input_names = ("input_ids", "attention_mask", "labels")

    def __init__(self, max_new_tokens: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens

    def build_metrics(self) -> MetricCollection | None:
        return self.task_metrics()

    def generate_text(self, batch: Batch) -> list[str]:
        """Greedy generations for the batch's inputs, decoded."""
        generated = self.model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
        )
        return self.tokenizer.batch_decode(generated, skip_special_tokens=True)

    def predictions(self, texts: list[str], device: torch.device) -> Tensor:
        """Parsed labels (unparseable: -1, NaN for regression) as a tensor."""
        spec = self.task_spec
        parsed = [spec.parse_prediction(text) for text in texts]
        if spec.is_regression:
            values = [float("nan") if p is None else float(p) for p in parsed]
            return torch.tensor(values, dtype=torch.float32, device=device)
        return torch.tensor(
            [-1 if p is None else int(p) for p in parsed], dtype=torch.long, device=device
        )

    def evaluation_step(self, batch: Batch, stage: Stage) -> None:
        """Loss on the targets, then greedy generation scored by the task's metrics."""
        inputs = self.model_inputs(batch)
        keep = scored_rows(batch)
        if keep is not None:  # padding copies (several processes) add nothing to the loss
            inputs["labels"] = inputs["labels"].masked_fill(~keep[:, None], IGNORE_INDEX)
        rows = _batch_size(batch) if keep is None else int(keep.sum())
        self.log_eval_loss(stage, self.model(**inputs).loss, rows)
        preds = self.predictions(self.generate_text(batch), batch["target"].device)
        self.update_metrics(stage, preds, batch)

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        """Each row's id, generated text, and the label read from it (``None``: none)."""
        texts = self.generate_text(batch)
        labels = [self.task_spec.parse_prediction(t) for t in texts]
        return {
            "row_id": batch["row_id"].tolist(),
            "prediction": [None if p is None else self.task_spec.label_text(p) for p in labels],
            "label_id": labels,
            "text": texts,
        }
