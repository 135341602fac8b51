"""Aggregate finished runs into the paper-style table: methods × tasks, mean ± std over seeds.

Every run folder written by :func:`hadamard_lit.launch.run` holds a ``results.json``; this
module finds them under the folders it is given, groups them by (method, task), and writes
the table as Markdown and CSV plus a bar chart. Scores are the task's headline metric
(``test/score`` when the run was tested, else ``val/score``) times 100, as papers report.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hadamard_lit.metrics import TEST_SCORE, VAL_SCORE

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
    failed: list[dict[str, Any]]

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
        return rows

    def markdown(self) -> str:
        rows = self.rows()
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        if self.failed:
            lines.append("")
            lines.append(f"{len(self.failed)} run(s) without results:")
            lines += [
                f"- {f['run_dir']}: {f.get('status', 'unknown')} {f.get('error', '')}".rstrip()
                for f in self.failed
            ]
        return "\n".join(lines)


def find_results(paths: list[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``results.json`` under ``paths`` (each a run folder or a folder of them).

    Raises:
        FileNotFoundError: a path does not exist, or no results were found at all.
    """
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"Run folder {str(path)!r} does not exist")
        files = [path] if path.is_file() else sorted(path.rglob(RESULTS_FILE))
        for file in files:
            found.append((file.parent, json.loads(file.read_text())))
    if not found:
        raise FileNotFoundError(
            f"No {RESULTS_FILE} under {[str(p) for p in paths]}: are the runs finished?"
        )
    return found


def headline(result: dict[str, Any]) -> float | None:
    metrics = result.get("metrics") or {}
    for key in (result.get("headline"), TEST_SCORE, VAL_SCORE):
        if key and key in metrics and metrics[key] is not None:
            return 100.0 * float(metrics[key])
    return None


def build_table(results: list[tuple[Path, dict[str, Any]]]) -> Table:
    """Group runs by (method, task) and average the headline score over seeds."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    trainable: dict[str, list[float]] = defaultdict(list)
    failed: list[dict[str, Any]] = []
    methods: list[str] = []
    tasks: list[str] = []
    for run_dir, result in results:
        score = headline(result)
        if result.get("status") != "completed" or score is None:
            failed.append(
                {"run_dir": str(run_dir), **{k: result.get(k) for k in ("status", "error")}}
            )
            continue
        method, task = str(result.get("method", "?")), str(result.get("task", "?"))
        methods += [method] if method not in methods else []
        tasks += [task] if task not in tasks else []
        scores[(method, task)].append(score)
        if result.get("total_params"):
            trainable[method].append(100.0 * result["trainable_params"] / result["total_params"])
    return Table(
        methods=methods,
        tasks=tasks,
        cells={k: Cell(tuple(v)) for k, v in scores.items()},
        trainable_percent={m: statistics.fmean(v) for m, v in trainable.items()},
        failed=failed,
    )


def write_report(table: Table, output_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv`` and ``report.png`` into ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "csv": out / "report.csv", "plot": out / "report.png"}
    paths["markdown"].write_text(table.markdown() + "\n")
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "task", "mean", "std", "n", "trainable_percent"])
        for (method, task), cell in table.cells.items():
            writer.writerow(
                [
                    method,
                    task,
                    f"{cell.mean:.4f}",
                    f"{cell.std:.4f}",
                    len(cell.scores),
                    f"{table.trainable_percent.get(method, math.nan):.6f}",
                ]
            )
    _plot(table, paths["plot"])
    return paths


def _plot(table: Table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(table.methods))
    fig, ax = plt.subplots(
        figsize=(max(5.0, 1.2 * len(table.tasks) * max(1, len(table.methods)) ** 0.5), 3.5)
    )
    for i, method in enumerate(table.methods):
        xs, means, stds = [], [], []
        for j, task in enumerate(table.tasks):
            if (method, task) in table.cells:
                cell = table.cells[(method, task)]
                xs.append(j + i * width)
                means.append(cell.mean)
                stds.append(cell.std)
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=method)
    ax.set_xticks([j + width * (len(table.methods) - 1) / 2 for j in range(len(table.tasks))])
    ax.set_xticklabels(table.tasks)
    ax.set_ylabel("headline score (x100)")
    ax.legend(fontsize="small", ncols=min(4, len(table.methods)))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(
    paths: list[str | Path], output_dir: str | Path | None = None
) -> tuple[Table, dict[str, Path]]:
    """Find runs under ``paths``, build the table, write it next to the first path."""
    results = find_results(paths)
    table = build_table(results)
    if not table.cells:
        raise ValueError(
            f"None of the {len(results)} runs under {[str(p) for p in paths]} completed"
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
        description="Aggregate finished runs (their results.json) into methods x tasks, mean ± std over seeds.",
    )
    parser.add_argument(
        "run_dirs", nargs="+", help="run folders, or folders holding them (e.g. a sweep's)"
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
