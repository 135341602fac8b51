"""Aggregate runs into the paper-style table: methods × tasks, mean ± std over seeds.

It reads two kinds of run folder under the folders it is given:

* a :func:`hadamard_lit.launch.run` folder (every ``submit`` point): its ``results.json``,
  whose status is checked against what is true now (:func:`run_status.observe`: a
  ``running`` record of a dead job reads ``died``, a preempted one ``requeued``);
* a plain ``fit`` log folder (``config.yaml`` + ``metrics.csv``, e.g.
  ``runs/quickstart/version_0``): task, method and seed from its config, the score from
  its metrics (the test score if it was tested, else its best validation score).

Scores are the task's headline metric (``test/score`` when the run was tested, else
``val/score``) times 100, as papers report; ``majority`` is the score of always predicting
the most frequent label (:class:`hadamard_lit.metrics.MajorityBaseline`). It writes the
table as Markdown and CSV, and a plot: a panel per task, every seed a point, the mean a
bar, the majority class a dashed line, trainable % under each method, runs that did not
complete marked.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hadamard_lit.metrics import MAJORITY, TEST_SCORE, VAL_SCORE
from hadamard_lit.run_status import COMPLETED, UNFINISHED, observe, slurm_states

RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class Cell:
    scores: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0

    def __str__(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f}" if len(self.scores) > 1 else f"{self.mean:.1f}"


@dataclass(frozen=True)
class Table:
    methods: list[str]
    tasks: list[str]
    cells: dict[tuple[str, str], Cell]
    trainable_percent: dict[str, float]
    #: Runs that ended without a score (failed, stopped, died), with status and error.
    failed: list[dict[str, Any]]
    #: Runs still running or requeued.
    unfinished: list[dict[str, Any]] = field(default_factory=list)
    #: Each task's majority-class score (x100), where the runs logged one.
    majority: dict[str, float] = field(default_factory=dict)
    #: Each task's headline metric, by name (``accuracy``, ``matthews_corrcoef``, ...).
    metric_names: dict[str, str] = field(default_factory=dict)

    def average(self, method: str) -> float | None:
        means = [self.cells[(method, t)].mean for t in self.tasks if (method, t) in self.cells]
        return statistics.fmean(means) if len(means) == len(self.tasks) else None

    def rows(self) -> list[list[str]]:
        header = ["method", "trainable %", *self.tasks, "avg"]
        rows = [header]
        for method in self.methods:
            avg = self.average(method)
            rows.append(
                [
                    method,
                    f"{self.trainable_percent.get(method, math.nan):.4f}",
                    *(str(self.cells.get((method, t), "–")) for t in self.tasks),
                    "–" if avg is None else f"{avg:.1f}",
                ]
            )
        if self.majority:
            values = [self.majority.get(t) for t in self.tasks]
            known = [v for v in values if v is not None]
            rows.append(
                ["majority class", "0", *("–" if v is None else f"{v:.1f}" for v in values),
                 f"{statistics.fmean(known):.1f}" if len(known) == len(values) else "–"]
            )  # fmt: skip
        return rows

    def markdown(self) -> str:
        rows = self.rows()
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        counts = sorted({len(c.scores) for c in self.cells.values()})
        seeds = "/".join(map(str, counts))
        lines += ["", f"Headline score x100, mean ± std over seeds ({seeds} per cell)."]
        for title, runs in (("without results", self.failed), ("not finished", self.unfinished)):
            if runs:
                lines += ["", f"{len(runs)} run(s) {title}:"]
                lines += [
                    f"- {r['run_dir']}: {r.get('status') or 'unknown'} "
                    f"{_first_line(r.get('error'))}".rstrip()
                    for r in runs
                ]
        return "\n".join(lines)


def _first_line(text: Any) -> str:
    return str(text).strip().splitlines()[0] if text else ""


# -- reading runs -----------------------------------------------------------------------------


def _column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name) not in (None, "")]


def read_fit_run(folder: Path) -> dict[str, Any] | None:
    """A plain ``fit`` run's log folder as a results record (``None``: no training in it,
    e.g. a ``validate`` or ``predict`` run's folder)."""
    with (folder / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "train/loss" not in rows[0]:
        return None
    config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    data = (config.get("data") or {}).get("init_args") or {}
    model = (config.get("model") or {}).get("init_args") or {}
    adapter = model.get("adapter") or {}
    test, val = _column(rows, TEST_SCORE), _column(rows, VAL_SCORE)
    metrics: dict[str, float] = {}
    if test:
        metrics[TEST_SCORE] = test[-1]
    if val:
        metrics[VAL_SCORE] = max(val)  # the best validation, as the best checkpoint's
    for stage in ("test", "val"):
        majority = _column(rows, f"{stage}/{MAJORITY}")
        if majority:
            metrics[f"{stage}/{MAJORITY}"] = majority[-1]
    trainable = _column(rows, "trainable_percent")
    return {
        "run_dir": str(folder),
        "status": COMPLETED if metrics else "no score",
        "task": data.get("task") or data.get("dataset"),
        "method": str(adapter.get("class_path", "?")).rsplit(".", 1)[-1],
        "seed": config.get("seed_everything"),
        "metrics": metrics,
        "headline": TEST_SCORE if test else VAL_SCORE,
        "trainable_percent": trainable[0] if trainable else None,
        "source": "metrics.csv",
    }


def find_results(paths: list[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every run under ``paths`` (each a run folder or a folder of them): ``results.json``
    records (their status as it is now) and plain ``fit`` log folders.

    Raises:
        FileNotFoundError: a path does not exist, or no run was found at all.
    """
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"Run folder {str(path)!r} does not exist")
        files = [path] if path.is_file() else sorted(path.rglob(RESULTS_FILE))
        claimed = {file.parent for file in files}
        found += [(file.parent, json.loads(file.read_text())) for file in files]
        if path.is_dir():  # fit log folders that no results.json speaks for
            for config in sorted(path.rglob("config.yaml")):
                folder = config.parent
                if folder in claimed or claimed & set(folder.parents):
                    continue
                if (folder / "metrics.csv").is_file():
                    record = read_fit_run(folder)
                    found += [(folder, record)] if record is not None else []
    if not found:
        raise FileNotFoundError(
            f"No {RESULTS_FILE} and no fit log folder (config.yaml + metrics.csv) under "
            f"{[str(p) for p in paths]}: are these run folders?"
        )
    states = slurm_states(r.get("slurm_job_id") for _, r in found if r.get("status") in UNFINISHED)
    return [(run_dir, observe(record, states)) for run_dir, record in found]


def headline(result: dict[str, Any]) -> float | None:
    metrics = result.get("metrics") or {}
    for key in (result.get("headline"), TEST_SCORE, VAL_SCORE):
        if key and key in metrics and metrics[key] is not None:
            value = float(metrics[key])
            return 100.0 * value if math.isfinite(value) else None
    return None


def _majority(result: dict[str, Any]) -> float | None:
    """The run's majority-class score on the split its headline comes from (x100)."""
    stage = str(result.get("headline") or TEST_SCORE).split("/")[0]
    value = (result.get("metrics") or {}).get(f"{stage}/{MAJORITY}")
    return None if value is None else 100.0 * float(value)


def _trainable_percent(result: dict[str, Any]) -> float | None:
    if result.get("trainable_percent") is not None:
        return float(result["trainable_percent"])
    if result.get("total_params"):
        return 100.0 * result["trainable_params"] / result["total_params"]
    return None


def _row(result: dict[str, Any]) -> str:
    """The table row of a run: its method, and a sweep's other axes (``lora lr=0.001``), so
    that only seeds are averaged in one cell."""
    method = str(result.get("method", "?"))
    others = {k: v for k, v in (result.get("labels") or {}).items() if k not in _NOT_ROWS}
    return " ".join([method, *(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in others.items())])


#: Axes that are not rows: the columns (task), what a cell averages over (seed).
_NOT_ROWS = ("method", "task", "seed")


def build_table(results: list[tuple[Path, dict[str, Any]]]) -> Table:
    """Group runs by (row, task) and average the headline score over seeds (a row is the
    method and any other sweep axis: :func:`_row`)."""
    from hadamard_lit.data.tasks import get_task

    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    trainable: dict[str, list[float]] = defaultdict(list)
    majority: dict[str, float] = {}
    failed: list[dict[str, Any]] = []
    unfinished: list[dict[str, Any]] = []
    methods: list[str] = []
    tasks: list[str] = []
    for run_dir, result in results:
        score = headline(result)
        method, task = _row(result), str(result.get("task", "?"))
        if result.get("status") != COMPLETED or score is None:
            keep = ("status", "error", "method", "task", "seed")
            row = {"run_dir": str(run_dir), **{k: result.get(k) for k in keep}, "method": method}
            (unfinished if result.get("status") in UNFINISHED else failed).append(row)
            continue
        methods += [method] if method not in methods else []
        tasks += [task] if task not in tasks else []
        scores[(method, task)].append(score)
        percent = _trainable_percent(result)
        if percent is not None:
            trainable[method].append(percent)
        base = _majority(result)
        if base is not None:
            majority.setdefault(task, base)
    names = {}
    for task in tasks:
        try:
            spec = get_task(task)
        except ValueError:  # a math dataset, or a label the sweep chose
            names[task] = "score"
            continue
        parts = spec.metric_names
        names[task] = parts[0] if len(parts) == 1 else f"mean of {' and '.join(parts)}"
    return Table(
        methods=methods,
        tasks=tasks,
        cells={k: Cell(tuple(v)) for k, v in scores.items()},
        trainable_percent={m: statistics.fmean(v) for m, v in trainable.items()},
        failed=failed,
        unfinished=unfinished,
        majority=majority,
        metric_names=names,
    )


def write_report(table: Table, output_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv`` and ``report.png`` into ``output_dir``."""
    from hadamard_lit.report_plot import plot_table

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "csv": out / "report.csv", "plot": out / "report.png"}
    paths["markdown"].write_text(table.markdown() + "\n")
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "task", "mean", "std", "n", "trainable_percent", "majority"])
        for (method, task), cell in table.cells.items():
            writer.writerow(
                [
                    method,
                    task,
                    f"{cell.mean:.4f}",
                    f"{cell.std:.4f}",
                    len(cell.scores),
                    f"{table.trainable_percent.get(method, math.nan):.6f}",
                    f"{table.majority.get(task, math.nan):.4f}",
                ]
            )
    plot_table(table, paths["plot"])
    return paths


def report(
    paths: list[str | Path], output_dir: str | Path | None = None
) -> tuple[Table, dict[str, Path]]:
    """Find runs under ``paths``, build the table, write it next to the first path."""
    results = find_results(paths)
    table = build_table(results)
    if not table.cells:
        states = sorted({str(r.get("status")) for _, r in results})
        raise ValueError(
            f"None of the {len(results)} runs under {[str(p) for p in paths]} completed "
            f"(statuses: {', '.join(states)})"
        )
    target = Path(output_dir) if output_dir else Path(paths[0])
    if target.is_file():
        target = target.parent
    return table, write_report(table, target)


def main(argv: list[str] | None = None) -> int:
    """``python -m hadamard_lit report RUN_DIR... [--output DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m hadamard_lit report",
        description="Aggregate runs (a sweep's results.json, or fit log folders) into "
        "methods x tasks, mean ± std over seeds.",
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        help="run folders, or folders holding them (a sweep's, runs/quickstart, ...)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="where to write report.{md,csv,png} (default: the first run dir)",
    )
    args = parser.parse_args(argv)
    try:
        table, paths = report(args.run_dirs, args.output)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    print(table.markdown())
    print(f"\nWrote {paths['markdown']}, {paths['csv']}, {paths['plot']}")
    return 0
