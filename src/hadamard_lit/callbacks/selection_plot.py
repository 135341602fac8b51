"""A picture of an adaptive selection run: which matrices survived, their scores, the schedule.

Three panels: the final score of every adapted module (log scale; a removed module keeps
its score at removal), the step each module was removed at (kept ones blank), both as
layers × module types (``encoder/SelfAttention.q``, ``decoder/DenseReluDense.wo``, ...), and
the budget curve ``n(t)`` with the actual number of active modules after each selection.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hadamard_lit.callbacks.selection_schedule import CubicSchedule


@dataclass(frozen=True)
class SelectionPicture:
    """What the picture shows: every module, its position, score and removal step."""

    modules: list[str]
    positions: dict[str, tuple[str, int, str]]
    scores: dict[str, float]
    removed: dict[str, int]
    schedule: CubicSchedule


class _Pictured(Protocol):
    def picture(self) -> SelectionPicture: ...


_LAYER = re.compile(
    r"^(?P<stack>.*?)\.?(?:block|layer|layers|h)\.(?P<index>\d+)(?:\.(?P<rest>.*))?$"
)
_INNER_LAYER = re.compile(r"^(?:layer|layers)\.\d+\.")


def module_grid(
    names: list[str], positions: dict[str, tuple[str, int, str]] | None = None
) -> tuple[list[str], list[str], dict[str, tuple[int, int]]]:
    """Rows (layer indices), columns (stack/module type) and each name's cell.

    ``encoder.block.3.layer.0.SelfAttention.q`` → row ``3``, column
    ``encoder/SelfAttention.q``; the stack is left out when there is only one. A name
    without a layer index gets row ``-`` and its full name as column. ``positions``
    (name → stack, block index, name inside the block: the architecture table's) is used
    where given; other names are parsed.
    """
    parsed: dict[str, tuple[str, str, str]] = {}
    for name in names:
        if positions and name in positions:
            stack, index, inner = positions[name]
            parsed[name] = (str(index), stack, _INNER_LAYER.sub("", inner))
            continue
        match = _LAYER.match(name)
        if match is None:
            parsed[name] = ("-", "", name)
            continue
        stack = match.group("stack").rpartition(".")[2]
        rest = _INNER_LAYER.sub("", match.group("rest") or "")
        parsed[name] = (match.group("index"), stack, rest)
    stacks = {stack for _, stack, _ in parsed.values() if stack}
    rows: list[str] = []
    cols: list[str] = []
    cells: dict[str, tuple[int, int]] = {}
    for name, (row, stack, kind) in parsed.items():
        col = f"{stack}/{kind}" if len(stacks) > 1 and stack else kind
        if row not in rows:
            rows.append(row)
        if col not in cols:
            cols.append(col)
        cells[name] = (rows.index(row), cols.index(col))
    order = sorted(
        range(len(rows)), key=lambda i: (rows[i] == "-", int(rows[i]) if rows[i] != "-" else 0)
    )
    remap = {old: new for new, old in enumerate(order)}
    rows = [rows[i] for i in order]
    cells = {n: (remap[r], c) for n, (r, c) in cells.items()}
    return rows, cols, cells


def plot_selection(
    selection: SelectionPicture | _Pictured, path: str | Path, last_step: int | None = None
) -> Path:
    """Write the picture of ``selection`` (a :class:`SelectionPicture`, or an attached
    ``AdaptiveSelection``) to ``path``."""
    import matplotlib
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picture = selection if isinstance(selection, SelectionPicture) else selection.picture()
    schedule = picture.schedule
    rows, cols, cells = module_grid(picture.modules, picture.positions)
    scores = picture.scores
    removed = picture.removed

    score_grid = np.full((len(rows), len(cols)), np.nan)
    step_grid = np.full((len(rows), len(cols)), np.nan)
    for name, (r, c) in cells.items():
        score = scores.get(name)
        if score is not None and score > 0:
            score_grid[r, c] = math.log10(score)
        if name in removed:
            step_grid[r, c] = removed[name]

    width = max(4.0, 0.42 * len(cols) + 2.0)
    height = max(3.0, 0.32 * len(rows) + 2.2)
    # The object API with an Agg canvas: no pyplot, no global backend switch.
    fig = Figure(figsize=(2 * width, height + 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplot_mosaic(
        [["score", "step"], ["budget", "budget"]], height_ratios=[height, 3.0]
    )

    ax = axes["score"]
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(score_grid), aspect="auto", cmap=cmap)
    fig.colorbar(image, ax=ax, label="log10 score")
    for name, (r, c) in cells.items():
        if name in removed:
            ax.text(c, r, "×", ha="center", va="center", color="white", fontsize=8)
    ax.set_title("final score (× removed; grey: none)")

    ax = axes["step"]
    steps_cmap = matplotlib.colormaps["magma"].with_extremes(bad="#2ca02c")
    image = ax.imshow(np.ma.masked_invalid(step_grid), aspect="auto", cmap=steps_cmap)
    fig.colorbar(image, ax=ax, label="removed at step")
    ax.set_title(f"removal step (green: kept, {len(picture.modules) - len(removed)})")

    for ax in (axes["score"], axes["step"]):
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(cols, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows, fontsize=7)
        ax.set_ylabel("layer")

    ax = axes["budget"]
    total = schedule.total
    end = max(schedule.t_final + max(1, schedule.t_final // 10), last_step or 0)
    events = sorted(set(removed.values()))
    steps = np.unique(np.concatenate([np.linspace(0, end, 2000).astype(int), events]))
    ax.plot(
        steps,
        [schedule.budget(int(t)) for t in steps],
        drawstyle="steps-post",
        label="budget n(t)",
    )
    if events:
        actual = [total - sum(1 for s in removed.values() if s <= t) for t in events]
        ax.plot(
            [0, *events, end],
            [total, *actual, actual[-1]],
            drawstyle="steps-post",
            alpha=0.7,
            label="active",
        )
        ax.plot(events, actual, "o", markersize=3)
    for step in (schedule.t_init, schedule.t_final):
        ax.axvline(step, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("active modules")
    ax.set_title(
        f"N={total} → n_T={schedule.target}: t_init={schedule.t_init}, "
        f"t_final={schedule.t_final}, ΔT={schedule.delta_t}"
    )
    ax.legend(fontsize=8)

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
