"""The 17 NLU tasks: where their data lives, how a row becomes text, how labels are scored.

Each task is a frozen :class:`TaskSpec`; :data:`TASKS` maps names to specs and
:func:`get_task` looks one up. A spec turns a row (a dict with the Hub dataset's columns)
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
from typing import Any

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

    def prompt(self, row: Row) -> str:
        """The T5 text-to-text input, e.g. ``"mnli hypothesis: ... premise: ..."``."""
        texts = self.texts(row)
        fields = " ".join(f"{shown}: {_clean(texts[key])}" for shown, key in self.prompt_fields)
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


_ENTAILMENT = ("entailment", "not_entailment")
_BOOL = ("False", "True")
_ACC = ("accuracy",)
_ACC_F1 = ("accuracy", "f1")
_GLUE = "nyu-mll/glue"
_SUPERGLUE = "aps/super_glue"


def _glue(name: str, columns: tuple[str, ...], labels: tuple[str, ...], **kw: Any) -> TaskSpec:
    """A GLUE task: by default the prompt shows the text columns in order, under their names."""
    kw.setdefault("prompt_fields", tuple((c, c) for c in columns))
    return TaskSpec(
        name=name,
        hub_path=_GLUE,
        hub_config=name,
        local_subdir=f"glue/{name}",
        text_columns=columns,
        label_names=labels,
        text_pair=(columns[0], columns[1] if len(columns) > 1 else None),
        **kw,
    )


#: Every task by name.
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _glue(
            "cola",
            ("sentence",),
            ("unacceptable", "acceptable"),
            metric_names=("matthews_corrcoef",),
            train_size=8_551,
        ),
        _glue(
            "sst2", ("sentence",), ("negative", "positive"), metric_names=_ACC, train_size=67_349
        ),
        _glue(
            "mrpc",
            ("sentence1", "sentence2"),
            ("not_equivalent", "equivalent"),
            metric_names=_ACC_F1,
            train_size=3_668,
        ),
        _glue(
            "qqp",
            ("question1", "question2"),
            ("not_duplicate", "duplicate"),
            metric_names=_ACC_F1,
            train_size=363_846,
        ),
        _glue(
            "stsb",
            ("sentence1", "sentence2"),
            (),
            metric_names=("pearson", "spearman"),
            train_size=5_749,
            is_regression=True,
        ),
        _glue(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            # T5's prompt order (hypothesis first) keeps the short text clear of truncation.
            prompt_fields=(("hypothesis", "hypothesis"), ("premise", "premise")),
            metric_names=_ACC,
            train_size=392_702,
            validation_split="validation_matched",
        ),
        _glue("qnli", ("question", "sentence"), _ENTAILMENT, metric_names=_ACC, train_size=104_743),
        _glue("rte", ("sentence1", "sentence2"), _ENTAILMENT, metric_names=_ACC, train_size=2_490),
        TaskSpec(
            name="boolq",
            hub_path=_SUPERGLUE,
            hub_config="boolq",
            local_subdir="superglue/boolq",
            text_columns=("question", "passage"),
            label_names=_BOOL,
            # Question first: long passages are truncated at the end, not the question.
            prompt_fields=(("question", "question"), ("passage", "passage")),
            text_pair=("question", "passage"),
            metric_names=_ACC,
            train_size=9_427,
        ),
        TaskSpec(
            name="cb",
            hub_path=_SUPERGLUE,
            hub_config="cb",
            local_subdir="superglue/cb",
            text_columns=("premise", "hypothesis"),
            label_names=("entailment", "contradiction", "neutral"),
            prompt_fields=(("hypothesis", "hypothesis"), ("premise", "premise")),
            text_pair=("premise", "hypothesis"),
            metric_names=_ACC,
            train_size=250,
        ),
        TaskSpec(
            name="multirc",
            hub_path=_SUPERGLUE,
            hub_config="multirc",
            local_subdir="superglue/multirc",
            text_columns=("paragraph", "question", "answer"),
            label_names=_BOOL,
            prompt_fields=(
                ("question", "question"),
                ("answer", "answer"),
                ("paragraph", "clean_paragraph"),
            ),
            text_pair=("clean_paragraph", "question_answer"),
            metric_names=("f1a", "exact_match"),
            train_size=27_243,
            group_path=("idx", "question"),
            derive=_multirc_texts,
        ),
        TaskSpec(
            name="wic",
            hub_path=_SUPERGLUE,
            hub_config="wic",
            local_subdir="superglue/wic",
            text_columns=("word", "sentence1", "sentence2"),
            label_names=_BOOL,
            prompt_fields=(
                ("sentence1", "sentence1"),
                ("sentence2", "sentence2"),
                ("word", "word"),
            ),
            text_pair=("word_sentence1", "sentence2"),
            metric_names=_ACC,
            train_size=5_428,
            derive=_wic_texts,
        ),
        TaskSpec(
            name="wsc",
            hub_path=_SUPERGLUE,
            hub_config="wsc",
            local_subdir="superglue/wsc",
            text_columns=("text", "span1_index", "span2_index", "span1_text", "span2_text"),
            label_names=_BOOL,
            prompt_fields=(("text", "marked_text"),),
            text_pair=("marked_text", None),
            metric_names=_ACC,
            train_size=554,
            derive=_mark_wsc_spans,
        ),
        TaskSpec(
            name="paws",
            hub_path="google-research-datasets/paws",
            hub_config="labeled_final",
            local_subdir="paws",
            text_columns=("sentence1", "sentence2"),
            label_names=("not_paraphrase", "paraphrase"),
            prompt_fields=(("sentence1", "sentence1"), ("sentence2", "sentence2")),
            text_pair=("sentence1", "sentence2"),
            metric_names=_ACC,
            train_size=49_401,
        ),
        TaskSpec(
            name="scitail",
            hub_path="allenai/scitail",
            hub_config="snli_format",
            local_subdir="scitail",
            text_columns=("sentence1", "sentence2"),
            label_column="gold_label",
            label_names=("entailment", "neutral"),
            label_map=(("entailment", 0), ("neutral", 1)),
            prompt_fields=(("premise", "sentence1"), ("hypothesis", "sentence2")),
            text_pair=("sentence1", "sentence2"),
            metric_names=_ACC,
            train_size=23_596,
        ),
        TaskSpec(
            name="winogrande",
            hub_path="allenai/winogrande",
            hub_config="winogrande_xl",
            local_subdir="winogrande",
            text_columns=("sentence", "option1", "option2"),
            label_column="answer",
            label_names=("1", "2"),
            label_map=(("1", 0), ("2", 1)),
            prompt_fields=(
                ("sentence", "sentence"),
                ("option1", "option1"),
                ("option2", "option2"),
            ),
            text_pair=("filled1", "filled2"),
            metric_names=_ACC,
            train_size=40_398,
            derive=_winogrande_texts,
        ),
        TaskSpec(
            name="yelp_polarity",
            hub_path="fancyzhx/yelp_polarity",
            hub_config="plain_text",
            local_subdir="yelp_polarity",
            text_columns=("text",),
            label_names=("negative", "positive"),
            prompt_fields=(("review", "text"),),
            text_pair=("text", None),
            metric_names=_ACC,
            train_size=560_000,
            validation_split="test",
        ),
    )
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
