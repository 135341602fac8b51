"""AdaDHP's adaptive parameter selection as a Lightning callback (ACL 2025; METHODS.md §1).

Three parts, each usable alone: the budget (:mod:`~hadamard_lit.callbacks.selection_schedule`,
pure arithmetic), the importance scores and removals
(:mod:`~hadamard_lit.callbacks.importance`, a plain PyTorch loop can drive it), and this
callback, which binds them to a Trainer: once per optimizer step it hands the tracker the
step, resolves a schedule given in fractions of the fit, logs, keeps its state in
checkpoints and draws the picture at the end.

Step semantics
--------------
``t`` is the 1-based index of the optimizer step being taken: the hook runs inside
optimizer step ``t = trainer.global_step + 1``, before the parameters move, and once that
step completes ``trainer.global_step == t``. At a selection step the scores are first
updated with step ``t``'s gradients, then the ``n_active − n(t)`` lowest-scoring modules are
removed (ties: the earlier module in model order goes first), before the optimizer applies
step ``t``. So after ``trainer.global_step == t`` for a selection step ``t``, exactly
``budget(t)`` modules are active, and after ``t_final`` exactly ``n_T``. Scores are updated
for active modules at every step ``t <= t_final`` (including the first ``t_init`` steps),
never after. (peft's AdaLoRA RankAllocator, which the authors' code copies, selects on
``step % deltaT == 0`` instead. The two agree whenever ``t_init`` is a multiple of
``delta_t``, as in most of the authors' settings; for QNLI's 600/5500/500 peft would select
at 1000, 1500, ... and this callback at 1100, 1600, ....)

Under DDP, FSDP2 and DeepSpeed the tracker reads gradients and freezes removed modules
through :mod:`hadamard_lit.parallel.access`, and every rank removes the same modules
(:mod:`~hadamard_lit.callbacks.importance` says how).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim import Optimizer
from typing_extensions import override

from hadamard_lit.adapters.architectures import block_positions
from hadamard_lit.adapters.base import find_adapted_model
from hadamard_lit.callbacks.importance import ImportanceTracker
from hadamard_lit.callbacks.logger_images import log_image_file
from hadamard_lit.callbacks.selection_plot import SelectionPicture
from hadamard_lit.callbacks.selection_schedule import CubicSchedule, ScheduleSpec, cubic_budget
from hadamard_lit.parallel.access import access_for

STATE_VERSION = 1

__all__ = ["AdaptiveSelection", "cubic_budget", "find_adapted_model"]


class AdaptiveSelection(Callback):
    """Prune whole adapted modules by importance, on AdaDHP's cubic schedule.

    Works with every adapter strategy: the unit is one adapted module (one
    :class:`~hadamard_lit.adapters.AdapterLayer`), scored over all its adapter tensors;
    ``modules_to_save`` (a task head) and the Hadamard Adapter's normalisation layers are
    never selected. See the module docstring for the exact step semantics.

    Args:
        target: final number of active modules ``n_T`` (an int, ``1 <= n_T < N``), or a
            fraction of the ``N`` adapted modules in (0, 1), rounded half up.
        t_init: last optimizer step of the warm-up (``n(t) = N`` up to it); the first
            selection is at step ``t_init + delta_t`` (or ``t_final``, if that is earlier).
        t_final: absolute optimizer step at which pruning ends (exactly ``n_T`` remain
            after it). Not peft's ``tfinal``, which is the length of the last phase.
        delta_t: a selection happens every ``delta_t`` steps after ``t_init``, and at
            ``t_final``.
        beta1: EMA factor of the importance ``Ī``.
        beta2: EMA factor of the uncertainty ``Ū``.
        plot: write ``plot_filename`` (score and removal-step heat maps, budget curve)
            beside the logs at the end of fit.
        plot_filename: file name of that PNG.

        Each of ``t_init``, ``t_final`` and ``delta_t`` is an int (optimizer steps) or a
        float (a fraction of the fit's optimizer steps, ``trainer.estimated_stepping_batches``,
        rounded to the nearest step; ``delta_t`` at least 1): ``t_init=0.1, t_final=0.6,
        delta_t=0.025`` scales with ``max_steps``. Fractions are resolved when training
        starts (or by :meth:`resolve_schedule`).

    Logged every ``delta_t`` steps and at every selection step: ``selection/active``,
    ``selection/budget``, ``selection/done`` (0/1), ``selection/score_{min,q25,median,q75,
    max}``. :class:`~hadamard_lit.callbacks.SelectionAwareCheckpoint` keeps "best"
    checkpoints of the pruning phase out. Without a Trainer, :meth:`attach` a model and call
    :meth:`update` once per optimizer step (or drive an ``ImportanceTracker`` yourself).
    """

    def __init__(
        self,
        target: int | float,
        t_init: int | float,
        t_final: int | float,
        delta_t: int | float = 1,
        beta1: float = 0.85,
        beta2: float = 0.85,
        plot: bool = True,
        plot_filename: str = "adaptive_selection.png",
    ) -> None:
        self.spec = ScheduleSpec(target, t_init, t_final, delta_t)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta}")
        self.target = target
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.plot = plot
        self.plot_filename = plot_filename
        self.plot_path: Path | None = None
        #: The schedule as given (steps or fractions of the fit's steps).
        self.requested_schedule = self.spec.points()
        self._steps: tuple[int, int, int] | None = (
            self.spec.steps(None) if self.spec.in_steps else None
        )
        self._tracker: ImportanceTracker | None = None
        self._target_count: int | None = None
        self._positions: dict[str, tuple[str, int, str]] = {}
        self._pending: dict[str, Any] | None = None

    # -- the schedule --------------------------------------------------------------------

    @property
    def t_init(self) -> int:
        """Last step of the warm-up, in optimizer steps (fractions resolved)."""
        return self._schedule_steps()[0]

    @property
    def t_final(self) -> int:
        """The step at which pruning ends, in optimizer steps (fractions resolved)."""
        return self._schedule_steps()[1]

    @property
    def delta_t(self) -> int:
        """Steps between selections, in optimizer steps (fractions resolved)."""
        return self._schedule_steps()[2]

    @property
    def schedule_resolved(self) -> bool:
        """Whether ``t_init``, ``t_final`` and ``delta_t`` are known in steps."""
        return self._steps is not None

    def resolve_schedule(self, total_steps: int) -> tuple[int, int, int]:
        """``(t_init, t_final, delta_t)`` in steps of a fit of ``total_steps`` (fractions
        resolved; an empty window is a ``ValueError``)."""
        self._steps = self.spec.steps(total_steps)
        return self._steps

    def _schedule_steps(self) -> tuple[int, int, int]:
        if self._steps is None:
            raise RuntimeError(
                f"AdaptiveSelection's schedule {self.requested_schedule} is in fractions of the "
                "fit's optimizer steps: resolved when training starts, or by resolve_schedule()"
            )
        return self._steps

    @property
    def schedule(self) -> CubicSchedule:
        """The resolved budget over this model's modules (after :meth:`attach`)."""
        return CubicSchedule(self.num_modules, self.target_count, *self._schedule_steps())

    def budget(self, step: int) -> int:
        """``n(step)``: the number of active modules the schedule allows after ``step``."""
        return self.schedule.budget(step)

    def is_selection_step(self, step: int) -> bool:
        """Whether modules are removed during optimizer step ``step``."""
        return self.schedule.is_selection_step(step)

    # -- read-outs -----------------------------------------------------------------------

    @property
    def tracker(self) -> ImportanceTracker:
        """The importance tracker (after :meth:`attach` or fit start)."""
        if self._tracker is None:
            raise RuntimeError(
                "AdaptiveSelection is not attached to a model yet: it binds at fit start, "
                "or call `attach(model)` first"
            )
        return self._tracker

    @property
    def num_modules(self) -> int:
        """``N``, the number of adapted modules (after :meth:`attach` or fit start)."""
        return len(self.tracker.modules)

    @property
    def modules(self) -> list[str]:
        """Every adapted module's name, in model order."""
        return list(self._tracker.modules) if self._tracker else []

    @property
    def module_positions(self) -> dict[str, tuple[str, int, str]]:
        """Module name → (stack, block index, name inside the block), where known."""
        return dict(self._positions)

    @property
    def target_count(self) -> int:
        """``n_T``, the number of modules left after ``t_final``."""
        if self._target_count is None:
            raise RuntimeError(f"{self.tracker} has no target")  # not attached: tracker raises
        return self._target_count

    @property
    def active_modules(self) -> list[str]:
        """Names of the modules still trained, in model order."""
        return list(self._tracker.active) if self._tracker else []

    @property
    def removed_modules(self) -> dict[str, int]:
        """Removed module name → the optimizer step during which it was removed."""
        return dict(self._tracker.removed) if self._tracker else {}

    @property
    def scores(self) -> dict[str, float]:
        """Module name → latest score (a removed module keeps its score at removal)."""
        return dict(self._tracker.scores) if self._tracker else {}

    @property
    def last_step(self) -> int:
        """The last optimizer step this callback processed."""
        return self._tracker.last_step if self._tracker else 0

    @property
    def done(self) -> bool:
        """Whether pruning has finished (step ``t_final`` processed: ``n_T`` modules left)."""
        return self.last_step >= self.t_final

    # -- without a trainer ---------------------------------------------------------------

    def attach(self, model: nn.Module, trainer: pl.Trainer | None = None) -> None:
        """Bind to the adapted model under ``model``; validate ``target`` against it.

        Re-attached to the very same layer objects, it keeps its removals, scores and
        state; attached to other ones, it starts afresh (a resumed fit then loads its state).

        Raises:
            ValueError: no adapter strategy applied, no adapter layers, or a ``target``
                that leaves nothing to remove or nothing at all.
        """
        fresh = ImportanceTracker.for_model(model, self.beta1, self.beta2, access_for(trainer))
        self._target_count = self.spec.target_count(len(fresh.modules))
        self._positions = block_positions(find_adapted_model(model), fresh.modules)
        old = self._tracker
        if (
            old is not None
            and old.modules == fresh.modules
            and all(old.layers[n] is fresh.layers[n] for n in fresh.modules)
        ):
            old.rebind(fresh.access)
        else:
            self._tracker = fresh

    def update(self, step: int, optimizers: Sequence[Optimizer] = ()) -> list[str]:
        """Process optimizer step ``step`` from the gradients in place: update the scores
        (while ``step <= t_final``), then remove modules if it is a selection step.

        Returns:
            The names removed during this step.
        """
        return self.tracker.step(step, self.schedule, optimizers)

    # -- Lightning hooks -----------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.schedule_resolved and trainer.max_steps != -1 and self.t_final > trainer.max_steps:
            raise ValueError(
                f"t_final={self.t_final} is beyond the trainer's max_steps={trainer.max_steps}: "
                "pruning would never finish. Lower t_final or raise max_steps"
            )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.attach(pl_module, trainer)
        # AMP's scaler skips steps whose gradients overflowed; anywhere else they diverged.
        self.tracker.allow_nonfinite = trainer.precision == "16-mixed"

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        estimated = trainer.estimated_stepping_batches
        if not self.spec.in_steps:
            self._steps = self.spec.steps(int(estimated) if math.isfinite(estimated) else None)
        if math.isfinite(estimated) and self.t_final > estimated:
            raise ValueError(
                f"t_final={self.t_final} is beyond the {int(estimated)} optimizer steps this fit "
                "will take (trainer.estimated_stepping_batches): pruning would never finish. "
                "Lower t_final, or train longer (max_steps / max_epochs)"
            )
        if self._pending is not None:
            self._restore(self._pending, trainer.optimizers)
            self._pending = None
        tracker = self.tracker
        if tracker.last_step != trainer.global_step:
            rank_zero_warn(
                f"AdaptiveSelection starts at global_step={trainer.global_step} with state from "
                f"step {tracker.last_step}; was the checkpoint saved without this callback's state?"
            )
            tracker.last_step = max(tracker.last_step, trainer.global_step)

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        # A strategy that accumulates itself (DeepSpeed) calls this on every micro-batch.
        if not self.tracker.access.is_step_boundary():
            return
        step = trainer.global_step + 1
        if step <= self.last_step:
            return
        self.update(step, trainer.optimizers)
        if step % self.delta_t == 0 or self.is_selection_step(step):
            self._log(pl_module, step)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        # After the optimizer step of a batch that ended one (DeepSpeed only needs this).
        tracker = self.tracker
        if tracker.access.restore_after_step and trainer.global_step == tracker.last_step:
            tracker.restore_removed(once_per_step=True)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.plot or self._tracker is None:
            return
        log_dir = trainer.log_dir or trainer.default_root_dir  # collective: every rank calls it
        if trainer.is_global_zero:
            from hadamard_lit.callbacks.selection_plot import plot_selection

            path = Path(log_dir) / self.plot_filename
            self.plot_path = plot_selection(self, path, last_step=trainer.global_step)
            # Also to TensorBoard, MLflow, ...: the picture belongs with the run's metrics.
            log_image_file(trainer.loggers, "selection/picture", path, trainer.global_step)

    def picture(self) -> SelectionPicture:
        """What the selection picture shows, as plain data."""
        return SelectionPicture(self.modules, self.module_positions, self.scores,
                                self.removed_modules, self.schedule)  # fmt: skip

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "config": self._config(),
            "steps": list(self._steps) if self._steps is not None else None,
            **self.tracker.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("version") != STATE_VERSION:
            raise ValueError(
                f"AdaptiveSelection state version {state_dict.get('version')!r} is not "
                f"{STATE_VERSION}: this checkpoint was written by another version"
            )
        saved = state_dict["config"]
        if saved != self._config():
            rank_zero_warn(
                f"AdaptiveSelection resumes with {self._config()} from a checkpoint made with "
                f"{saved}: the run will not match an uninterrupted one"
            )
        # Applied at train start, when the model and optimizers exist and are restored
        # (some strategies restore callbacks before fit start, some after).
        self._pending = state_dict

    # -- internals -----------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint's (the schedule as given)."""
        steps = dict(zip(("t_init", "t_final", "delta_t"), self.requested_schedule, strict=True))
        return {"target": self.target, **steps, "beta1": self.beta1, "beta2": self.beta2}

    def _restore(self, state: dict[str, Any], optimizers: Sequence[Optimizer]) -> None:
        saved_steps = state.get("steps")
        if saved_steps is not None and tuple(saved_steps) != self._steps:
            rank_zero_warn(
                f"AdaptiveSelection resumes with the schedule (t_init, t_final, delta_t) = "
                f"{self._steps} steps; the checkpoint's run had {tuple(saved_steps)} (its "
                "fractions were resolved for another number of steps): the run will not match "
                "an uninterrupted one"
            )
        self.tracker.load_state_dict(state, optimizers)

    def _log(self, pl_module: pl.LightningModule, step: int) -> None:
        metrics = {
            **self.tracker.summary(),
            "selection/budget": float(self.budget(step)),
            "selection/done": float(self.done),
        }
        for key, value in metrics.items():
            # The same on every rank, so no sync; every rank logs so any can monitor it.
            pl_module.log(key, value, on_step=True, on_epoch=False)
