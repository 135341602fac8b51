"""``report.png``: a panel per task, so every method's seeds can be seen and compared.

In each panel: a method per column, labelled with its trainable share of the
parameters; every seed a dot, the mean a bar (its value written above); the task's
majority-class score a dashed line (what predicting one label gets); runs of that task
and method that did not complete as red crosses on the floor, counted in the label.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hadamard_lit.report import Table

#: Panels per row.
COLUMNS = 3


def _label(table: Table, method: str, failed: int) -> str:
    percent = table.trainable_percent.get(method)
    share = "" if percent is None else f"\n{percent:.3g}%"
    return f"{method}{share}" + (f"\n{failed} failed" if failed else "")


def _panel(ax: Any, table: Table, task: str, colors: list[str]) -> None:
    """One task: seeds as dots, their mean as a bar across them, on an axis zoomed to the
    scores and the majority line (differences of a point or two must be visible)."""
    values: list[float] = []
    labels = []
    for x, method in enumerate(table.methods):
        color = colors[x % len(colors)]
        cell = table.cells.get((method, task))
        if cell is not None:
            n = len(cell.scores)
            offsets = [0.12 * (i - (n - 1) / 2) for i in range(n)]
            ax.scatter([x + o for o in offsets], cell.scores, color=color, s=20, zorder=3)
            ax.hlines(cell.mean, x - 0.3, x + 0.3, color=color, linewidth=2.5, zorder=2)
            ax.annotate(f"{cell.mean:.1f}", (x + 0.3, cell.mean), xytext=(2, 0),
                        textcoords="offset points", va="center", fontsize=7)  # fmt: skip
            values += cell.scores
        failed = [r for r in table.failed if r.get("task") == task and r.get("method") == method]
        if failed:  # on the panel's floor, whatever its scale
            ax.scatter([x] * len(failed), [0.04] * len(failed), marker="x", color="red", s=45,
                       zorder=4, transform=ax.get_xaxis_transform(), clip_on=False)  # fmt: skip
        labels.append(_label(table, method, len(failed)))
    majority = table.majority.get(task)
    if majority is not None:
        ax.axhline(majority, color="0.35", linestyle="--", linewidth=1)
        ax.annotate(f"majority class {majority:.1f}", (-0.55, majority), xytext=(0, 2),
                    textcoords="offset points", fontsize=7, color="0.35")  # fmt: skip
        values.append(majority)
    if values:
        low, high = min(values), max(values)
        pad = max(1.0, 0.12 * (high - low))
        ax.set_ylim(low - pad, high + pad)
    ax.set_xticks(range(len(table.methods)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_xlim(-0.6, len(table.methods) - 0.2)
    metric = table.metric_names.get(task, "score")
    ax.set_title(f"{task}", fontsize=10)
    ax.set_ylabel(f"{metric} (x100)", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot_table(table: Table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = table.tasks
    rows = math.ceil(len(tasks) / COLUMNS)
    columns = min(COLUMNS, len(tasks))
    width = max(3.2, 0.9 * len(table.methods) + 1.2)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, 3.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    seeds = sorted({len(c.scores) for c in table.cells.values()})
    for index, ax in enumerate(axes.flat):
        if index >= len(tasks):
            ax.set_visible(False)
            continue
        _panel(ax, table, tasks[index], colors)
    title = (
        f"Headline score per task: dots are seeds ({'/'.join(map(str, seeds))} per method), "
        "a bar their mean, dashed the majority class, x a run that did not complete"
    )
    # Wrapped to the figure's width (about 11 characters an inch at this size).
    fig.suptitle(textwrap.fill(title, int(11 * width * columns)), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
