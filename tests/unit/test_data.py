"""hadamard_lit.data: task specs, the NLU and math datamodules, answer extraction.

Real data (``../shared/data``) and real tokenizers (T5, MiniLM's BERT); small slices so
the file runs in well under a minute. Error cases use tiny JSON Lines folders.
``conftest.py`` sets ``HF_HUB_OFFLINE=1``: Hub loads fail at once (the fallback test
relies on that).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from hadamard_lit.data import (
    TASKS,
    MathDataModule,
    NLUDataModule,
    PadCollator,
    extract_boxed_answer,
    extract_gsm8k_answer,
    extract_last_number,
    get_task,
    normalize_answer,
    normalize_number,
    resolve_data_dir,
    task_names,
)
from hadamard_lit.data.nlu import Shape
from hadamard_lit.data.tasks import AVERAGE_METRIC

# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def t5(t5_tokenizer: str) -> Any:
    """The real T5 tokenizer, loaded once (datamodules accept a loaded tokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(t5_tokenizer)


@pytest.fixture(scope="module")
def bert(minilm: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rte_rows(n: int, label: Any = None) -> list[dict[str, Any]]:
    return [
        {
            "sentence1": f"premise {i}",
            "sentence2": f"hypothesis {i}",
            "label": i % 2 if label is None else label,
            "idx": i,
        }
        for i in range(n)
    ]


#: One plausible raw row per task, in the Hub's schema.
def sample_row(task: str) -> dict[str, Any]:
    spec = get_task(task)
    row: dict[str, Any] = {c: f"{c} text" for c in spec.text_columns}
    if task == "wsc":
        row.update(text="Mark told Pete many lies about himself .", span1_index=0, span1_text="Mark",
                   span2_index=6, span2_text="himself")  # fmt: skip
    if task == "winogrande":
        row["sentence"] = "The trophy does not fit in the case because _ is too big."
    if task == "multirc":
        row["idx"] = {"paragraph": 3, "question": 17, "answer": 2}
        row["paragraph"] = "<b>Sent 1: </b>Forces move things.<br>"
    # Label id 0 as the Hub stores it (WinoGrande "1", SciTail "entailment"); STS-B a score.
    row[spec.label_column] = (
        2.6 if spec.is_regression else spec.label_map[0][0] if spec.label_map else 0
    )
    return row


# -- task specs -------------------------------------------------------------------------


def test_registry_has_the_17_tasks() -> None:
    assert len(TASKS) == 17
    assert set(task_names()) == {
        "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "boolq", "cb", "multirc",
        "wic", "wsc", "paws", "scitail", "winogrande", "yelp_polarity",
    }  # fmt: skip
    assert get_task("mnli").validation_split == "validation_matched"
    assert get_task("stsb").num_labels == 1 and get_task("stsb").is_regression
    assert get_task("cola").headline_metric == "matthews_corrcoef"
    assert get_task("mrpc").headline_metric == AVERAGE_METRIC


@pytest.mark.parametrize("task", sorted(TASKS))
def test_prompt_target_parse_round_trip(task: str, t5: Any) -> None:
    spec = get_task(task)
    row = sample_row(task)
    prompt = spec.prompt(row)
    assert prompt.startswith(f"{task} ") and all(
        f"{shown}:" in prompt for shown, _ in spec.prompt_fields
    )
    first, _ = spec.classification_texts(row)
    assert first
    if spec.is_regression:
        for score, text in ((2.6, "2.6"), (3.47, "3.4"), (0.0, "0.0"), (4.91, "5.0")):
            assert spec.target_text(score) == text
            assert spec.parse_prediction(text) == pytest.approx(float(text))
        return
    for label in range(spec.num_labels):
        text = spec.target_text(label)
        assert spec.parse_prediction(text) == label
        assert spec.parse_prediction(f" {text.upper()} ") == label
        # Every verbaliser fits the default max_target_length=8 (with EOS), so none is cut.
        assert len(t5(text_target=text)["input_ids"]) <= 8
    assert spec.parse_prediction("banana") is None
    assert spec.parse_prediction("") is None
    assert spec.label_id(row[spec.label_column]) == 0


def test_parse_stsb_clips_and_rejects() -> None:
    spec = get_task("stsb")
    assert spec.parse_prediction("7.5") == 5.0
    assert spec.parse_prediction("-1") == 0.0
    for bad in ("nan", "inf", "three", "", "3.4.1"):
        assert spec.parse_prediction(bad) is None


def test_string_labels_are_normalised() -> None:
    assert get_task("winogrande").label_id("1") == 0 and get_task("winogrande").label_id("2") == 1
    assert get_task("winogrande").label_id("") == -1  # unlabelled test rows: rejected later
    assert get_task("scitail").label_id("neutral") == 1
    assert get_task("winogrande").target_text(1) == "2"


def test_task_specific_text() -> None:
    wsc = get_task("wsc").prompt(sample_row("wsc"))
    assert wsc == "wsc text: * Mark * told Pete many lies about # himself # ."
    multirc = get_task("multirc")
    row = sample_row("multirc")
    assert "<b>" not in multirc.prompt(row) and multirc.group_id(row) == 17
    assert get_task("rte").group_id(rte_rows(1)[0]) == -1
    first, second = get_task("winogrande").classification_texts(sample_row("winogrande"))
    assert (
        "sentence text" not in first and "option1 text" in first and "option2 text" in str(second)
    )
    assert (
        get_task("mnli").prompt({"hypothesis": "h", "premise": "p"})
        == "mnli hypothesis: h premise: p"
    )


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"Unknown task 'sst-2'.*cola.*yelp_polarity"):
        get_task("sst-2")
    with pytest.raises(ValueError, match="sst-2"):
        NLUDataModule("sst-2", tokenizer="unused")


# -- NLUDataModule on real data ---------------------------------------------------------


@pytest.mark.parametrize("task", ["sst2", "stsb", "rte", "cb", "wsc", "mrpc"])
@pytest.mark.parametrize("shape", ["text_to_text", "classification"])
def test_nlu_batches_on_real_data(
    task: str, shape: Shape, shared_data: Path, t5: Any, bert: Any
) -> None:
    tokenizer = t5 if shape == "text_to_text" else bert
    dm = NLUDataModule(task, tokenizer, shape=shape, data_dir=str(shared_data), max_length=64,
                       batch_size=8, max_train_samples=48, max_eval_samples=24)  # fmt: skip
    dm.setup("fit")
    spec = dm.task_spec
    assert dm.num_labels == spec.num_labels
    assert len(dm.datasets["train"]) == 48 and len(dm.datasets["validation"]) == 24
    batch = next(iter(dm.train_dataloader()))
    value_dtype = torch.float32 if spec.is_regression else torch.long
    assert (
        batch["input_ids"].shape == batch["attention_mask"].shape
        and batch["input_ids"].shape[0] == 8
    )
    assert batch["input_ids"].shape[1] <= 64
    assert batch["group"].tolist() == [-1] * 8
    if shape == "text_to_text":
        assert set(batch) == {"input_ids", "attention_mask", "labels", "target", "group", "row_id"}
        assert batch["target"].dtype == value_dtype
        targets = t5.batch_decode(batch["labels"].clamp(min=0), skip_special_tokens=True)
        assert targets == [spec.target_text(t) for t in batch["target"].tolist()]
        assert t5.decode(batch["input_ids"][0], skip_special_tokens=True).startswith(task)
    else:
        assert set(batch) == {
            "input_ids", "attention_mask", "token_type_ids", "labels", "group", "row_id",
        }  # fmt: skip
        assert batch["labels"].dtype == value_dtype
        assert batch["input_ids"][:, 0].eq(bert.cls_token_id).all()
    labels = batch["target" if shape == "text_to_text" else "labels"]
    assert all(spec.label_is_valid(v) for v in labels.tolist())


def test_multirc_groups_are_question_ids(shared_data: Path, t5: Any) -> None:
    dm = NLUDataModule("multirc", t5, data_dir=str(shared_data), max_length=32, max_eval_samples=40)
    dm.setup("test")  # large task: test = the whole validation file; no train file needed
    groups = dm.datasets["test"]["group"]
    assert min(groups) >= 0 and len(set(groups)) < len(groups)


def test_paper_protocol_halves_small_validation_sets(shared_data: Path, t5: Any) -> None:
    dm = NLUDataModule("rte", t5, data_dir=str(shared_data), seed=42)
    (val, _), (test, _), (train, _) = (
        dm.protocol_split(n) for n in ("validation", "test", "train")
    )
    assert (len(train), len(val), len(test)) == (2490, 138, 139)
    assert set(val["idx"]).isdisjoint(test["idx"]) and set(val["idx"]) | set(test["idx"]) == set(
        range(277)
    )
    again = NLUDataModule("rte", t5, data_dir=str(shared_data), seed=42).protocol_split(
        "validation"
    )[0]
    other = NLUDataModule("rte", t5, data_dir=str(shared_data), seed=7).protocol_split(
        "validation"
    )[0]
    assert again["idx"] == val["idx"] and other["idx"] != val["idx"]


def test_paper_protocol_holds_out_training_rows_for_large_tasks(shared_data: Path, t5: Any) -> None:
    dm = NLUDataModule("sst2", t5, data_dir=str(shared_data))
    train, val, test = (dm.protocol_split(n)[0] for n in ("train", "validation", "test"))
    assert (len(train), len(val), len(test)) == (19_000, 1_000, 872)
    assert set(train["idx"]).isdisjoint(val["idx"])
    plain = NLUDataModule("sst2", t5, data_dir=str(shared_data), split_protocol="plain")
    assert [len(plain.protocol_split(n)[0]) for n in ("train", "validation", "test")] == [
        20_000,
        872,
        872,
    ]


def test_evaluation_without_a_train_file(shared_data: Path, t5: Any) -> None:
    """BoolQ's local train split was not collected: validate/test still work, fit says why."""
    dm = NLUDataModule("boolq", t5, data_dir=str(shared_data), max_length=32, max_eval_samples=16)
    dm.setup("validate")
    assert len(dm.datasets["validation"]) == 16
    with pytest.raises(
        FileNotFoundError, match=r"task 'boolq', train split.*superglue/boolq/train\.jsonl"
    ):
        dm.setup("fit")


# -- data errors ------------------------------------------------------------------------


def test_missing_column_is_named(tmp_path: Path, t5: Any) -> None:
    rows = [{k: v for k, v in r.items() if k != "sentence2"} for r in rte_rows(8)]
    file = write_jsonl(tmp_path / "glue/rte/validation.jsonl", rows)
    dm = NLUDataModule("rte", t5, data_dir=str(tmp_path), split_protocol="plain")
    with pytest.raises(ValueError, match=rf"task 'rte'.*{file}.*\['sentence2'\]"):
        dm.setup("validate")


@pytest.mark.parametrize(("task", "rows", "bad"), [
    ("rte", rte_rows(4, label=2), "2"),
    ("rte", rte_rows(4, label=-1), "-1"),
    ("stsb", rte_rows(4, label=7.5), "7.5"),
    ("winogrande", [{"sentence": "_ x", "option1": "a", "option2": "b", "answer": ""}], "''"),
])  # fmt: skip
def test_out_of_range_labels_are_rejected(
    task: str, rows: list[dict[str, Any]], bad: str, tmp_path: Path, t5: Any
) -> None:
    spec = get_task(task)
    file = write_jsonl(tmp_path / spec.local_subdir / f"{spec.validation_split}.jsonl", rows)
    dm = NLUDataModule(task, t5, data_dir=str(tmp_path), split_protocol="plain")
    with pytest.raises(
        ValueError,
        match=rf"task '{task}': {re.escape(str(file))} has label {re.escape(bad)} in column",
    ):
        dm.setup("validate")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder"):
        NLUDataModule("rte", "t5", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="shape"):
        NLUDataModule("rte", "t5", shape="seq2seq")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        NLUDataModule("rte", "t5", batch_size=0)


def test_tokenizer_by_name_loads_once_and_hparams_stay_plain(
    tmp_path: Path, t5_tokenizer: str, t5: Any
) -> None:
    write_jsonl(tmp_path / "glue/rte/validation.jsonl", rte_rows(6))
    dm = NLUDataModule("rte", t5_tokenizer, data_dir=str(tmp_path), split_protocol="plain")
    assert dm.tokenizer is dm.tokenizer and dm.hparams["tokenizer"] == t5_tokenizer
    passed = NLUDataModule("rte", t5, data_dir=str(tmp_path))
    assert passed.tokenizer is t5 and isinstance(passed.hparams["tokenizer"], str)


# -- collate ----------------------------------------------------------------------------


def test_pad_collator_pads_each_key_its_own_way() -> None:
    rows = [
        {
            "input_ids": [5, 6, 7],
            "attention_mask": [1, 1, 1],
            "labels": [9],
            "target": 1.5,
            "group": 3,
            "answers": "7",
        },
        {
            "input_ids": [5],
            "attention_mask": [1],
            "labels": [9, 8],
            "target": 2,
            "group": -1,
            "answers": "8",
        },
    ]
    batch = PadCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[9, -100], [9, 8]]
    assert batch["target"].dtype == torch.float32 and batch["group"].dtype == torch.long
    assert batch["answers"] == ["7", "8"]
    left = PadCollator(pad_token_id=2, padding_side="left")(rows)
    assert left["input_ids"].tolist() == [[5, 6, 7], [2, 2, 5]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


# -- the packaged SST-2 sample and the Hub fallback -------------------------------------


def test_package_sample_resolves_and_loads(t5: Any) -> None:
    folder = resolve_data_dir("package:sst2_sample")
    assert (folder / "glue/sst2/train.jsonl").is_file() and (folder / "PROVENANCE.md").is_file()
    with pytest.raises(FileNotFoundError, match="sst2_sample"):
        resolve_data_dir("package:nothing_here")
    plain = NLUDataModule("sst2", t5, data_dir="package:sst2_sample", split_protocol="plain")
    assert [len(plain.protocol_split(n)[0]) for n in ("train", "validation", "test")] == [
        3000,
        872,
        872,
    ]
    paper = NLUDataModule("sst2", t5, data_dir="package:sst2_sample")
    assert [len(paper.protocol_split(n)[0]) for n in ("train", "validation", "test")] == [
        2000,
        1000,
        872,
    ]


def test_hub_failure_falls_back_with_a_warning(t5: Any, caplog: pytest.LogCaptureFixture) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # the Hub load fails at once
    dm = NLUDataModule(
        "sst2",
        t5,
        fallback_data_dir="package:sst2_sample",
        max_train_samples=16,
        max_eval_samples=16,
    )
    with caplog.at_level(logging.WARNING, logger="hadamard_lit"):
        dm.setup("fit")
    assert "fallback_data_dir" in caplog.text and "nyu-mll/glue" in caplog.text
    assert len(dm.datasets["train"]) == 16
    with pytest.raises(OSError):
        NLUDataModule("sst2", t5).setup("validate")  # no fallback: the Hub's error


# -- MathDataModule ---------------------------------------------------------------------


def test_gsm8k_training_batches_mask_the_prompt(shared_data: Path, t5: Any) -> None:
    dm = MathDataModule("gsm8k", t5, data_dir=str(shared_data), max_length=384, batch_size=4,
                        max_train_samples=8, max_eval_samples=6)  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels", "row_id"}
    for ids, mask, labels in zip(
        batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True
    ):
        length = int(mask.sum())
        learnt = labels[:length] != -100
        start = int(learnt.nonzero()[0])
        assert not learnt[:start].any() and learnt[start:].all() and (labels[length:] == -100).all()
        assert torch.equal(labels[start:length], ids[start:length])
        assert int(ids[length - 1]) == t5.eos_token_id
        prompt = t5.decode(ids[:start])
        solution = t5.decode(ids[start:length], skip_special_tokens=True)
        assert prompt.rstrip().endswith("### Response:") and "Below is an instruction" in prompt
        assert "####" in solution and "<<" not in solution  # calculator annotations stripped


def test_gsm8k_solutions_cut_at_max_length_are_named(
    shared_data: Path, t5: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A solution cut at max_length loses '#### N' and EOS: the model would learn never to
    answer. Said once, with the count and the length that would fit."""
    kwargs = dict(data_dir=str(shared_data), batch_size=4, max_train_samples=8)
    with caplog.at_level(logging.WARNING):
        MathDataModule("gsm8k", t5, max_length=384, **kwargs).setup("fit")
    assert "solutions are cut" not in caplog.text
    dm = MathDataModule("gsm8k", t5, max_length=150, **kwargs)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    (line,) = [r.getMessage() for r in caplog.records if "solutions are cut" in r.getMessage()]
    cut = [ids for ids in dm.datasets["train"]["input_ids"] if ids[-1] != t5.eos_token_id]
    kept = len(dm.datasets["train"])  # rows whose prompt alone fills 150 are dropped
    assert line.startswith(f"{len(cut)} of {kept} training solutions are cut at max_length=150")
    assert cut and "raise max_length" in line
    assert "full_length" not in dm.datasets["train"].column_names


def test_gsm8k_evaluation_batches(shared_data: Path, t5: Any) -> None:
    dm = MathDataModule(
        "gsm8k", t5, data_dir=str(shared_data), eval_batch_size=4, max_eval_samples=4
    )
    dm.setup("validate")
    assert dm.datasets["validation"] is dm.datasets["test"]
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "answers", "row_id"}
    assert batch["answers"] == ["18", "3", "70000", "540"]  # GSM8K test's first four
    assert batch["attention_mask"][:, -1].eq(1).all()  # left padded: every prompt ends last
    short = int(batch["attention_mask"].sum(1).argmin())
    assert (
        batch["attention_mask"][short, 0] == 0 and batch["input_ids"][short, 0] == t5.pad_token_id
    )


def test_svamp_and_math_gold_answers(shared_data: Path, t5: Any) -> None:
    svamp = MathDataModule("svamp", t5, data_dir=str(shared_data), max_eval_samples=3)
    svamp.setup("test")
    assert svamp.datasets["test"]["answers"] == ["51", "1", "17"]
    competition = MathDataModule("math", t5, data_dir=str(shared_data), max_eval_samples=3)
    competition.setup("test")
    assert competition.datasets["test"]["answers"] == ["2", "10", "\\dfrac{9}{7}"]
    with pytest.raises(FileNotFoundError, match=r"metamathqa.*math/metamathqa/train\.jsonl"):
        competition.setup("fit")  # MATH trains on MetaMathQA, which is not in ../shared/data


def test_math_tokenizer_without_pad_uses_eos(shared_data: Path, t5_tokenizer: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(t5_tokenizer)
    tokenizer.pad_token = None
    assert tokenizer.pad_token is None
    dm = MathDataModule("gsm8k", tokenizer, data_dir=str(shared_data), max_eval_samples=2)
    assert dm.tokenizer.pad_token == dm.tokenizer.eos_token
    with pytest.raises(ValueError, match="question"):
        MathDataModule("gsm8k", tokenizer, prompt_template="no placeholder")
    with pytest.raises(ValueError, match="Unknown math dataset"):
        MathDataModule("aqua", tokenizer)  # type: ignore[arg-type]


# -- answer extraction ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("so 3 + 4 = 7\n#### 7", "7"),
    ("#### 1,080", "1080"),
    ("#### $18.00", "18"),
    ("#### -3", "-3"),
    ("first #### 2 then #### 5", "2"),
    ("#### 18\n\n### Instruction:\nTom has 3 apples ...\n#### 5", "18"),  # ran on: the first
    ("#### Step 1: add\n3 + 4 = 7\n#### 7", "7"),  # a Markdown heading is no answer
    ("#### eighteen", "eighteen"),
    ("no marker 12", None),
])  # fmt: skip
def test_extract_gsm8k_answer(text: str, expected: str | None) -> None:
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("so $\\boxed{2}$ asymptotes", "2"),
    ("\\boxed{1} then \\boxed{\\frac{9}{7}}", "\\frac{9}{7}"),
    ("$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed 5$", "5"),
    ("\\fbox{x=1}", "x=1"),
    ("\\boxed{unclosed", None),
    ("nothing", None),
])  # fmt: skip
def test_extract_boxed_answer(text: str, expected: str | None) -> None:
    assert extract_boxed_answer(text) == expected


def test_math_answers_without_a_box_are_read_from_metamaths_ending() -> None:
    from hadamard_lit.modules.causal_lm import answer_extractor

    extract = answer_extractor("auto", "math")
    assert extract("So $x = \\frac{1}{2}$.\nThe answer is: \\frac{1}{2}") == "\\frac{1}{2}"
    assert extract("$\\boxed{3}$. The answer is: 4") == "3"  # a box wins
    assert extract("The answer is $5$.") == "5" and extract("no answer") is None
    assert extract("The answer is: 42. The answer is: 43") == "43"


def test_numbers_and_normalisation() -> None:
    assert extract_last_number("costs $1,250.50, then 3 and -0.5.") == "-0.5"
    assert extract_last_number("He pays .5 dollars") == "0.5"
    assert extract_last_number("none") is None
    assert [normalize_number(s) for s in ("51.0", "1,000", " 7. ", "0.50", "-0", "abc")] == [
        "51", "1000", "7", "0.5", "0", "abc",
    ]  # fmt: skip
    assert normalize_answer("\\dfrac{9}{7}") == normalize_answer("\\frac97") == "\\frac{9}{7}"
    assert normalize_answer("x = 5") == normalize_answer("5.00") == "5"
    assert normalize_answer("10\\text{ cm}") == "10" and normalize_answer("3/4") == "\\frac{3}{4}"
    assert normalize_answer("90^\\circ") == "90" and normalize_answer(None) is None
    # Commas that do not separate thousands make a list (MATH's "0,1": both roots), not a number.
    assert normalize_answer("0,1") != normalize_answer("1")
    assert normalize_answer("-4, 4") != "-44" and normalize_number("1,3") == "1,3"
    assert normalize_number("-1,234.5") == "-1234.5" and normalize_answer("\\$1,\\!000") == "1000"


def test_training_order_depends_only_on_seed_and_epoch() -> None:
    """A resumed run must see the batches the uninterrupted one saw (Lightning calls
    ``set_epoch``; the global RNG is not in checkpoints)."""
    import torch

    from hadamard_lit.data.loaders import EpochShuffleSampler

    sampler = EpochShuffleSampler(50, seed=3)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        torch.rand(100)  # the global RNG moving must not matter
        orders.append(list(sampler))
    assert sorted(orders[0]) == list(range(50))
    assert orders[0] != orders[1] != orders[2]
    resumed = EpochShuffleSampler(50, seed=3)
    resumed.set_epoch(2)
    assert list(resumed) == orders[2]
    assert list(EpochShuffleSampler(50, seed=3, epoch=lambda: 1)) == orders[1]


def test_t5_prompts_shorten_the_longest_field_not_the_last(shared_data: Path, t5: Any) -> None:
    """RTE's long premises pushed the hypothesis out of 40 of 277 validation prompts at 128
    tokens when the prompt's end was cut; the premise is shortened instead."""
    from hadamard_lit.data.nlu import fitted_prompts
    from hadamard_lit.data.tasks import get_task

    spec = get_task("rte")
    rows = [json.loads(line) for line in (shared_data / "glue/rte/validation.jsonl").open()]
    prompts = fitted_prompts(rows, spec, t5, 128)
    encoded = t5(prompts, max_length=128, truncation=True)["input_ids"]
    cut = [i for i, row in enumerate(rows) if len(t5(spec.prompt(row))["input_ids"]) > 128]
    assert len(cut) >= 40  # the rows the old cut hurt
    for i, row in enumerate(rows):
        assert len(encoded[i]) <= 128
        if i not in cut:
            assert prompts[i] == spec.prompt(row)  # what fits stays as it was
            continue
        text = t5.decode(encoded[i], skip_special_tokens=True)
        hypothesis = t5.decode(t5(row["sentence2"], add_special_tokens=False)["input_ids"])
        assert text.endswith(f"sentence2: {hypothesis}"), (i, text[-120:])


def test_tokenised_cache_is_keyed_by_the_encoding_code(
    shared_data: Path, t5: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``datasets`` hashes a module's function by its name: without the code's digest in
    the key, an upgrade that encodes rows differently would read the old rows back."""
    from hadamard_lit.data import base

    def cache_of_validation() -> set[str]:
        dm = NLUDataModule("rte", t5, data_dir=str(shared_data), max_eval_samples=8)
        dm.setup("validate")
        return {f["filename"] for f in dm.datasets["validation"].cache_files}

    first = cache_of_validation()
    assert first and cache_of_validation() == first  # the same code: the cache is reused
    monkeypatch.setattr(base, "data_code_digest", lambda: "another-version")
    assert cache_of_validation().isdisjoint(first)
