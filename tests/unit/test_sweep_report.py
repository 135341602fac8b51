"""Sweep expansion (grid → run folders and CLI arguments) and the report table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hadamard_lit.report import build_table, find_results, report
from hadamard_lit.sweep import expand, load_sweep


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(data, sort_keys=False) if path.suffix == ".yaml" else json.dumps(data)
    )
    return path


def test_grid_expands_every_combination_with_distinct_folders(tmp_path: Path) -> None:
    write(tmp_path / "method" / "lora.yaml", {"model": {"init_args": {}}})
    write(tmp_path / "method" / "adadhp.yaml", {"model": {"init_args": {}}})
    sweep = load_sweep(
        write(
            tmp_path / "sweep.yaml",
            {
                "name": "demo",
                "grid": {
                    "task": ["rte", "cola"],
                    "seed": [0, 1, 2],
                    "method": {"adadhp": "method/adadhp.yaml", "lora": "method/lora.yaml"},
                    "model.init_args.optimizer.init_args.lr": [0.001],
                },
                "per_task": {"cola": {"trainer.max_steps": 7}},
            },
        )
    )
    assert sweep.name == "demo"
    assert len(sweep.points) == 2 * 3 * 2
    names = [p.name for p in sweep.points]
    assert len(set(names)) == len(names)
    first = sweep.points[0]
    assert first.name == "task=rte,seed=0,method=adadhp,lr=0.001"
    assert first.cli_args() == [
        "--config",
        str((tmp_path / "method" / "adadhp.yaml").resolve()),
        "--data.init_args.task=rte",
        "--seed_everything=0",
        "--model.init_args.optimizer.init_args.lr=0.001",
    ]
    cola = next(p for p in sweep.points if p.values["task"] == "cola")
    assert cola.overrides["trainer.max_steps"] == 7
    assert "trainer.max_steps" not in first.overrides


@pytest.mark.parametrize(
    "spec,message",
    [
        ({}, "non-empty 'grid'"),
        ({"grid": {"task": []}}, "needs a non-empty list of values or a mapping"),
        ({"grid": {"method": "a.yaml"}}, "needs a non-empty list of values or a mapping"),
        ({"grid": {"task": ["rte"]}, "per_task": {"cola": {}}}, r"per_task names \['cola'\]"),
        ({"grid": {"task": ["rte"]}, "grids": {}}, r"Unknown sweep keys \['grids'\]"),
    ],
)
def test_bad_sweeps(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand(spec)


def test_missing_method_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        expand({"grid": {"method": {"x": "nope.yaml"}}}, base=tmp_path)


def test_missing_sweep_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sweep(tmp_path / "absent.yaml")


def fake_run(
    root: Path, method: str, task: str, seed: int, score: float | None, status: str = "completed"
) -> None:
    write(
        root / f"{method}-{task}-{seed}" / "results.json",
        {
            "method": method,
            "task": task,
            "seed": seed,
            "status": status,
            "headline": "test/score",
            "metrics": {} if score is None else {"test/score": score},
            "trainable_params": 10,
            "total_params": 1000,
        },
    )


def test_report_table_means_and_stds(tmp_path: Path) -> None:
    for seed, (a, b) in enumerate([(0.80, 0.60), (0.84, 0.62), (0.82, 0.64)]):
        fake_run(tmp_path, "adadhp", "rte", seed, a)
        fake_run(tmp_path, "adadhp", "cola", seed, b)
        fake_run(tmp_path, "lora", "rte", seed, a - 0.1)
    fake_run(tmp_path, "lora", "cola", 0, None, status="failed")
    table = build_table(find_results([tmp_path]))
    assert table.methods == ["adadhp", "lora"] or set(table.methods) == {"adadhp", "lora"}
    cell = table.cells[("adadhp", "rte")]
    assert cell.mean == pytest.approx(82.0)
    assert cell.std == pytest.approx(2.0)
    assert str(cell) == "82.0 ± 2.0"
    assert table.average("adadhp") == pytest.approx((82.0 + 62.0) / 2)
    assert table.average("lora") is None  # a task missing: no average
    assert table.trainable_percent["adadhp"] == pytest.approx(1.0)
    assert len(table.failed) == 1 and table.failed[0]["status"] == "failed"

    _, paths = report([tmp_path])
    markdown = paths["markdown"].read_text()
    assert "| adadhp | 1.0000 |" in markdown and "82.0 ± 2.0" in markdown
    assert "1 run(s) without results" in markdown
    assert paths["csv"].read_text().count("\n") == 1 + 3
    assert paths["plot"].stat().st_size > 1000


def test_report_without_results(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No results.json"):
        report([tmp_path])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report([tmp_path / "nope"])


def test_report_rows_keep_sweep_axes_apart_and_average_only_seeds(tmp_path: Path) -> None:
    """A sweep over lr as well as seeds: each lr is a row, a cell averages its seeds only."""
    for lr, scores in ((1e-3, (0.70, 0.72)), (1e-2, (0.80, 0.84))):
        for seed, score in enumerate(scores):
            folder = tmp_path / f"lr={lr},seed={seed}"
            labels = {"method": "lora", "lr": lr, "seed": seed}
            record = {
                **labels, "labels": labels, "task": "rte", "status": "completed",
                "headline": "test/score", "metrics": {"test/score": score},
            }  # fmt: skip
            write(folder / "results.json", record)
    table = build_table(find_results([tmp_path]))
    assert sorted(table.methods) == ["lora lr=0.001", "lora lr=0.01"]
    assert table.cells[("lora lr=0.01", "rte")].mean == pytest.approx(82.0)
    assert len(table.cells[("lora lr=0.001", "rte")].scores) == 2
