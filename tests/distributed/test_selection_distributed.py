"""AdaptiveSelection with 2 CPU processes (gloo): DDP, FSDP2 and DeepSpeed ZeRO-2/3.

Each case is one fit of ``selection_case.py`` in fresh processes (Lightning launches the
second rank). Every rank sees the same batches, so the averaged gradient is the one a
single process computes: the selection must be identical on both ranks *and* equal to a
single-process run's, removed modules exactly identity (module values and, under
DeepSpeed, the fp32 master copy) after two more AdamW steps with weight decay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers.distributed import HELPERS, requires_deepspeed, run_script
from helpers.selection_case import (
    CASE_BATCH,
    CASE_SELECTION,
    TinySeq2Seq,
    case_selection,
    case_trainer,
    loader,
    selection_summary,
)

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Any]:
    torch.set_num_threads(1)
    selection = case_selection()
    root = tmp_path_factory.mktemp("single")
    case_trainer("auto", str(root), selection, devices=1).fit(TinySeq2Seq(), loader(CASE_BATCH))
    return selection_summary(selection)


def run_case(case: str, tmp_path: Path) -> list[dict[str, Any]]:
    run_script(HELPERS / "selection_case.py", case, str(tmp_path), timeout=420)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def check(ranks: list[dict[str, Any]], reference: dict[str, Any], rel: float = 1e-5) -> None:
    zero, one = ranks
    assert zero["active"] == one["active"]
    assert zero["removed"] == one["removed"]
    assert zero["scores"] == one["scores"]
    assert len(zero["active"]) == CASE_SELECTION["target"]
    assert zero["last_step"] == reference["last_step"]
    assert zero["removed"] == reference["removed"]
    assert zero["scores"].keys() == reference["scores"].keys()
    for name, score in reference["scores"].items():
        assert zero["scores"][name] == pytest.approx(score, rel=rel, abs=1e-12), name
    assert zero["removed_identity"] and all(zero["removed_identity"].values()), zero[
        "removed_identity"
    ]
    # Checkpoint state holds whole EMA vectors (in + out per matrix), gathered on every rank.
    whole = sum(96 if n.endswith((".wi", ".wo")) else 64 for n in zero["active"])
    assert zero["state_numel"] == one["state_numel"] == whole
    # ... and loads back into a fresh callback on the sharded model unchanged.
    assert zero["state_round_trip"] and one["state_round_trip"]


def test_ddp(tmp_path, reference) -> None:
    check(run_case("ddp", tmp_path), reference)


def test_fsdp2(tmp_path, reference) -> None:
    check(run_case("fsdp2", tmp_path), reference)


@requires_deepspeed
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed(stage, tmp_path, reference) -> None:
    # ZeRO-2 runs half batches accumulated by DeepSpeed: sums in another order.
    check(run_case(f"zero{stage}", tmp_path), reference, rel=1e-3 if stage == 2 else 1e-5)
