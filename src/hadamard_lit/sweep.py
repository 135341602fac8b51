"""Sweep files: grid axes over a run config, expanded into one CLI invocation per point.

A sweep file is YAML::

    name: t5_glue                    # the sweep's folder under --output_dir
    grid:
      task: [cola, sst2, mrpc]       # a list: values of data.init_args.task
      seed: [0, 1, 2]                # a list: values of seed_everything
      method:                        # a mapping: named config fragments, stacked in order
        adadhp: configs/method/adadhp.yaml
        lora: configs/method/lora.yaml
      model.init_args.optimizer.init_args.lr: [1.0e-3, 3.0e-3]   # any dotted config key
    per_task:                        # optional: overrides applied where task == key
      cola: {model.init_args.optimizer.init_args.lr: 7.0e-3}

An axis given as a list sets a config key (``task`` and ``seed`` are short for
``data.init_args.task`` and ``seed_everything``); an axis given as a mapping stacks the
named config file after the run config (so a ``task`` mapping can point at per-task
recipes). Every combination is one grid point, with its own run folder named from its
values (``task=cola,method=lora,seed=0``, made filesystem-safe), so no two points write
to the same place. Relative config paths resolve against the sweep file's folder first,
then the current directory.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Short names for the config keys sweeps use most.
AXIS_ALIASES = {"task": "data.init_args.task", "seed": "seed_everything"}


@dataclass(frozen=True)
class GridPoint:
    """One run of a sweep.

    Attributes:
        values: the axis values of this point, by axis name as written in the sweep file.
        overrides: dotted config key → value, applied after the config files.
        configs: config files to stack after the run config (from mapping axes).
    """

    values: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    configs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """A filesystem-safe, unique-per-sweep folder name, e.g. ``task=cola,method=lora,seed=0``."""
        parts = [f"{_short(axis)}={value}" for axis, value in self.values.items()]
        return re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(parts)) or "run"

    def cli_args(self, extra: Sequence[str] = ()) -> list[str]:
        """The arguments after ``--config RUN.yaml`` that make this point: its configs,
        then ``extra`` (``submit``'s overrides for every point), then its own values."""
        args: list[str] = []
        for config in self.configs:
            args += ["--config", config]
        args += extra
        for key, value in self.overrides.items():
            args.append(f"--{key}={_yaml_scalar(value)}")
        return args


@dataclass(frozen=True)
class Sweep:
    name: str
    points: list[GridPoint]
    source: Path | None = None


def _short(axis: str) -> str:
    return axis.rsplit(".", 1)[-1] if axis not in AXIS_ALIASES else axis


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _resolve_config(path: str, base: Path | None) -> str:
    candidates = [Path(path)] if Path(path).is_absolute() else []
    if base is not None and not candidates:
        candidates.append(base / path)
    candidates.append(Path(path))
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"Sweep method config {path!r} not found (tried {tried})")


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep file.

    Raises:
        ValueError: the file has no ``grid``, an axis has no values, or ``per_task``
            names a task that is not on the ``task`` axis.
        FileNotFoundError: a method config does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Sweep file {str(path)!r} does not exist")
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"Sweep file {path} must be a mapping with a 'grid' key")
    return expand(spec, base=path.parent, default_name=path.stem, source=path)


def expand(
    spec: dict[str, Any],
    base: Path | None = None,
    default_name: str = "sweep",
    source: Path | None = None,
) -> Sweep:
    """Expand a parsed sweep spec (see the module docstring) into grid points."""
    unknown = set(spec) - {"name", "grid", "per_task"}
    if unknown:
        raise ValueError(f"Unknown sweep keys {sorted(unknown)}: valid are name, grid, per_task")
    grid = spec.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ValueError("A sweep needs a non-empty 'grid' mapping of axis → list of values")
    axes: list[tuple[str, bool, list[tuple[str, Any]]]] = []  # (axis, is_config, values)
    for axis, values in grid.items():
        if isinstance(values, dict) and values:
            named = [(str(name), _resolve_config(str(cfg), base)) for name, cfg in values.items()]
            axes.append((axis, True, named))
        elif isinstance(values, list) and values:
            axes.append((axis, False, [(str(v), v) for v in values]))
        else:
            raise ValueError(
                f"Sweep axis {axis!r} needs a non-empty list of values or a mapping of "
                f"names to config files, got {values!r}"
            )

    per_task = spec.get("per_task") or {}
    tasks = {str(v) for v in grid.get("task", [])}
    stray = sorted(set(per_task) - tasks)
    if stray:
        raise ValueError(f"per_task names {stray}, which are not on the task axis {sorted(tasks)}")

    points = []
    for combo in itertools.product(*(choices for _, _, choices in axes)):
        labels: dict[str, Any] = {}
        overrides: dict[str, Any] = {}
        stacked: list[str] = []
        for (axis, is_config, _), (label, value) in zip(axes, combo, strict=True):
            labels[axis] = label
            if is_config:
                stacked.append(value)
            else:
                overrides[AXIS_ALIASES.get(axis, axis)] = value
        overrides.update(per_task.get(labels.get("task"), {}))
        points.append(GridPoint(values=labels, overrides=overrides, configs=tuple(stacked)))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError("Two grid points map to the same run folder; make axis values distinct")
    return Sweep(name=str(spec.get("name") or default_name), points=points, source=source)
