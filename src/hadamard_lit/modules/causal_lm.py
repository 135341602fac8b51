"""Math reasoning with a decoder LM (Llama family): SFT on solutions, exact match by generation.

Training: next-token loss on the solution only (the datamodule masks the prompt with
-100). Evaluation: greedy generation from the left-padded prompt, the final answer pulled
out of the generated text (GSM8K's ``#### 42``, MATH's ``\\boxed{}``, else the last
number), compared with the reference after number normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from lightning.pytorch import LightningDataModule
from torchmetrics import MetricCollection
from transformers import AutoModelForCausalLM

from hadamard_lit.data.batch import Batch
from hadamard_lit.data.eval_sharding import scored_rows
from hadamard_lit.modules.base import AdapterModule, Stage

AnswerFormat = Literal["auto", "gsm8k", "boxed", "last_number"]


def answer_extractor(
    answer_format: AnswerFormat, dataset: str | None
) -> Callable[[str], str | None]:
    """The function that reads the final answer out of a generated solution.

    ``auto``: ``boxed`` for MATH (the last ``\\boxed{}``, falling back on ``The answer is:``,
    MetaMathQA's ending), else ``gsm8k`` (``#### answer``, falling back on the last number,
    which is also what SVAMP and MetaMathQA-trained models write).
    """
    from hadamard_lit.data import answers as math_data

    if answer_format == "auto":
        answer_format = "boxed" if dataset == "math" else "gsm8k"
    if answer_format == "boxed":

        def boxed_then_stated(text: str) -> str | None:
            # MetaMathQA (the MATH setup's training set) often ends "The answer is: X"
            # without a box; its own evaluation reads that line.
            found = math_data.extract_boxed_answer(text)
            return found if found is not None else math_data.extract_stated_answer(text)

        return boxed_then_stated
    if answer_format == "last_number":
        return math_data.extract_last_number

    def gsm8k_then_last_number(text: str) -> str | None:
        found = math_data.extract_gsm8k_answer(text)
        return found if found is not None else math_data.extract_last_number(text)

    return gsm8k_then_last_number


class CausalLMModule(AdapterModule):
    """A decoder LM with an adapter, fine-tuned on solutions and scored by exact match.

    Args:
        max_new_tokens: generation budget per problem at evaluation.
        answer_format: how to read the answer from a generation (see
            :func:`answer_extractor`); ``auto`` picks it from the data set.
        **kwargs: :class:`AdapterModule` arguments; ``task`` is the math data set name
            (``gsm8k``, ``svamp``, ``math``), taken from the datamodule when ``None``.
    """

    auto_model_class = AutoModelForCausalLM
    model_input_names = ("input_ids", "attention_mask", "labels")

    def __init__(
        self, max_new_tokens: int = 256, answer_format: AnswerFormat = "auto", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        self.answer_format: AnswerFormat = answer_format
        # Decoder LMs often ship without a pad token; batching and generation need one.
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def task_from_datamodule(self, datamodule: LightningDataModule) -> str | None:
        return getattr(datamodule, "dataset", None)

    def build_metrics(self) -> MetricCollection | None:
        from hadamard_lit.metrics import MathExactMatch

        return MetricCollection({"exact_match": MathExactMatch()})

    def headline_metric(self) -> str | None:
        return "exact_match"

    def generate_answers(self, batch: Batch) -> list[str]:
        """Greedy continuations of the (left-padded) prompts, decoded, prompt removed."""
        prompt = batch["input_ids"]
        generated = self.model.generate(
            input_ids=prompt,
            attention_mask=batch["attention_mask"],
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.batch_decode(
            generated[:, prompt.shape[1] :], skip_special_tokens=True
        )

    def extract(self, texts: list[str]) -> list[str | None]:
        """The final answer of each generated solution (``None``: none found, wrong)."""
        extract = answer_extractor(self.answer_format, self.task)
        return [extract(text) for text in texts]

    def evaluation_step(self, batch: Batch, stage: Stage) -> None:
        """Generate, extract the answers and score them against ``batch["answers"]``."""
        predictions, answers = self.extract(self.generate_answers(batch)), list(batch["answers"])
        keep = scored_rows(batch)
        if keep is not None:  # padding copies of rows another process scores
            predictions = [p for p, k in zip(predictions, keep.tolist(), strict=True) if k]
            answers = [a for a, k in zip(answers, keep.tolist(), strict=True) if k]
        if answers:
            self.stage_metrics(stage).update(predictions, answers)

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        """Each problem's id, generated solution and the answer read from it."""
        texts = self.generate_answers(batch)
        return {
            "row_id": batch["row_id"].tolist(),
            "prediction": self.extract(texts),
            "text": texts,
        }
