"""AdaptiveSelection's budget: how many adapted modules stay active after each step.

Pure arithmetic, no model or trainer (METHODS.md §1)::

    n(t) = N                                                          t <= t_init
    n(t) = n_T + floor((N − n_T) · ((t_final − t) / (t_final − t_init))³)   t_init < t <= t_final
    n(t) = n_T                                                        t > t_final

computed in exact integer arithmetic, so no ``2.9999…`` rounds down. Step ``t`` is a
selection step when ``t_init < t <= t_final`` and ``(t − t_init) % delta_t == 0``, and
``t_final`` always is one. ``t_final`` is the absolute step at which pruning ends (peft's
AdaLoRA ``tfinal`` is the length of the last phase instead).

:class:`ScheduleSpec` holds the schedule as a user gives it (steps, or fractions of the
fit's steps) and resolves it into a :class:`CubicSchedule` once the number of adapted
modules and of optimizer steps are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def cubic_budget(step: int, total: int, target: int, t_init: int, t_final: int) -> int:
    """Number of active modules after optimizer step ``step`` (exact integer arithmetic)."""
    if step <= t_init:
        return total
    if step >= t_final:
        return target
    remaining = (total - target) * (t_final - step) ** 3 // (t_final - t_init) ** 3
    return target + remaining


@dataclass(frozen=True)
class CubicSchedule:
    """The budget of ``total`` modules pruned to ``target`` between ``t_init`` and ``t_final``."""

    total: int
    target: int
    t_init: int
    t_final: int
    delta_t: int

    def budget(self, step: int) -> int:
        """``n(step)``: the number of active modules allowed after ``step``."""
        return cubic_budget(step, self.total, self.target, self.t_init, self.t_final)

    def is_selection_step(self, step: int) -> bool:
        """Whether modules are removed during optimizer step ``step``."""
        if not self.t_init < step <= self.t_final:
            return False
        return (step - self.t_init) % self.delta_t == 0 or step == self.t_final


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_point(name: str, value: Any, allow_zero: bool) -> None:
    """A schedule point is a step count (int) or a fraction of the fit's steps (float)."""
    lowest = 0 if allow_zero else 1
    if is_int(value):
        if value < lowest:
            unit = "optimizer step" if name == "delta_t" else "optimizer steps"
            raise ValueError(f"{name} must be >= {lowest} {unit}, got {value}")
        return
    if isinstance(value, float):
        if not (0.0 <= value < 1.0 if allow_zero else 0.0 < value <= 1.0):
            interval = "[0, 1)" if allow_zero else "(0, 1]"
            raise ValueError(
                f"{name}={value} is a float, so it must be a fraction in {interval} of the "
                "fit's optimizer steps; pass an int for a number of steps"
            )
        return
    raise ValueError(
        f"{name} must be an int (optimizer steps) or a float fraction of the fit's steps, "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class ScheduleSpec:
    """The selection schedule as given: target and schedule points in steps or fractions.

    Raises:
        ValueError: a value out of range, or ``t_final <= t_init`` where both are known.
    """

    target: int | float
    t_init: int | float
    t_final: int | float
    delta_t: int | float = 1

    def __post_init__(self) -> None:
        target = self.target
        if is_int(target):
            if target <= 0:
                raise ValueError(f"target must be >= 1 (a module count) or in (0, 1), got {target}")
        elif isinstance(target, float):
            if not 0.0 < target < 1.0:
                raise ValueError(
                    f"target={target} is a float, so it must be a fraction in (0, 1) of the "
                    "adapted modules; pass an int for a number of modules"
                )
        else:
            raise ValueError(f"target must be an int or a float in (0, 1), got {target!r}")
        _check_point("t_init", self.t_init, allow_zero=True)
        _check_point("t_final", self.t_final, allow_zero=False)
        _check_point("delta_t", self.delta_t, allow_zero=False)
        same_kind = is_int(self.t_init) == is_int(self.t_final)
        if same_kind and self.t_final <= self.t_init:
            fractions = "" if is_int(self.t_init) else "the fractions "
            raise ValueError(
                f"t_final must be > t_init, got {fractions}t_final={self.t_final}, "
                f"t_init={self.t_init}"
            )

    @property
    def in_steps(self) -> bool:
        """Whether the schedule points are all given in steps (nothing to resolve)."""
        return all(is_int(v) for v in (self.t_init, self.t_final, self.delta_t))

    def target_count(self, total: int) -> int:
        """``n_T`` for ``total`` adapted modules (a fraction rounds half up).

        Raises:
            ValueError: it leaves nothing to remove, or nothing at all.
        """
        count = (
            int(self.target)
            if is_int(self.target)
            else math.floor(float(self.target) * total + 0.5)
        )
        if not 1 <= count < total:
            raise ValueError(
                f"target={self.target} gives n_T={count} active modules at the end, but it must "
                f"be >= 1 and < the {total} adapted modules (pass an int in [1, {total - 1}] or "
                "a fraction that rounds into it)"
            )
        return count

    def steps(self, total_steps: int | None) -> tuple[int, int, int]:
        """``(t_init, t_final, delta_t)`` in optimizer steps of a fit of ``total_steps``.

        Raises:
            ValueError: fractions without a known length, or an empty window once resolved.
        """

        def resolve(value: int | float, minimum: int) -> int:
            if is_int(value):
                return int(value)
            if total_steps is None:
                raise ValueError(
                    f"AdaptiveSelection's schedule {self.points()} is in fractions of the fit's "
                    "optimizer steps, but this fit's length is unknown: set trainer.max_steps "
                    "or max_epochs, or give t_init/t_final/delta_t in steps"
                )
            return max(minimum, math.floor(float(value) * total_steps + 0.5))

        t_init, t_final = resolve(self.t_init, 0), resolve(self.t_final, 1)
        delta_t = resolve(self.delta_t, 1)
        if t_final <= t_init:
            raise ValueError(
                f"AdaptiveSelection's schedule t_init={self.t_init}, t_final={self.t_final} "
                f"gives t_init={t_init} and t_final={t_final} optimizer steps for a fit of "
                f"{total_steps} steps: t_final must be > t_init. Train longer or widen the window"
            )
        return t_init, t_final, delta_t

    def points(self) -> tuple[int | float, int | float, int | float]:
        return (self.t_init, self.t_final, self.delta_t)
