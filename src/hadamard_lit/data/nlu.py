"""``NLUDataModule``: the 17 NLU tasks, text-to-text (T5) or classification (encoders).

Split protocol ``paper`` (Compacter, ATTEMPT, DePT and the AdaDHP scripts; METHODS.md):
a task whose full training set has under 10,000 rows has its validation set halved at
random into a new validation set and a test set (RTE: 277 -> 138 + 139); a larger one
holds out 1,000 random training rows as validation and uses the validation set as test.
Which case applies is decided by the size of the task's full Hub training split
(``TaskSpec.train_size``), so a truncated local copy splits as the real data would.
``plain``: train and validation as given, test = validation. The Hub's test splits have
no labels and are never used.

Batches (padded per batch, see :mod:`hadamard_lit.data.collate`):

- ``text_to_text``: ``input_ids``, ``attention_mask``, ``labels`` (target token ids, -100
  on padding), ``target`` (the label: ``long``, ``float`` for STS-B), ``group``;
- ``classification``: ``input_ids``, ``attention_mask``, ``token_type_ids`` when the
  tokenizer makes them, ``labels`` (``long``, ``float`` for STS-B), ``group``.

``group`` is MultiRC's question id (for F1a / exact match per question), -1 elsewhere.
"""

from __future__ import annotations

from typing import Any, Literal

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hadamard_lit.data.base import ROW_ID, TokenizedDataModule, rows_of
from hadamard_lit.data.sources import check_columns
from hadamard_lit.data.tasks import TaskSpec, get_task

Shape = Literal["text_to_text", "classification"]
SplitProtocol = Literal["paper", "plain"]
SplitName = Literal["train", "validation", "test", "predict"]

#: The paper protocol's threshold and held-out size (METHODS.md, "Split protocol").
LARGE_TRAIN_SET = 10_000
HELD_OUT_ROWS = 1_000

_STAGE_SPLITS: dict[str | None, tuple[SplitName, ...]] = {
    "fit": ("train", "validation"),
    "validate": ("validation",),
    "test": ("test",),
    "predict": ("predict",),
}


class NLUDataModule(TokenizedDataModule):
    """One NLU task, tokenised for a T5 text-to-text model or an encoder classifier.

    Args:
        task: a task name (:func:`hadamard_lit.data.tasks.task_names`).
        tokenizer: hub name, local folder, ``package:<python package>``, or a loaded
            tokenizer (LightningCLI links the model's).
        shape: ``text_to_text`` (prompt in, verbaliser out) or ``classification``.
        split_protocol: ``paper`` or ``plain`` (see the module docstring).
        max_length: input truncation length in tokens.
        max_target_length: target truncation length (every verbaliser fits in 8 T5 tokens).
        predict_split: what ``predict`` reads: ``None``, the protocol's test split; else a split
            of the task's data as it is, labels optional (``test``: GLUE's unlabelled test
            split, ``-1`` labels).
        **options: :class:`~hadamard_lit.data.base.DataOptions`: ``data_dir`` (``None``
            reads the Hub, ``TaskSpec.hub_path``/``hub_config``; a folder reads
            ``<data_dir>/<local_subdir>/<split>.jsonl`` in the Hub's schema;
            ``package:sst2_sample`` is the small SST-2 sample shipped with hadamard_lit),
            ``fallback_data_dir``, ``batch_size``, ``eval_batch_size``, ``num_workers``,
            ``seed`` (also of the protocol's random halving / hold-out),
            ``max_train_samples``, ``max_eval_samples``.

    Raises:
        ValueError: an unknown task, shape or protocol, or a non-positive size.
        FileNotFoundError: ``data_dir`` is not a folder.
    """

    def __init__(
        self,
        task: str,
        tokenizer: str | PreTrainedTokenizerBase,
        shape: Shape = "text_to_text",
        split_protocol: SplitProtocol = "paper",
        max_length: int = 128,
        max_target_length: int = 8,
        predict_split: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(tokenizer, **options)
        self.task_spec: TaskSpec = get_task(task)
        if shape not in ("text_to_text", "classification"):
            raise ValueError(f"shape must be 'text_to_text' or 'classification', got {shape!r}")
        if split_protocol not in ("paper", "plain"):
            raise ValueError(f"split_protocol must be 'paper' or 'plain', got {split_protocol!r}")
        if max_length < 1 or max_target_length < 1:
            raise ValueError(
                f"max_length and max_target_length must be >= 1, got {max_length}, {max_target_length}"
            )
        self.shape: Shape = shape
        self.split_protocol: SplitProtocol = split_protocol
        self.max_length = max_length
        self.max_target_length = max_target_length
        self.predict_split = predict_split
        self.save_hyperparameters(ignore=["tokenizer"])
        self.hparams["tokenizer"] = self.tokenizer_name
        self._raw: dict[tuple[str, bool], tuple[Dataset, str]] = {}

    @property
    def num_labels(self) -> int:
        """Classes of the task (1 for the STS-B regression)."""
        return self.task_spec.num_labels

    # -- raw splits and the split protocol -----------------------------------------------

    def raw_split(self, split: str, labelled: bool = True) -> tuple[Dataset, str]:
        """A Hub split (``train``, ``validation``, ...) checked, with its source description.

        Args:
            split: the split's name on the Hub (or its file's, ``<split>.jsonl``).
            labelled: check that every label is one of the task's (unlabelled rows, ``-1``,
                are only for ``predict``).

        Raises:
            FileNotFoundError: a local file is missing (the message names task and path).
            ValueError: a column is missing or a label is out of range.
        """
        if (split, labelled) not in self._raw:
            spec = self.task_spec
            data, source = self.load_split(
                (spec.hub_path, spec.hub_config, split),
                f"{spec.local_subdir}/{split}.jsonl",
                f"task {spec.name!r}, {split} split",
            )
            columns = spec.required_columns if labelled else spec.text_columns
            check_columns(data, columns, f"task {spec.name!r}", source)
            if labelled:
                self._check_labels(data, source)
            self._raw[(split, labelled)] = (data, source)
        return self._raw[(split, labelled)]

    def _check_labels(self, data: Dataset, source: str) -> None:
        spec = self.task_spec
        for raw in data.unique(spec.label_column):
            try:
                valid = spec.label_is_valid(spec.label_id(raw))
            except (TypeError, ValueError):
                valid = False
            if not valid:
                expected = (
                    f"a score in {list(spec.label_range)}"
                    if spec.is_regression
                    else (f"a label in [0, {spec.num_labels})")
                )
                raise ValueError(
                    f"task {spec.name!r}: {source} has label {raw!r} in column {spec.label_column!r}; "
                    f"expected {expected}. (-1 marks an unlabelled test split; the split "
                    "protocol never trains or evaluates on one.)"
                )

    def protocol_split(self, name: SplitName) -> tuple[Dataset, str]:
        """The rows of ``train``, ``validation`` or ``test`` under the split protocol
        (``predict``: ``predict_split`` as it is, or the protocol's test split)."""
        spec = self.task_spec
        if name == "predict":
            if self.predict_split is not None:
                return self.raw_split(self.predict_split, labelled=False)
            name = "test"
        evaluation = spec.validation_split
        if self.split_protocol == "plain":
            return self.raw_split("train" if name == "train" else evaluation)
        if spec.train_size >= LARGE_TRAIN_SET:
            if name == "test":
                return self.raw_split(evaluation)
            train, source = self.raw_split("train")
            if len(train) <= HELD_OUT_ROWS:
                raise ValueError(
                    f"task {spec.name!r}: the paper protocol holds out {HELD_OUT_ROWS} training rows "
                    f"as validation, but {source} has only {len(train)}"
                )
            parts = train.train_test_split(test_size=HELD_OUT_ROWS, shuffle=True, seed=self.seed)
            if name == "train":
                return parts["train"], source
            return parts["test"], f"{source} ({HELD_OUT_ROWS} held-out rows)"
        if name == "train":
            return self.raw_split("train")
        data, source = self.raw_split(evaluation)
        if len(data) < 2:
            raise ValueError(f"task {spec.name!r}: cannot halve {source}, it has {len(data)} rows")
        halves = data.train_test_split(train_size=len(data) // 2, shuffle=True, seed=self.seed)
        if name == "validation":
            return halves["train"], f"{source} (first half)"
        return halves["test"], f"{source} (second half)"

    # -- Lightning hooks -----------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download the Hub splits once, on one process (``setup`` then reads the cache)."""
        if self.data_dir is None:
            for name in ("train", "validation", "test"):
                self.protocol_split(name)

    def setup(self, stage: str | None = None) -> None:
        """Tokenise the splits ``stage`` needs (all three for ``None``); each only once."""
        for name in _STAGE_SPLITS.get(stage, ("train", "validation", "test")):
            if name not in self.datasets:
                self.datasets[name] = self.encode(name)

    def encode(self, name: SplitName) -> Dataset:
        """Split ``name`` tokenised (``datasets.map``, cached on disk by ``datasets``)."""
        data, _ = self.protocol_split(name)
        data = self.limit(data, train=name == "train")
        desc = f"Tokenizing {self.task_spec.name} {name}"
        # Unlabelled rows (predict) carry no target: nothing to learn or to score.
        labelled = name != "predict" or self.predict_split is None
        if self.shape == "text_to_text":
            return self.tokenize(data, encode_text_to_text, desc, spec=self.task_spec,
                                 max_length=self.max_length, labelled=labelled,
                                 max_target_length=self.max_target_length)  # fmt: skip
        return self.tokenize(data, encode_classification, desc, spec=self.task_spec,
                             max_length=self.max_length, labelled=labelled)  # fmt: skip


def encode_text_to_text(
    batch: dict[str, list[Any]],
    tokenizer: PreTrainedTokenizerBase,
    spec: TaskSpec,
    max_length: int,
    max_target_length: int,
    labelled: bool = True,
) -> dict[str, list[Any]]:
    """A batch of raw rows as T5 prompts and target ids (``datasets.map``, batched)."""
    rows = rows_of(batch)
    inputs = tokenizer(fitted_prompts(rows, spec, tokenizer, max_length),
                       max_length=max_length, truncation=True)  # fmt: skip
    out = {
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"],
        "group": [spec.group_id(row) for row in rows],
        "row_id": [row[ROW_ID] for row in rows],
    }
    if labelled:
        targets = [spec.label_id(row[spec.label_column]) for row in rows]
        labels = tokenizer(
            text_target=[spec.target_text(t) for t in targets],
            max_length=max_target_length,
            truncation=True,
        )
        out.update(labels=labels["input_ids"], target=targets)
    return out


def fitted_prompts(
    rows: list[dict[str, Any]], spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[str]:
    """Each row's prompt, within ``max_length`` tokens by shortening its longest field.

    Cutting the prompt's end instead would drop its last field: RTE's hypothesis, after a
    long premise, was gone from 40 of 277 validation prompts at 128 tokens. Prompts that
    fit are the plain :meth:`TaskSpec.prompt`.
    """
    prompts = [spec.prompt(row) for row in rows]
    for i, ids in enumerate(tokenizer(prompts)["input_ids"]):
        if len(ids) > max_length:
            prompts[i] = _shorten_longest_field(rows[i], spec, tokenizer, max_length)
    return prompts


def _shorten_longest_field(
    row: dict[str, Any], spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> str:
    texts = spec.prompt_texts(row)
    prompt = spec.prompt(row, texts)

    def tokens(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    for _ in range(3):  # a decoded cut can tokenise a token or two longer than counted
        over = len(tokenizer(prompt)["input_ids"]) - max_length
        if over <= 0:
            break
        ids_of = {key: tokens(text) for key, text in texts.items()}
        longest = max(ids_of, key=lambda key: len(ids_of[key]))
        ids = ids_of[longest]
        texts[longest] = str(tokenizer.decode(ids[: max(len(ids) - over, 0)])).strip()
        prompt = spec.prompt(row, texts)
    return prompt  # anything still over is cut at the end by the tokenizer


def encode_classification(
    batch: dict[str, list[Any]],
    tokenizer: PreTrainedTokenizerBase,
    spec: TaskSpec,
    max_length: int,
    labelled: bool = True,
) -> dict[str, list[Any]]:
    """A batch of raw rows as encoder inputs (text or text pair) and label ids."""
    rows = rows_of(batch)
    firsts, seconds = zip(*(spec.classification_texts(row) for row in rows), strict=True)
    pairs = None if seconds[0] is None else list(seconds)
    encoded = tokenizer(list(firsts), pairs, max_length=max_length, truncation=True)
    out = {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
    if labelled:
        out["labels"] = [spec.label_id(row[spec.label_column]) for row in rows]
    out["group"] = [spec.group_id(row) for row in rows]
    out["row_id"] = [row[ROW_ID] for row in rows]
    return out
