"""FSDP2 (2 CPU processes) shards the architecture table's blocks of families beyond the
first four, through the modules, and ends where one process ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hadamard_lit.adapters import adapter_state_dict
from helpers.distributed import HELPERS, run_script
from helpers.modules import CASES, fit, module_for

pytestmark = pytest.mark.distributed

FSDP2_CASES = ("deberta-v2", "qwen3", "bart")


def test_fsdp2_shards_the_table_blocks_of_new_families(t5_tokenizer: str, tmp_path: Path) -> None:
    run_script(HELPERS / "fsdp2_case.py", t5_tokenizer, str(tmp_path), *FSDP2_CASES,
               timeout=600)  # fmt: skip
    for name in FSDP2_CASES:
        case = next(c for c in CASES if c.name == name)
        reference = module_for(case, t5_tokenizer)
        fit(reference, case, steps=2, root=tmp_path / f"single-{name}")
        expected = adapter_state_dict(reference.model)
        for rank in (0, 1):
            got = torch.load(tmp_path / f"{name}.rank{rank}.pt", weights_only=True)
            assert got["sharded"] and got["blocks"] == len(
                case.architecture.find_blocks(case.build())
            )
            assert sorted(got["state"]) == sorted(expected)
            for key, value in expected.items():
                torch.testing.assert_close(got["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)
