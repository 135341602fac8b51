"""Evaluation on several processes scores every row exactly once (data.eval_sharding).

Lightning's ``DistributedSampler`` pads a split to a multiple of the processes by repeating
rows; here the copies are marked and left out, so 2-process validation gives the
1-process numbers.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForSequenceClassification

from hadamard_lit.data.eval_sharding import (
    COPY_KEY,
    EqualShareSampler,
    MarkedCopies,
    scored_rows,
)
from helpers.cli import bert_config
from helpers.distributed import REPO, run_python
from helpers.tiny import TINY_BERT


@pytest.mark.parametrize(("size", "world"), [(139, 2), (28, 8), (3, 4), (6, 3), (1, 2)])
def test_equal_shares_hold_every_row_once_and_mark_the_copies(size: int, world: int) -> None:
    rows = list(range(size))
    shares = [list(EqualShareSampler(rows, world, rank)) for rank in range(world)]  # type: ignore[arg-type]
    assert len({len(share) for share in shares}) == 1  # a sharded forward needs equal shares
    assert all(len(share) == len(EqualShareSampler(rows, world, 0)) for share in shares)  # type: ignore[arg-type]
    indices = [i for share in shares for i in share]
    assert sorted(i for i in indices if i < size) == rows
    marked = MarkedCopies([{"row_id": i} for i in rows])
    read = [marked[i] for i in indices]
    assert sorted(r["row_id"] for r in read if not r[COPY_KEY]) == rows
    assert sum(r[COPY_KEY] for r in read) == len(indices) - size


def test_scored_rows() -> None:
    assert scored_rows({"input_ids": torch.zeros(2, 3)}) is None
    assert scored_rows({COPY_KEY: torch.tensor([0, 0])}) is None
    assert scored_rows({COPY_KEY: torch.tensor([0, 1])}).tolist() == [True, False]


def _tiny_bert_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-bert"
    if not folder.is_dir():
        torch.manual_seed(0)
        config = AutoConfig.for_model(**{**TINY_BERT, "num_labels": 2})
        AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    return folder


def _validate(tmp_path: Path, shared_data: Path, minilm: str, devices: int) -> dict[str, float]:
    name = f"devices{devices}"
    config = bert_config(tmp_path, shared_data, minilm)
    # A saved folder, not a config: every process must load the same (untrained) weights.
    model = config["model"]["init_args"]
    model["model_name_or_path"] = str(_tiny_bert_folder(tmp_path))
    del model["backbone_config"]
    # 5 rows in batches of 2: 2 processes get 3 rows each, one of them a copy of row 0.
    config["data"]["init_args"].update(max_eval_samples=5, eval_batch_size=2)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["-m", "hadamard_lit", "validate", "--config", str(path)]
    if devices > 1:
        args += ["--config", str(REPO / "configs/strategy/ddp.yaml")]
    run_python(*args, "--trainer.devices", str(devices),
               "--trainer.logger.init_args.name", name, timeout=300)  # fmt: skip
    (metrics,) = (tmp_path / name).rglob("metrics.csv")
    row = next(csv.DictReader(metrics.open()))
    return {k: float(v) for k, v in row.items() if k.startswith("val/") and v}


@pytest.mark.distributed
def test_two_process_validation_gives_the_one_process_numbers(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    one = _validate(tmp_path, shared_data, minilm, devices=1)
    two = _validate(tmp_path, shared_data, minilm, devices=2)
    assert {"val/loss", "val/accuracy", "val/majority", "val/score"} <= one.keys()
    assert one["val/majority"] == pytest.approx(3 / 5)  # labels 1 0 1 1 0; a copy made it 4/6
    assert two.keys() == one.keys()
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
