"""The quality benchmark's table, significance notes, targets and plot, from its run records.

:func:`write_all` (``python -m benchmarks.quality report``) reads every run's
``results.json`` and writes ``report.md`` (also pasted between the README's
``quality-table`` markers with ``--readme``), ``report.csv`` and ``score_vs_params.png``.
A method's score on a task is the test score of its chosen learning rate
(``configs/quality/learning_rates.yaml``) at seeds 0, 1 and 2: mean ± sample std.

"Within noise": two methods' per-seed differences (same seed, same task) fail a paired
two-sided t-test at 95% (|t| < t_crit for n − 1 degrees of freedom; with 3 seeds
t_crit = 4.30). Such pairs are not ranked.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Two-sided 95% critical values of Student's t, by degrees of freedom.
T_CRITICAL_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365}
README_BEGIN = "<!-- quality-table:begin -->"
README_END = "<!-- quality-table:end -->"


@dataclass(frozen=True)
class Cell:
    """One method on one task: test scores (x100) by seed, trainable parameters."""

    scores: dict[int, float]
    trainable: int
    total: int

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores.values())

    @property
    def std(self) -> float:
        return statistics.stdev(self.scores.values()) if len(self.scores) > 1 else 0.0

    def __str__(self) -> str:
        seeds = "" if len(self.scores) == 3 else f" (n={len(self.scores)})"
        return f"{self.mean:.1f} ± {self.std:.1f}{seeds}"


def score_of(result: dict[str, Any]) -> float | None:
    value = (result.get("metrics") or {}).get("test/score")
    if result.get("status") != "completed" or value is None or not math.isfinite(float(value)):
        return None
    return 100.0 * float(value)


def cells(records: list[dict[str, Any]], chosen: dict[str, float]) -> dict[tuple[str, str], Cell]:
    """(method key, task) → the chosen lr's scores over seeds."""
    scores: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    params: dict[tuple[str, str], tuple[int, int]] = {}
    for r in records:
        method, task = r.get("method_key"), r.get("task")
        lr = chosen.get(str(method))
        score = score_of(r)
        if lr is None or score is None or not math.isclose(float(r["lr"]), lr):
            continue
        scores[(method, task)][int(r["seed"])] = score
        params[(method, task)] = (int(r["trainable_params"]), int(r["total_params"]))
    return {k: Cell(v, *params[k]) for k, v in scores.items()}


def paired(a: Cell, b: Cell) -> tuple[float, float, int, bool] | None:
    """Mean and std of ``a − b`` over shared seeds, their count, and whether it is noise."""
    seeds = sorted(set(a.scores) & set(b.scores))
    if len(seeds) < 2:
        return None
    diffs = [a.scores[s] - b.scores[s] for s in seeds]
    return _paired_stats(diffs)


def _paired_stats(diffs: list[float]) -> tuple[float, float, int, bool]:
    mean = statistics.fmean(diffs)
    std = statistics.stdev(diffs)
    n = len(diffs)
    if std == 0.0:
        return mean, std, n, mean == 0.0
    t = mean / (std / math.sqrt(n))
    return mean, std, n, abs(t) < T_CRITICAL_95.get(n - 1, 1.96)


def average_cell(
    table: dict[tuple[str, str], Cell], method: str, tasks: Sequence[str]
) -> Cell | None:
    """The mean over ``tasks``, per seed (only seeds that every task has)."""
    parts = [table.get((method, t)) for t in tasks]
    if any(p is None for p in parts):
        return None
    present = [p for p in parts if p is not None]
    seeds = set.intersection(*(set(p.scores) for p in present))
    if not seeds:
        return None
    per_seed = {s: statistics.fmean(p.scores[s] for p in present) for s in sorted(seeds)}
    return Cell(per_seed, present[0].trainable, present[0].total)


def _lr_text(method: str, lr: float, grids: dict[str, Sequence[float]]) -> str:
    grid = sorted(grids.get(method, ()))
    edge = (
        " (grid top)"
        if grid and lr == grid[-1]
        else " (grid bottom)"
        if grid and lr == grid[0]
        else ""
    )
    return f"{lr:g}{edge}"


def markdown(
    records: list[dict[str, Any]],
    methods: Sequence[str],
    tasks: Sequence[str],
    chosen: dict[str, float],
    labels: dict[str, str],
    grids: dict[str, Sequence[float]],
    parts: list[dict[str, Any]] | None = None,
) -> str:
    """The whole report: scores, learning rates, noise, targets, wall time."""
    table = cells(records, chosen)
    rows = [m for m in methods if any((m, t) in table for t in tasks)]
    lines = [
        "| method | trainable | % | " + " | ".join(tasks) + " | avg |",
        "|---|---|---|" + "---|" * (len(tasks) + 1),
    ]
    for m in rows:
        some = next(table[(m, t)] for t in tasks if (m, t) in table)
        avg = average_cell(table, m, tasks)
        lines.append(
            f"| {labels[m]} | {some.trainable:,} | {100 * some.trainable / some.total:.3f} | "
            + " | ".join(str(table.get((m, t), "–")) for t in tasks)
            + f" | {'–' if avg is None else f'{avg.mean:.1f}'} |"
        )
    from benchmarks.quality import SEARCH_TASKS

    lines += ["", "Learning rates, chosen per method on the mean validation score (seed 0) over "
              f"{', '.join(SEARCH_TASKS)}:", ""]  # fmt: skip
    lines += ["| method | grid | chosen |", "|---|---|---|"]
    for m in rows:
        grid = ", ".join(f"{lr:g}" for lr in grids.get(m, ()))
        lines.append(f"| {labels[m]} | {grid} | {_lr_text(m, chosen[m], grids)} |")
    lines += ["", *noise_notes(table, rows, tasks, labels), "", *target_notes(table, tasks)]
    parts = [p for p in parts or [] if p["runs"]]
    if parts:
        total = sum(p["wall_seconds"] for p in parts)
        lines += ["", f"Wall time: {total / 3600:.1f} h in {len(parts)} part(s): " + "; ".join(
            f"{p['phase']} {p['part']} {p['wall_seconds'] / 60:.0f} min ({p['runs']} runs)"
            for p in parts
        ) + "."]  # fmt: skip
    return "\n".join(lines)


def noise_notes(
    table: dict[tuple[str, str], Cell], rows: Sequence[str], tasks: Sequence[str],
    labels: dict[str, str],
) -> list[str]:  # fmt: skip
    """Per task: the best method and every method within noise of it."""
    notes = ["Within noise of the best (paired t-test over seeds, 95%; not ranked):", ""]
    for task in [*tasks, "avg"]:
        present = {
            m: (average_cell(table, m, tasks) if task == "avg" else table.get((m, task)))
            for m in rows
        }
        present = {m: c for m, c in present.items() if c is not None}
        if not present:
            continue
        best = max(present, key=lambda m: present[m].mean)
        tied = []
        for m, cell in present.items():
            if m == best:
                continue
            stats = paired(cell, present[best])
            if stats is not None and stats[3]:
                tied.append(f"{labels[m]} ({stats[0]:+.1f} ± {stats[1]:.1f})")
        others = (
            f"; within noise: {', '.join(tied)}" if tied
            else "; every other method is below it" if len(present) > 1 else " (the only method)"
        )  # fmt: skip
        notes.append(f"- {task}: best {labels[best]} {present[best].mean:.1f}{others}")
    return notes


def target_notes(table: dict[tuple[str, str], Cell], tasks: Sequence[str]) -> list[str]:
    """The issue's two targets, stated plainly from the measured numbers."""
    notes = ["Targets:", ""]
    sel, full = table.get(("adadhp_sel", "sst2")), table.get(("full", "sst2"))
    if sel and full:
        gap = sel.mean - full.mean
        share = 100 * sel.trainable / sel.total
        met = gap >= -0.5 and share <= 0.2
        stats = paired(sel, full)
        spread = "" if stats is None else f", per seed {stats[0]:+.1f} ± {stats[1]:.1f}"
        notes.append(
            f"- AdaDHP + selection on SST-2 within 0.5 points of full fine-tuning at <= 0.2% of "
            f"the parameters: {sel.mean:.1f} vs {full.mean:.1f} ({gap:+.1f}{spread}) at "
            f"{share:.3f}%: **{'met' if met else 'not met'}**."
        )
    ours, lora = average_cell(table, "adadhp", tasks), average_cell(table, "lora_r1", tasks)
    if ours and lora:
        stats = paired(ours, lora)
        verdict = "met" if ours.mean >= lora.mean else (
            "not met, but within noise" if stats and stats[3] else "not met"
        )  # fmt: skip
        spread = "" if stats is None else f", per seed {stats[0]:+.1f} ± {stats[1]:.1f}"
        notes.append(
            f"- AdaDHP no worse than LoRA r=1 on the same matrices (equal parameters), average "
            f"over the {len(tasks)} tasks: {ours.mean:.1f} vs {lora.mean:.1f}{spread}: "
            f"**{verdict}**."
        )
    if len(notes) == 2:
        notes.append("- not computed: they need AdaDHP + selection and full FT on SST-2, and "
                     "AdaDHP and LoRA r=1 on every task")  # fmt: skip
    return notes


def write_csv(path: Path, table: dict[tuple[str, str], Cell], labels: dict[str, str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "task", "mean", "std", "n", "trainable_params", "seeds"])
        for (m, t), cell in table.items():
            seeds = ";".join(f"{s}:{v:.2f}" for s, v in sorted(cell.scores.items()))
            writer.writerow([labels[m], t, f"{cell.mean:.2f}", f"{cell.std:.2f}",
                             len(cell.scores), cell.trainable, seeds])  # fmt: skip


def plot(path: Path, table: dict[tuple[str, str], Cell], methods: Sequence[str],
         tasks: Sequence[str], labels: dict[str, str]) -> None:  # fmt: skip
    """Test score against trainable parameters (log x), one panel per task and the average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*tasks, "avg"]
    columns = 3
    rows = math.ceil((len(panels) + 1) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.5 * rows), squeeze=False)
    flat = list(axes.flat)
    colours, markers = plt.get_cmap("tab10"), "osD^v<>Pp*"
    for ax, task in zip(flat, panels, strict=False):
        for i, m in enumerate(methods):
            cell = average_cell(table, m, tasks) if task == "avg" else table.get((m, task))
            if cell is None:
                continue
            ax.errorbar(cell.trainable, cell.mean, yerr=cell.std, marker=markers[i % 10],
                        color=colours(i % 10), markersize=7, capsize=3, linestyle="none",
                        label=labels[m])  # fmt: skip
            for score in cell.scores.values():
                ax.plot(cell.trainable, score, ".", color=colours(i % 10), alpha=0.4)
        ax.set_xscale("log")
        ax.set_title("average over tasks" if task == "avg" else task)
        ax.set_xlabel("trainable parameters (log)")
        ax.set_ylabel("test score (x100)")
        ax.grid(True, alpha=0.3)
    handles, names = flat[0].get_legend_handles_labels()
    for ax in flat[len(panels) :]:
        ax.axis("off")
    flat[len(panels)].legend(handles, names, loc="center", frameon=False,
                             title="mean ± std over 3 seeds (dots: seeds)")  # fmt: skip
    fig.suptitle("MiniLM-L6 on GLUE: test score vs trainable parameters (lr chosen on validation)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replace_readme_block(readme: Path, block: str) -> None:
    """Put ``block`` between the README's quality-table markers."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {README_BEGIN} ... {README_END} block to rewrite")
    readme.write_text(pattern.sub(lambda _: f"{README_BEGIN}\n{block}\n{README_END}", text))


def write_all(output: Path, records: list[dict[str, Any]], methods: Sequence[str],
              tasks: Sequence[str], chosen: dict[str, float],
              readme: Path | None = None) -> str:  # fmt: skip
    """Write report.md, report.csv and score_vs_params.png (and the README block)."""
    from benchmarks.quality import METHODS, RECORD_FILE, _read_json

    labels = {m: METHODS[m].label for m in METHODS}
    grids = {m: METHODS[m].lrs for m in METHODS}
    parts = _read_json(output / RECORD_FILE).get("parts")
    text = markdown(records, methods, tasks, chosen, labels, grids, parts)
    table = cells(records, chosen)
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.md").write_text(text + "\n")
    write_csv(output / "report.csv", table, labels)
    plot(output / "score_vs_params.png", table, methods, tasks, labels)
    if readme is not None:
        replace_readme_block(readme, text)
    print(text)
    print(f"\nWrote {output}/report.md, report.csv, score_vs_params.png"
          + (f" and the table in {readme}" if readme else ""))  # fmt: skip
    return text
