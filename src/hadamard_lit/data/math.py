"""``MathDataModule``: supervised fine-tuning on math solutions, exact match by generation.

``dataset`` names the evaluation set and, by default, what trains with it (METHODS.md
leaves the math training sets open; these are the usual pairings):

========== ============================== =====================================
dataset    trains on (default)            evaluates on
========== ============================== =====================================
gsm8k      GSM8K train (7,473)            GSM8K test (1,319)
metamathqa MetaMathQA (395k)              GSM8K test (1,319)
svamp      GSM8K train                    SVAMP, all 1,000 problems
math       MetaMathQA (the MetaMath setup) MATH test (5,000)
========== ============================== =====================================

``train_set`` overrides the training set (``gsm8k``, ``metamathqa``, or ``math``: MATH's
own 7,500-problem train split). There is no separate development set: validation and
test both serve the evaluation set (use ``max_eval_samples`` or Lightning's
``limit_val_batches`` to keep per-epoch generation short).

Hub datasets: ``openai/gsm8k`` (``main``), ``meta-math/MetaMathQA``, ``ChilleD/SVAMP``
(its ``train+test``: the 1,000 problems), ``hendrycks/competition_math``. Local folders:
``math/<name>/{train,test}.jsonl`` with the same columns (``../shared/data`` has GSM8K,
SVAMP and MATH test; not MetaMathQA or MATH train).

The prompt is :data:`DEFAULT_PROMPT_TEMPLATE` (Alpaca's, as MetaMath uses it), zero-shot.
Training batches: ``input_ids``, ``attention_mask``, ``labels`` = prompt, then solution
and EOS, with -100 on the prompt (loss on the solution only) and on padding. Evaluation
batches: left-padded prompt-only ``input_ids``, ``attention_mask`` and ``answers`` (the
gold final answers as strings, as the extraction functions give them; exact match
normalises both sides with :func:`normalize_answer`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hadamard_lit.data.answers import (
    extract_boxed_answer,
    extract_gsm8k_answer,
    extract_last_number,
    normalize_answer,
    normalize_math_answer,
    normalize_number,
)
from hadamard_lit.data.base import ROW_ID, TokenizedDataModule, rows_of
from hadamard_lit.data.collate import IGNORE_INDEX
from hadamard_lit.data.sources import check_columns

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "MATH_SOURCES",
    "MathDataModule",
    "MathSource",
    "extract_boxed_answer",
    "extract_gsm8k_answer",
    "extract_last_number",
    "normalize_answer",
    "normalize_math_answer",
    "normalize_number",
]

log = logging.getLogger(__name__)

MathDataset = Literal["gsm8k", "svamp", "math", "metamathqa"]
TrainSet = Literal["gsm8k", "metamathqa", "math"]
Row = Mapping[str, Any]

#: Alpaca's zero-shot instruction template; ``{question}`` is replaced by the problem.
DEFAULT_PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{question}\n\n### Response:\n"
)

# GSM8K's "<<48/2=24>>" calculator annotations are for the original paper's calculator
# tool; a model without one should not learn to write them.
_CALCULATOR = re.compile(r"<<[^<>]*>>")


@dataclass(frozen=True)
class MathSource:
    """One math data set: where it is and how to read a problem, a solution, an answer.

    Attributes:
        name: data set name (also the local folder ``math/<name>``).
        hub_path: Hugging Face Hub dataset.
        hub_config: its configuration (``None``: the default).
        hub_splits: Hub split for the ``train`` and ``test`` roles (absent: not available).
        columns: columns every row must have.
        question: the problem text of a row.
        solution: the training target of a row (``None``: evaluation-only set).
        answer: the gold final answer of a row, normalised (``None``: training-only set).
    """

    name: str
    hub_path: str
    hub_config: str | None
    hub_splits: tuple[tuple[str, str], ...]
    columns: tuple[str, ...]
    question: Callable[[Row], str]
    solution: Callable[[Row], str] | None = None
    answer: Callable[[Row], str | None] | None = None


def _svamp_question(row: Row) -> str:
    body = str(row["Body"]).strip()
    # Some bodies lack their final full stop ("... on each pack"); the question follows.
    separator = " " if body.endswith((".", "?", "!", ",")) else ". "
    return f"{body}{separator}{str(row['Question']).strip()}"


def _gsm8k_answer(row: Row) -> str | None:
    return extract_gsm8k_answer(str(row["answer"]))


def _math_answer(row: Row) -> str | None:
    return extract_boxed_answer(str(row["solution"]))


def _svamp_answer(row: Row) -> str | None:
    return normalize_number(str(row["Answer"]))


#: The math data sets by name.
MATH_SOURCES: dict[str, MathSource] = {
    "gsm8k": MathSource(
        name="gsm8k",
        hub_path="openai/gsm8k",
        hub_config="main",
        hub_splits=(("train", "train"), ("test", "test")),
        columns=("question", "answer"),
        question=lambda row: str(row["question"]),
        solution=lambda row: _CALCULATOR.sub("", str(row["answer"])),
        answer=_gsm8k_answer,
    ),
    "metamathqa": MathSource(
        name="metamathqa",
        hub_path="meta-math/MetaMathQA",
        hub_config=None,
        hub_splits=(("train", "train"),),
        columns=("query", "response"),
        question=lambda row: str(row["query"]),
        solution=lambda row: str(row["response"]),
    ),
    "svamp": MathSource(
        name="svamp",
        hub_path="ChilleD/SVAMP",
        hub_config=None,
        hub_splits=(("test", "train+test"),),
        columns=("Body", "Question", "Answer"),
        question=_svamp_question,
        answer=_svamp_answer,
    ),
    "math": MathSource(
        name="math",
        hub_path="hendrycks/competition_math",
        hub_config=None,
        hub_splits=(("train", "train"), ("test", "test")),
        columns=("problem", "solution"),
        question=lambda row: str(row["problem"]),
        solution=lambda row: str(row["solution"]),
        answer=_math_answer,
    ),
}

#: ``dataset`` -> (default training set, evaluation set).
PAIRINGS: dict[str, tuple[str, str]] = {
    "gsm8k": ("gsm8k", "gsm8k"),
    "metamathqa": ("metamathqa", "gsm8k"),
    "svamp": ("gsm8k", "svamp"),
    "math": ("metamathqa", "math"),
}


class MathDataModule(TokenizedDataModule):
    """Math word problems for a decoder LM: SFT batches and generation batches (prompts
    left-padded, so the model continues each right where it ends).

    Args:
        dataset: the run's data set (see the module docstring for what trains and what
            evaluates); :class:`~hadamard_lit.modules.CausalLMModule` reads it to choose
            the answer format.
        tokenizer: hub name, folder, ``package:<python package>``, or a loaded tokenizer;
            one without a pad token gets its EOS token as pad.
        train_set: override the training set (``None``: the dataset's default).
        prompt_template: the prompt, with ``{question}`` where the problem goes.
        max_length: training sequences (prompt + solution + EOS) and evaluation prompts
            are cut to this many tokens; a training row whose prompt alone fills it is
            dropped (it would have no token to learn).
        batch_size: training batch size (smaller than the NLU default: long sequences).
        **options: :class:`~hadamard_lit.data.base.DataOptions`: ``data_dir`` (``None``
            reads the Hub; else a folder laid out as ``math/<name>/<split>.jsonl``),
            ``fallback_data_dir``, ``eval_batch_size``,
            ``num_workers``, ``seed``, ``max_train_samples``, ``max_eval_samples``.
    """

    eval_padding_side = "left"

    def __init__(
        self,
        dataset: MathDataset,
        tokenizer: str | PreTrainedTokenizerBase,
        train_set: TrainSet | None = None,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        max_length: int = 512,
        batch_size: int = 8,
        **options: Any,
    ) -> None:
        super().__init__(tokenizer, batch_size=batch_size, **options)
        if dataset not in PAIRINGS:
            raise ValueError(
                f"Unknown math dataset {dataset!r}; valid: {', '.join(sorted(PAIRINGS))}"
            )
        if train_set is not None and (
            train_set not in MATH_SOURCES or MATH_SOURCES[train_set].solution is None
        ):
            raise ValueError(
                f"train_set {train_set!r} is not a training set; valid: gsm8k, metamathqa, math"
            )
        if "{question}" not in prompt_template:
            raise ValueError("prompt_template must contain '{question}'")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.dataset: str = dataset
        default_train, evaluation = PAIRINGS[dataset]
        self.train_source = MATH_SOURCES[train_set or default_train]
        self.eval_source = MATH_SOURCES[evaluation]
        self.prompt_template = prompt_template
        self.max_length = max_length
        self.save_hyperparameters(ignore=["tokenizer"])
        self.hparams["tokenizer"] = self.tokenizer_name

    def configure_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Llama tokenizers often have no pad token: pad with EOS (masked out anyway)."""
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    f"Tokenizer {tokenizer.name_or_path!r} has neither a pad nor an EOS token"
                )
            tokenizer.pad_token = tokenizer.eos_token

    def raw_split(self, source: MathSource, role: Literal["train", "test"]) -> Dataset:
        """The ``train`` or ``test`` rows of ``source``, columns checked."""
        splits = dict(source.hub_splits)
        what = f"math dataset {source.name!r}, {role} split"
        if role not in splits:
            raise ValueError(f"{what}: {source.name} has no {role} split")
        data, where = self.load_split(
            (source.hub_path, source.hub_config, splits[role]),
            f"math/{source.name}/{role}.jsonl",
            what,
        )
        check_columns(data, source.columns, f"math dataset {source.name!r}", where)
        return data

    # -- Lightning hooks -----------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download the Hub splits once, on one process."""
        if self.data_dir is None:
            self.raw_split(self.train_source, "train")
            self.raw_split(self.eval_source, "test")

    def setup(self, stage: str | None = None) -> None:
        """Tokenise the training set (``fit``/``None``) and the evaluation set (always)."""
        if stage in (None, "fit") and "train" not in self.datasets:
            self.datasets["train"] = self.encode_train()
        if "test" not in self.datasets:
            # One evaluation set serves validation, test and predict (there is no dev set).
            evaluation = self.encode_eval()
            self.datasets.update(test=evaluation, validation=evaluation, predict=evaluation)

    def encode_train(self) -> Dataset:
        """The training set as prompt + solution token ids with the prompt masked.

        Warns when solutions are cut at ``max_length``: they lose their final answer and
        EOS, so the model would learn solutions that never end in an answer.
        """
        encoded = self._encode(self.train_source, "train", encode_math_train,
                               "training problems dropped: their prompt alone fills max_length={}")  # fmt: skip
        if FULL_LENGTH not in encoded.column_names:
            return encoded
        lengths = encoded[FULL_LENGTH]
        cut = sum(1 for n in lengths if n > self.max_length)
        if cut:
            log.warning(
                "%d of %d training solutions are cut at max_length=%d and lose their final "
                "answer and EOS (the longest prompt + solution is %d tokens): raise max_length",
                cut, len(lengths), self.max_length, max(lengths),
            )  # fmt: skip
        return encoded.remove_columns(FULL_LENGTH)

    def encode_eval(self) -> Dataset:
        """The evaluation set as left-truncated prompts and gold answers."""
        return self._encode(self.eval_source, "test", encode_math_eval,
                            "evaluation problems dropped: no gold answer found")  # fmt: skip

    def _encode(
        self, source: MathSource, role: Literal["train", "test"], function: Any, dropped: str
    ) -> Dataset:
        data = self.limit(self.raw_split(source, role), train=role == "train")
        encoding = MathEncoding(source, self.prompt_template, self.max_length)
        encoded = self.tokenize(
            data, function, f"Tokenizing {source.name} {role}", encoding=encoding
        )
        if len(encoded) < len(data):
            log.warning(
                "%d of %d %s", len(data) - len(encoded), len(data), dropped.format(self.max_length)
            )
        return encoded


#: A column of the encoded training set while it is built: each row's uncut length.
FULL_LENGTH = "full_length"


@dataclass(frozen=True)
class MathEncoding:
    """How rows of one math source become token ids: its prompt template, the length cut."""

    source: MathSource
    template: str
    max_length: int

    def prompt_ids(
        self, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[list[int]]:
        prompts = [self.template.replace("{question}", self.source.question(row)) for row in rows]
        ids: list[list[int]] = tokenizer(prompts)["input_ids"]
        eos = tokenizer.eos_token_id
        # Tokenizers that end every text with EOS (T5) would tell the model to stop there.
        return [p[:-1] if p and p[-1] == eos else p for p in ids]


def encode_math_train(
    batch: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, encoding: MathEncoding
) -> dict[str, list[Any]]:
    """Prompt + solution + EOS, labels -100 on the prompt (``datasets.map``, batched).

    Prompt and solution are tokenised apart and concatenated, so the mask falls exactly
    on the prompt's tokens. Rows whose prompt fills ``max_length`` are dropped.
    """
    source, max_length = encoding.source, encoding.max_length
    assert source.solution is not None
    rows = rows_of(batch)
    prompts = encoding.prompt_ids(tokenizer, rows)
    solutions = tokenizer([source.solution(row) for row in rows], add_special_tokens=False)[
        "input_ids"
    ]
    eos = [tokenizer.eos_token_id]
    out: dict[str, list[Any]] = {
        "input_ids": [], "attention_mask": [], "labels": [], "row_id": [], FULL_LENGTH: [],
    }  # fmt: skip
    row_ids = [row[ROW_ID] for row in rows]
    for prompt, solution, row_id in zip(prompts, solutions, row_ids, strict=True):
        if len(prompt) >= max_length:
            continue
        ids = (prompt + solution + eos)[:max_length]
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(([IGNORE_INDEX] * len(prompt) + solution + eos)[:max_length])
        out["row_id"].append(row_id)
        out[FULL_LENGTH].append(len(prompt) + len(solution) + 1)  # counted, then removed
    return out


def encode_math_eval(
    batch: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, encoding: MathEncoding
) -> dict[str, list[Any]]:
    """Prompt ids (the last ``max_length`` tokens: the instruction's end stays) and answers."""
    source, max_length = encoding.source, encoding.max_length
    assert source.answer is not None
    rows = rows_of(batch)
    out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "answers": [], "row_id": []}
    for row, prompt in zip(rows, encoding.prompt_ids(tokenizer, rows), strict=True):
        answer = source.answer(row)
        if answer is None:
            continue
        ids = prompt[-max_length:]
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["answers"].append(answer)
        out["row_id"].append(row[ROW_ID])
    return out
