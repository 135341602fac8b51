"""The README's table of supported architectures x methods, generated from the table.

    python -m hadamard_lit.adapters.support            # print it
    python -m hadamard_lit.adapters.support --readme README.md   # rewrite the README's copy

Each cell names the module (last name part) every method adapts by default in that
architecture, from the roles each strategy asks for; a test keeps the README's copy equal
to this output.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from hadamard_lit.adapters.architectures import ARCHITECTURES
from hadamard_lit.adapters.roles import Architecture

BEGIN = "<!-- architectures:begin -->"
END = "<!-- architectures:end -->"


def _cell(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "—"


def row(architecture: Architecture) -> list[str]:
    """The table row of one entry."""
    from hadamard_lit.adapters import IA3, AdaDHP, HadamardAdapter, LoRA

    ia3 = IA3()
    inputs = set(architecture.module_names(ia3.feedforward_roles))
    ia3_names = [
        f"{n} (in)" if n in inputs else n
        for n in architecture.module_names(ia3.roles_for(architecture))
    ]
    hadamard = architecture.module_names(HadamardAdapter().roles_for(architecture))
    norm = architecture.module_names(["norm.post_attention"])
    return [
        f"**{architecture.name}**",
        ", ".join(f"`{t}`" for t in architecture.model_types),
        architecture.kind,
        _cell(architecture.module_names(AdaDHP().roles_for(architecture))),
        _cell(architecture.module_names(LoRA().roles_for(architecture))),
        _cell(ia3_names),
        _cell(hadamard) + (f" + {_cell(norm)}" if norm else ", no norm"),
        architecture.notes,
    ]


def markdown() -> str:
    """The whole table."""
    header = [
        "architecture",
        "`model_type`",
        "kind",
        "AdaDHP",
        "LoRA, HUT",
        "(IA)3 ((in): input scaling)",
        "Hadamard Adapter + norm",
        "notes",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row(a)) + " |" for a in ARCHITECTURES]
    return "\n".join(lines)


def readme_block(text: str) -> str | None:
    """The table between the README's markers (None: no markers)."""
    match = re.search(re.escape(BEGIN) + r"\n(.*?)\n?" + re.escape(END), text, re.S)
    return match.group(1) if match else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hadamard_lit.adapters.support")
    parser.add_argument("--readme", help="rewrite the table between this file's markers")
    args = parser.parse_args(argv)
    table = markdown()
    if args.readme is None:
        print(table)
        return
    path = Path(args.readme)
    text = path.read_text()
    if readme_block(text) is None:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} block")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    path.write_text(pattern.sub(lambda _: f"{BEGIN}\n{table}\n{END}", text))
    print(f"Rewrote the architecture table in {path}")


if __name__ == "__main__":
    main()
