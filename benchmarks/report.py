"""Tables, target checks and the chart for ``benchmarks.step_time`` results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.setups import CONFIGS

#: The issue's targets, as (what, threshold).
STEP_TARGET = 1.08  # AdaDHP step / floor step
MEMORY_TARGET = 1.15  # AdaDHP peak memory / floor's
MERGED_TARGET = 1.01  # merged inference / plain backbone
#: The merged-inference noise control: an identical deep copy of the plain backbone.
CONTROL = "plain-copy"


def _f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def _rows(entry: dict[str, Any], names: list[str]) -> list[list[str]]:
    rows = []
    training = entry.get("training", {})
    memory = entry.get("memory", {})
    for name in names:
        t = training.get(name)
        if t is None:
            continue
        m = memory.get(name, {})
        vs_peft = f"{t['cpu_vs_peft']:.2f}x {t['peft_ref']}" if "cpu_vs_peft" in t else "-"
        rows.append(
            [
                CONFIGS[name].label,
                f"{t['trainable']:,}",
                _f(t["cpu_s"], 3),
                _f(t["cpu_ratio"], 2, "x"),
                vs_peft,
                _f(t["wall_s"], 3),
                _f(m.get("growth_mib"), 0),
                _f(m.get("growth_ratio"), 2, "x"),
                _f(m.get("saved_mib"), 0),
                _f(m.get("total_ratio"), 2, "x") if "total_ratio" in m else m.get("error", "-"),
            ]
        )
    return rows


HEADER = [
    "configuration",
    "trainable",
    "step s (CPU)",
    "x floor",
    "vs peft",
    "step s (wall)",
    "peak MiB",
    "x floor",
    "saved MiB",
    "total RSS x floor",
]


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, "-" * len(line), *body])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _merged_rows(entry: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, m in entry.get("merged", {}).items():
        if name in ("plain", CONTROL):
            label = "plain backbone" if name == "plain" else "plain backbone, a copy (control)"
        else:
            label = f"{CONFIGS[name].label}, merged"
        rows.append(
            [
                label,
                _f(m["cpu_s"], 4),
                _f(m["cpu_ratio"], 3, "x"),
                _f(m["wall_ratio"], 3, "x"),
                m.get("structure", "-"),
            ]
        )
    return rows


MERGED_HEADER = ["inference (no grad)", "forward s (CPU)", "x plain", "x plain (wall)", "check"]


def backbone_table(name: str, entry: dict[str, Any], names: list[str]) -> str:
    parts = [
        f"\n{name}: {entry['description']}, batch {entry['shape']}",
        _text_table(HEADER, _rows(entry, names)),
    ]
    if entry.get("merged"):
        parts += ["", _text_table(MERGED_HEADER, _merged_rows(entry))]
    return "\n".join(parts)


def _scaling_rows(scaling: dict[str, Any]) -> list[list[str]]:
    rows = []
    for tokens, r in scaling.items():
        floor = r["floor"]["cpu_s"]
        lora, hut = r["lora-r8"], r["hut"]
        rows.append(
            [
                tokens,
                f"{r['batch']} x {r['seq']}",
                _f(floor, 3),
                _f(lora["cpu_ratio"], 3, "x"),
                _f(hut["cpu_ratio"], 3, "x"),
                _f((lora["cpu_s"] - floor) * 1e3, 0),
                _f((hut["cpu_s"] - floor) * 1e3, 0),
            ]
        )
    return rows


SCALING_HEADER = [
    "tokens",
    "batch",
    "floor s",
    "LoRA x floor",
    "HUT x floor",
    "LoRA extra ms",
    "HUT extra ms",
]


def scaling_table(scaling: dict[str, Any]) -> str:
    return _text_table(SCALING_HEADER, _scaling_rows(scaling))


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target per backbone: the measured figure and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(backbone: str, what: str, value: float | None, limit: float, strict: bool = False):
        if value is None:
            return
        met = value < limit if strict else value <= limit
        out.append(
            {"backbone": backbone, "target": what, "value": value, "limit": limit, "met": met}
        )

    for name, entry in results["backbones"].items():
        t = entry.get("training", {})
        m = entry.get("memory", {})
        ada = t.get("adadhp", {})
        add(name, "AdaDHP step / floor step <= 1.08", ada.get("cpu_ratio"), STEP_TARGET)
        add(
            name,
            "AdaDHP peak memory / floor's <= 1.15",
            m.get("adadhp", {}).get("growth_ratio"),
            MEMORY_TARGET,
        )
        add(name, "AdaDHP step / peft LoRA r=1 step < 1", ada.get("cpu_vs_peft"), 1.0, True)
        for ours in ("lora-r8", "lora-r1"):
            add(
                name,
                f"our {CONFIGS[ours].label} / peft's <= 1",
                t.get(ours, {}).get("cpu_vs_peft"),
                1.0,
            )
        merged = {k: v for k, v in entry.get("merged", {}).items() if k not in ("plain", CONTROL)}
        if merged:
            worst = max(merged, key=lambda k: merged[k]["cpu_ratio"])
            control = entry["merged"].get(CONTROL, {}).get("cpu_ratio")
            seen = "" if control is None else f"; an identical copy reads {control:.3f}"
            add(
                name,
                f"merged inference / plain <= 1.01 (worst: {worst}{seen})",
                merged[worst]["cpu_ratio"],
                MERGED_TARGET,
            )
    return out


def targets_table(rows: list[dict[str, Any]]) -> str:
    body = [
        [r["backbone"], r["target"], f"{r['value']:.3f}", "met" if r["met"] else "NOT met"]
        for r in rows
    ]
    return "\n" + _text_table(["backbone", "target", "measured", ""], body)


def markdown(results: dict[str, Any], names: list[str]) -> str:
    mach = results["machine"]
    s = results["settings"]
    lines = [
        "# Step time and peak memory per method",
        "",
        f"Machine: {mach['cpu']}, {mach['logical_cpus']} logical CPUs (shared), "
        f"torch {mach['torch']} with {s['threads']} intra-op thread(s), transformers "
        f"{mach['transformers']}, peft {mach['peft']}. {s['repeats']} timed rounds after "
        f"{s['warmup']} warm-up round(s), configurations interleaved round-robin in one "
        f"process; step time is {s['clock']}; ratios are medians of per-round ratios. "
        f"Run took {results.get('elapsed_s', 0) / 60:.1f} min.",
        "",
        "Peak MiB: peak RSS growth during one training step over the RSS just before it "
        "(model, AdamW state already allocated), one process per configuration, glibc "
        "serving every tensor >= 64 KiB by mmap. Saved MiB: distinct storages autograd "
        "keeps for the backward (exact). Total RSS: the whole process's peak, libraries "
        "and weights included.",
    ]
    if results.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items())]
    for name, entry in results["backbones"].items():
        lines += [
            "",
            f"## {name}: {entry['description']}, batch {entry['shape']}",
            "",
            _md_table(HEADER, _rows(entry, names)),
        ]
        if entry.get("merged"):
            lines += ["", _md_table(MERGED_HEADER, _merged_rows(entry))]
    if results.get("scaling"):
        lines += [
            "",
            "## HUT vs LoRA as tokens per batch grow (MiniLM, r=8 on query/value)",
            "",
            _md_table(SCALING_HEADER, _scaling_rows(results["scaling"])),
        ]
    if results.get("targets"):
        body = [
            [r["backbone"], r["target"], f"{r['value']:.3f}", "met" if r["met"] else "**not met**"]
            for r in results["targets"]
        ]
        lines += ["", "## Targets", "", _md_table(["backbone", "target", "measured", ""], body)]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = results["backbones"]
    if not entries:
        return
    fig, axes = plt.subplots(1, len(entries), figsize=(5.2 * len(entries), 5.5), squeeze=False)
    colours = {"baseline": "#888888", "ours": "#1f77b4", "reference": "#9ecae1", "peft": "#ff7f0e"}
    for ax, (name, entry) in zip(axes[0], entries.items(), strict=True):
        training = entry["training"]
        shown = [n for n in names if n in training]
        values = [training[n]["cpu_s"] for n in shown]
        ax.barh(range(len(shown)), values, color=[colours[CONFIGS[n].group] for n in shown])
        ax.set_yticks(range(len(shown)), [CONFIGS[n].label for n in shown], fontsize=8)
        ax.invert_yaxis()
        floor = training["floor"]["cpu_s"]
        ax.axvline(floor, color="k", lw=0.8, ls="--")
        ax.axvline(floor * STEP_TARGET, color="r", lw=0.8, ls=":")
        for i, n in enumerate(shown):
            ax.text(values[i], i, f" {training[n]['cpu_ratio']:.2f}x", va="center", fontsize=7)
        ax.set_xlabel("step time, s (CPU)  --- floor, : 1.08x floor")
        ax.set_title(f"{name} ({entry['shape']})", fontsize=10)
    fig.suptitle("Training step time per method (ratio to the frozen floor)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
