"""The 17 NLU tasks: where their data lives, how a row becomes text, how labels are scored.

Each task is a frozen :class:`TaskSpec`, one entry of ``tasks.yaml`` beside this file;
:data:`TASKS` maps names to specs and :func:`get_task` looks one up. A spec turns a row (a dict with the Hub dataset's columns)
into a T5 prompt (``"rte sentence1: ... sentence2: ..."``), a label into the target text
the model learns to write (a verbaliser such as ``"not_entailment"``; STS-B: the score
rounded to 0.2, ``"3.4"``) and a generation back into a label (:meth:`parse_prediction`).

Hub datasets and configs (the standard ones, as used by T5, Compacter, ATTEMPT and DePT):
GLUE ``nyu-mll/glue`` (one config per task), SuperGLUE ``aps/super_glue`` (plain ``wsc``,
not ``wsc.fixed``), PAWS ``google-research-datasets/paws`` ``labeled_final``, SciTail
``allenai/scitail`` ``snli_format`` (string ``gold_label``), WinoGrande
``allenai/winogrande`` ``winogrande_xl`` (string ``answer`` "1"/"2"), Yelp-2
``fancyzhx/yelp_polarity`` (no validation split: its ``test`` split is the evaluation set).
Local folders: ``glue/<task>`` (RTE under GLUE), ``superglue/<task>``, and ``paws``,
``scitail``, ``winogrande``, ``yelp_polarity`` at the top of the data folder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Name of the metric that averages a task's two metrics (GLUE's convention for MRPC,
#: QQP, STS-B; SuperGLUE's for MultiRC). Not ``score``: the modules log ``<stage>/score``.
AVERAGE_METRIC = "average"

Row = Mapping[str, Any]


@dataclass(frozen=True)
class TaskSpec:
    """Everything hadamard_lit needs to know about one NLU task.

    Attributes:
        name: task name, also the prompt prefix (``"sst2"``).
        hub_path: Hugging Face Hub dataset.
        hub_config: its configuration.
        local_subdir: folder of ``<split>.jsonl`` files under a data folder.
        text_columns: columns holding text (checked to exist).
        label_column: column holding the label.
        label_names: verbalisers, indexed by label id (the T5 targets); ``()`` for regression.
        prompt_fields: ``(shown name, column or derived key)`` pairs making the prompt.
        text_pair: the classification (encoder) input: two columns or derived keys, the
            second ``None`` for single-text tasks.
        metric_names: the metrics :func:`hadamard_lit.metrics.build_task_metrics` builds.
        train_size: rows in the full Hub train split; decides the paper split protocol, so
            a truncated local copy splits like the real data set.
        validation_split: the split used for evaluation (``validation_matched`` for MNLI).
        is_regression: STS-B: the label is a float score.
        label_range: the score range of a regression task.
        label_map: string labels on the Hub mapped to ids (WinoGrande, SciTail).
        group_path: keys leading to a question id inside a row (MultiRC's
            ``idx.question``), for per-question metrics.
        derive: adds derived text to a row (marked WSC spans, cleaned MultiRC paragraphs).
    """

    name: str
    hub_path: str
    hub_config: str
    local_subdir: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    prompt_fields: tuple[tuple[str, str], ...]
    text_pair: tuple[str, str | None]
    metric_names: tuple[str, ...]
    train_size: int
    label_column: str = "label"
    validation_split: str = "validation"
    is_regression: bool = False
    label_range: tuple[float, float] = (0.0, 5.0)
    label_map: tuple[tuple[str, int], ...] = ()
    group_path: tuple[str, ...] = ()
    derive: Callable[[Row], dict[str, str]] | None = None

    @property
    def num_labels(self) -> int:
        """Classes, or 1 for regression (the size of an encoder's head)."""
        return 1 if self.is_regression else len(self.label_names)

    @property
    def headline_metric(self) -> str:
        """The metric a run is judged by: the only one, or the average of two."""
        return self.metric_names[0] if len(self.metric_names) == 1 else AVERAGE_METRIC

    @property
    def required_columns(self) -> tuple[str, ...]:
        return (*self.text_columns, self.label_column, *self.group_path[:1])

    def texts(self, row: Row) -> dict[str, Any]:
        """The row with its derived text keys added."""
        return {**row, **self.derive(row)} if self.derive is not None else dict(row)

    def prompt_texts(self, row: Row) -> dict[str, str]:
        """The cleaned text of each of the prompt's fields, by key."""
        texts = self.texts(row)
        return {key: _clean(texts[key]) for _, key in self.prompt_fields}

    def prompt(self, row: Row, texts: dict[str, str] | None = None) -> str:
        """The T5 text-to-text input, e.g. ``"mnli hypothesis: ... premise: ..."``
        (``texts``: the fields' texts to use instead of the row's, e.g. shortened)."""
        texts = self.prompt_texts(row) if texts is None else texts
        fields = " ".join(f"{shown}: {texts[key]}" for shown, key in self.prompt_fields)
        return f"{self.name} {fields}"

    def classification_texts(self, row: Row) -> tuple[str, str | None]:
        """The encoder input: one text, or a pair the tokenizer joins with a separator."""
        texts = self.texts(row)
        first, second = self.text_pair
        return _clean(texts[first]), None if second is None else _clean(texts[second])

    def label_id(self, raw: Any) -> int | float:
        """A raw label as the Hub stores it, as a class id (or float score).

        WinoGrande's ``"1"``/``"2"`` and SciTail's strings become ids; an unknown string
        (WinoGrande's unlabelled ``""``) becomes -1, which validation rejects.
        """
        if self.is_regression:
            return float(raw)
        if self.label_map:
            return dict(self.label_map).get(str(raw), -1)
        return int(raw)

    def label_is_valid(self, label: int | float) -> bool:
        """Whether a (converted) label lies in ``[0, num_labels)``, or the score range."""
        if self.is_regression:
            low, high = self.label_range
            return math.isfinite(label) and low <= label <= high
        return 0 <= label < self.num_labels and label == int(label)

    def target_text(self, label: int | float) -> str:
        """The text the model learns to write for ``label`` (a verbaliser, or ``"3.4"``)."""
        if self.is_regression:
            # As T5: round the score to the nearest 0.2 and print one decimal.
            return f"{round(float(label) * 5) / 5:.1f}"
        return self.label_names[int(label)]

    def label_text(self, label: int | float) -> str | float:
        """A predicted label as a person reads it: its name, or the STS-B score."""
        if self.is_regression:
            return float(label)
        return self.label_names[int(label)]

    def parse_prediction(self, text: str) -> int | float | None:
        """The label a generated text names, or ``None`` when it names none.

        Classification: the verbaliser, exact after stripping spaces, else ignoring case.
        Regression: a float clipped to the score range; not a finite number gives ``None``.
        """
        text = text.strip()
        if self.is_regression:
            try:
                value = float(text)
            except ValueError:
                return None
            if not math.isfinite(value):
                return None
            low, high = self.label_range
            return min(max(value, low), high)
        if text in self.label_names:
            return self.label_names.index(text)
        folded = [name.casefold() for name in self.label_names]
        return folded.index(text.casefold()) if text.casefold() in folded else None

    def group_id(self, row: Row) -> int:
        """MultiRC's question id (per-question exact match); -1 for other tasks."""
        value: Any = row
        for key in self.group_path:
            value = value[key]
        return int(value) if self.group_path else -1


def _clean(value: Any) -> str:
    return " ".join(str(value).split())


def _words_key(words: list[str]) -> list[str]:
    # Span texts differ from the sentence in case ("The lawyer"), punctuation and
    # possessives ("Emma" in "Emma's").
    return [w.strip(".,!?;:'\"").casefold().removesuffix("'s") for w in words]


def _mark_wsc_spans(row: Row) -> dict[str, str]:
    """WSC text with the noun phrase in ``*`` and the pronoun in ``#`` (T5's format).

    The span indices count whitespace-separated words. The plain Hub config has a few
    rows whose index does not point at the span text (what ``wsc.fixed`` repairs); those
    spans are left unmarked rather than marking the wrong words.
    """
    words = str(row["text"]).split()
    for index_key, text_key, mark in (
        ("span1_index", "span1_text", "*"),
        ("span2_index", "span2_text", "#"),
    ):
        span = str(row[text_key]).split()
        start = int(row[index_key])
        end = start + len(span)
        if span and end <= len(words) and _words_key(words[start:end]) == _words_key(span):
            words[start] = f"{mark} {words[start]}"
            words[end - 1] = f"{words[end - 1]} {mark}"
    return {"marked_text": " ".join(words)}


_MARKUP = re.compile(r"<[^>]+>")


def _multirc_texts(row: Row) -> dict[str, str]:
    # Hub paragraphs carry <b>Sent 1: </b> ... <br> markup; T5 strips it too.
    return {
        "clean_paragraph": _MARKUP.sub(" ", str(row["paragraph"])),
        "question_answer": f"{row['question']} {row['answer']}",
    }


def _wic_texts(row: Row) -> dict[str, str]:
    return {"word_sentence1": f"{row['word']}: {row['sentence1']}"}


def _winogrande_texts(row: Row) -> dict[str, str]:
    sentence = str(row["sentence"])
    return {
        "filled1": sentence.replace("_", str(row["option1"]), 1),
        "filled2": sentence.replace("_", str(row["option2"]), 1),
    }


#: Functions a table entry's ``derive`` names.
DERIVE: dict[str, Callable[[Row], dict[str, str]]] = {
    "multirc": _multirc_texts,
    "wic": _wic_texts,
    "wsc": _mark_wsc_spans,
    "winogrande": _winogrande_texts,
}
_SUITES = {"glue": ("nyu-mll/glue", "glue"), "superglue": ("aps/super_glue", "superglue")}
#: The task table (package data), one YAML entry per task.
TABLE_FILE = Path(__file__).with_name("tasks.yaml")


def _pairs(value: Any) -> tuple[tuple[Any, Any], ...]:
    return tuple((a, b) for a, b in value)


def task_entry(name: str, fields: dict[str, Any]) -> TaskSpec:
    """One entry of the task table as a :class:`TaskSpec` (YAML lists become tuples)."""
    fields = dict(fields)
    suite = fields.pop("suite", None)
    if suite is not None:
        hub_path, folder = _SUITES[suite]
        fields.update(hub_path=hub_path, hub_config=name, local_subdir=f"{folder}/{name}")
    columns = tuple(fields.pop("text_columns"))
    if suite == "glue":
        fields.setdefault("prompt_fields", [(c, c) for c in columns])
        fields.setdefault("text_pair", (columns[0], columns[1] if len(columns) > 1 else None))
    derive = fields.pop("derive", None)
    return TaskSpec(
        name=name,
        text_columns=columns,
        label_names=tuple(fields.pop("label_names")),
        prompt_fields=_pairs(fields.pop("prompt_fields")),
        text_pair=tuple(fields.pop("text_pair")),
        metric_names=tuple(fields.pop("metric_names")),
        label_map=_pairs(fields.pop("label_map", ())),
        group_path=tuple(fields.pop("group_path", ())),
        derive=DERIVE[derive] if derive else None,
        **fields,
    )


#: Every task by name.
TASKS: dict[str, TaskSpec] = {
    str(name): task_entry(str(name), fields)
    for name, fields in yaml.safe_load(TABLE_FILE.read_text()).items()
}


def task_names() -> list[str]:
    """The valid task names, sorted."""
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` called ``name``.

    Raises:
        ValueError: ``name`` is not a task; the message lists the valid names.
    """
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown task {name!r}; valid tasks: {', '.join(task_names())}") from None
