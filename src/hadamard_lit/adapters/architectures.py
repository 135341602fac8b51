"""The architecture table: which module plays which role, per transformers model family.

One :class:`~hadamard_lit.adapters.roles.Architecture` per family, read from
``architectures.yaml`` beside this file; every strategy's defaults, the Hadamard
Adapter's norms, layer indices, FSDP2 units and the default task head come from it. To
support another family, add one entry there (the README says how); its tiny test models
are built from ``model_types`` (and ``test_config``/``test_variants``) and run through every
method's tests without editing them.

A model whose ``model_type`` is not here gets its roles detected from its module names
(:mod:`hadamard_lit.adapters.detection`), or a clear error listing its linear layers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from hadamard_lit.adapters.roles import Architecture

log = logging.getLogger(__name__)

#: The table itself (package data): one YAML entry per family.
TABLE_FILE = Path(__file__).with_name("architectures.yaml")


def _pattern(value: Any) -> str | tuple[str, ...]:
    return tuple(value) if isinstance(value, list) else str(value)


def entry(name: str, fields: dict[str, Any]) -> Architecture:
    """One table entry as an :class:`Architecture` (YAML lists become tuples).

    Raises:
        ValueError: a field the entry does not know, or an unknown role.
    """
    known = {
        "model_types", "kind", "blocks", "roles", "pooler", "head", "notes",
        "config_variants", "test_config", "test_variants",
    }  # fmt: skip
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"Architecture table entry {name!r}: unknown fields {unknown}")
    variants = tuple(
        (dict(v["if"]), {role: _pattern(p) for role, p in v["roles"].items()})
        for v in fields.get("config_variants", ())
    )
    return Architecture(
        name=name,
        model_types=tuple(fields["model_types"]),
        kind=fields["kind"],
        blocks=tuple(fields["blocks"]),
        roles={role: _pattern(p) for role, p in fields["roles"].items()},
        pooler=fields.get("pooler"),
        head=tuple(fields.get("head", ())),
        notes=" ".join(str(fields.get("notes", "")).split()),
        config_variants=variants,
        test_config=dict(fields.get("test_config", {})),
        test_variants={k: dict(v) for k, v in fields.get("test_variants", {}).items()},
    )


def load_table(path: Path = TABLE_FILE) -> tuple[Architecture, ...]:
    """Every entry of the table file, in its order."""
    table = yaml.safe_load(path.read_text())
    return tuple(entry(str(name), fields) for name, fields in table.items())


ARCHITECTURES: tuple[Architecture, ...] = load_table()

_BY_MODEL_TYPE: dict[str, Architecture] = {t: a for a in ARCHITECTURES for t in a.model_types}


def supported_model_types() -> list[str]:
    """Every ``model_type`` with a table entry."""
    return sorted(_BY_MODEL_TYPE)


def get_architecture(model_type: str) -> Architecture | None:
    """The table entry for ``model_type`` (None: not in the table)."""
    return _BY_MODEL_TYPE.get(model_type)


def architecture_of(model: nn.Module) -> Architecture:
    """The architecture of ``model``: its table entry, or roles detected from its modules.

    Raises:
        ValueError: not in the table and its module names do not say which layer is which
            (the message lists its linear layers and the ``target_modules`` to pass).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    found = _BY_MODEL_TYPE.get(str(model_type))
    if found is not None:
        return found
    cached = model.__dict__.get("_hadamard_lit_architecture")
    if cached is not None:
        return cached
    from hadamard_lit.adapters.detection import detect_architecture

    detected = detect_architecture(model)
    model.__dict__["_hadamard_lit_architecture"] = detected
    return detected


def block_positions(model: nn.Module, names: list[str]) -> dict[str, tuple[str, int, str]]:
    """Each module name's (stack, block index, name inside the block), where the table or
    the detection knows ``model``'s blocks (``{}`` where neither does)."""
    try:
        architecture = architecture_of(model)
    except ValueError:
        return {}
    positions = {}
    for name in names:
        block = architecture.block_of(model, name)
        if block is not None:
            positions[name] = (block.stack, block.index, name[len(block.name) + 1 :])
    return positions
