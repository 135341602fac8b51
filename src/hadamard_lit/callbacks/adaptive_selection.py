"""AdaDHP's adaptive parameter selection as a Lightning callback (ACL 2025; METHODS.md §1).

Per element of every adapter tensor θ of every still-active adapted module, at optimizer
step ``t`` (gradients final: accumulated, unscaled, synchronised, not yet clipped):

    I = |θ ⊙ ∂L/∂θ|     Ī ← β1·Ī + (1−β1)·I     Ū ← β2·Ū + (1−β2)·|I − Ī|     s = Ī ⊙ Ū

and the score of a module is the mean of ``s`` over all its adapter tensors' elements
together (AdaDHP: the ``in + out`` entries of ``l`` and ``r``). The number of active
modules follows a cubic schedule from ``N`` (all adapted modules) to ``n_T``::

    n(t) = N                                                          t <= t_init
    n(t) = n_T + floor((N − n_T) · ((t_final − t) / (t_final − t_init))³)   t_init < t <= t_final
    n(t) = n_T                                                        t > t_final

(computed in exact integer arithmetic, so no ``2.9999…`` rounds down). A removed module is
reset to exactly its base layer, frozen and never trained again.

Step semantics
--------------
``t`` is the 1-based index of the optimizer step being taken: the hook runs inside
optimizer step ``t = trainer.global_step + 1``, before the parameters move, and once that
step completes ``trainer.global_step == t``. Step ``t`` is a *selection step* when
``t_init < t <= t_final`` and ``(t − t_init) % delta_t == 0``, and ``t_final`` always is one.
At a selection step the scores are first updated with step ``t``'s gradients, then the
``n_active − n(t)`` lowest-scoring modules are removed (ties: the earlier module in model
order goes first), before the optimizer applies step ``t``. So after ``trainer.global_step
== t`` for a selection step ``t``, exactly ``budget(t)`` modules are active, and after
``t_final`` exactly ``n_T``. Scores are updated for active modules at every step
``t <= t_final`` (including the first ``t_init`` steps), never after.
(peft's AdaLoRA RankAllocator, which the authors' code copies, selects on
``step % deltaT == 0`` instead. The two agree whenever ``t_init`` is a multiple of
``delta_t``, as in most of the authors' settings; for QNLI's 600/5500/500 peft would select
at 1000, 1500, ... and this callback at 1100, 1600, ....)

Distributed training
--------------------
The same modules are removed on every rank: scores are broadcast from rank 0 before each
selection. Under DDP gradients are already averaged. Under FSDP2 parameters and gradients
are ``DTensor`` shards: ``s`` is computed on the local shard and per-module sums of ``s``
and element counts are all-reduced, which gives the exact whole-vector mean (the EMA state
stays sharded; checkpoints hold it gathered). Under DeepSpeed ZeRO the full fp32 parameter
and gradient are read with ``deepspeed.utils.safe_get_full_fp32_param``/``safe_get_full_grad``
(unscaled: DeepSpeed's fp16 loss scale, and the extra ``1/accumulate_grad_batches`` that
Lightning's loss normalisation and DeepSpeed's ``engine.backward`` together apply).

Freezing: a removed module's parameters get ``requires_grad=False``, their ``.grad`` is
set to ``None`` before every later optimizer step and their optimizer state is dropped, so
torch optimizers (which skip parameters whose ``.grad`` is ``None``) never move them,
weight decay included. Two set-ups keep ``requires_grad=True`` because they cannot cope
with it changing after they wrap the model: DDP without ``find_unused_parameters`` (its
reducer raises when a parameter stops getting gradients) and DeepSpeed (whose ZeRO-3 fp32
accessors ignore frozen parameters). Under
DeepSpeed, whose optimizer steps flat fp32 partitions, the removed modules' gradients are
zeroed before each step and their fp32 master copy and module values are put back to
identity after it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer
from typing_extensions import override

from hadamard_lit.adapters.base import AdapterLayer, adapter_layers, get_adapter_record
from hadamard_lit.callbacks.selection_access import Access, access_for, device_of

STATE_VERSION = 1


def cubic_budget(step: int, total: int, target: int, t_init: int, t_final: int) -> int:
    """Number of active modules after optimizer step ``step`` (METHODS.md §1 schedule).

    Exact: ``floor((total − target)·(t_final − step)³ / (t_final − t_init)³)`` in integers.
    """
    if step <= t_init:
        return total
    if step >= t_final:
        return target
    remaining = (total - target) * (t_final - step) ** 3 // (t_final - t_init) ** 3
    return target + remaining


def find_adapted_model(root: nn.Module) -> nn.Module:
    """The first module under ``root`` (itself included) that has an adapter strategy applied.

    Raises:
        ValueError: none has; the message says how to apply one.
    """
    for module in root.modules():
        if get_adapter_record(module, required=False) is not None:
            return module
    raise ValueError(
        f"AdaptiveSelection found no adapter strategy applied in {type(root).__name__}: "
        "apply one (e.g. `AdaDHP().apply(model)`) to the transformers model the "
        "LightningModule trains, in `__init__` or `configure_model`"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positions(model: nn.Module, names: list[str]) -> dict[str, tuple[str, int, str]]:
    """Each name's (stack, block index, name inside the block), from the architecture table."""
    from hadamard_lit.adapters.architectures import architecture_of

    try:
        architecture = architecture_of(model)
    except ValueError:  # an architecture the table and the detection do not know
        return {}
    positions = {}
    for name in names:
        block = architecture.block_of(model, name)
        if block is not None:
            positions[name] = (block.stack, block.index, name[len(block.name) + 1 :])
    return positions


def _check_schedule_value(name: str, value: Any, allow_zero: bool) -> None:
    """A schedule point is a step count (int) or a fraction of the fit's steps (float)."""
    lowest = 0 if allow_zero else 1
    if _is_int(value):
        if value < lowest:
            unit = "optimizer step" if name == "delta_t" else "optimizer steps"
            raise ValueError(f"{name} must be >= {lowest} {unit}, got {value}")
        return
    if isinstance(value, float):
        ok = 0.0 <= value < 1.0 if allow_zero else 0.0 < value <= 1.0
        if not ok:
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


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# -- the callback ---------------------------------------------------------------------------


@dataclass
class _Slot:
    """Where one adapter tensor's EMA state lives in the flat buffers."""

    key: str  # "<module name>.<local parameter name>"
    module: int  # position of its module among the active ones
    start: int
    numel: int


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

        Each of ``t_init``, ``t_final`` and ``delta_t`` is an int (optimizer steps) or a
        float (a fraction of the fit's optimizer steps, ``trainer.estimated_stepping_batches``,
        rounded to the nearest step; ``delta_t`` at least 1): ``t_init=0.1, t_final=0.6,
        delta_t=0.025`` scales with ``max_steps``. Fractions are resolved when training
        starts (or by :meth:`resolve_schedule`).
        beta1: EMA factor of the importance ``Ī``.
        beta2: EMA factor of the uncertainty ``Ū``.
        plot: write ``plot_filename`` (score and removal-step heat maps, budget curve)
            beside the logs at the end of fit.
        plot_filename: file name of that PNG.

    Read-outs: :meth:`budget`, :attr:`active_modules`, :attr:`removed_modules`,
    :attr:`scores`, :attr:`done`, :attr:`plot_path`. Logged (``pl_module.log``) every
    ``delta_t`` steps and at every selection step: ``selection/active``,
    ``selection/budget``, ``selection/done`` (0/1) and score quantiles
    ``selection/score_{min,q25,median,q75,max}`` over active modules. To keep "best"
    checkpoints from the pruning phase out, use
    :class:`~hadamard_lit.callbacks.SelectionAwareCheckpoint`.

    Without a Trainer, :meth:`attach` a model and call :meth:`update` once per optimizer
    step with the gradients in ``.grad``.
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
        if _is_int(target):
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
        _check_schedule_value("t_init", t_init, allow_zero=True)
        _check_schedule_value("t_final", t_final, allow_zero=False)
        _check_schedule_value("delta_t", delta_t, allow_zero=False)
        if _is_int(t_init) and _is_int(t_final) and t_final <= t_init:
            raise ValueError(f"t_final must be > t_init, got t_final={t_final}, t_init={t_init}")
        if isinstance(t_init, float) and isinstance(t_final, float) and t_final <= t_init:
            raise ValueError(
                f"t_final must be > t_init, got the fractions t_final={t_final}, t_init={t_init}"
            )
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta}")
        self.target = target
        #: The schedule as given (steps or fractions of the fit's steps).
        self.requested_schedule: tuple[int | float, int | float, int | float] = (
            t_init,
            t_final,
            delta_t,
        )
        self._steps: tuple[int, int, int] | None = None
        if all(_is_int(v) for v in self.requested_schedule):
            self._steps = (int(t_init), int(t_final), int(delta_t))
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.plot = plot
        self.plot_filename = plot_filename
        self.plot_path: Path | None = None

        self._access: Access = Access()
        self._layers: dict[str, AdapterLayer] = {}
        self._positions: dict[str, tuple[str, int, str]] = {}
        self._names: list[str] = []
        self._target_count: int | None = None
        self._active: list[str] = []
        self._removed: dict[str, int] = {}
        self._scores: dict[str, float] = {}
        self._last_step = 0
        # Flat EMA state of the active modules' tensors (this rank's part), and its layout.
        self._slots: list[_Slot] = []
        self._params: list[nn.Parameter] = []
        self._removed_params: list[nn.Parameter] = []
        self._importance = torch.zeros(0)
        self._uncertainty = torch.zeros(0)
        self._segments = torch.zeros(0, dtype=torch.long)
        self._counts = torch.zeros(0, dtype=torch.float64)
        self._pending: dict[str, Any] | None = None
        self._warned_nonfinite = False
        self._restored_at = 0

    # -- read-outs -----------------------------------------------------------------------

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
        """Turn fractional ``t_init``/``t_final``/``delta_t`` into steps of a fit of
        ``total_steps`` optimizer steps; return ``(t_init, t_final, delta_t)``.

        Integer values are kept as they are.

        Raises:
            ValueError: the resolved schedule is empty (``t_final <= t_init``).
        """
        requested = self.requested_schedule

        def steps(value: int | float, minimum: int) -> int:
            if _is_int(value):
                return int(value)
            return max(minimum, math.floor(float(value) * total_steps + 0.5))

        t_init, t_final, delta_t = (
            steps(requested[0], 0),
            steps(requested[1], 1),
            steps(requested[2], 1),
        )
        if t_final <= t_init:
            raise ValueError(
                f"AdaptiveSelection's schedule t_init={requested[0]}, t_final={requested[1]} "
                f"gives t_init={t_init} and t_final={t_final} optimizer steps for a fit of "
                f"{total_steps} steps: t_final must be > t_init. Train longer or widen the window"
            )
        self._steps = (t_init, t_final, delta_t)
        return self._steps

    def _schedule_steps(self) -> tuple[int, int, int]:
        if self._steps is None:
            raise RuntimeError(
                f"AdaptiveSelection's schedule {self.requested_schedule} is given in fractions of "
                "the fit's optimizer steps; it is resolved when training starts (or call "
                "`resolve_schedule(total_steps)`)"
            )
        return self._steps

    @property
    def num_modules(self) -> int:
        """``N``, the number of adapted modules (after :meth:`attach` or fit start)."""
        self._require_attached()
        return len(self._names)

    @property
    def modules(self) -> list[str]:
        """Every adapted module's name, in model order."""
        return list(self._names)

    @property
    def module_positions(self) -> dict[str, tuple[str, int, str]]:
        """Module name → (stack, block index, name inside the block), where known."""
        return dict(self._positions)

    @property
    def target_count(self) -> int:
        """``n_T``, the number of modules left after ``t_final``."""
        self._require_attached()
        assert self._target_count is not None
        return self._target_count

    def budget(self, step: int) -> int:
        """``n(step)``: the number of active modules the schedule allows after ``step``."""
        return cubic_budget(step, self.num_modules, self.target_count, self.t_init, self.t_final)

    def is_selection_step(self, step: int) -> bool:
        """Whether modules are removed during optimizer step ``step``."""
        if not self.t_init < step <= self.t_final:
            return False
        return (step - self.t_init) % self.delta_t == 0 or step == self.t_final

    @property
    def active_modules(self) -> list[str]:
        """Names of the modules still trained, in model order."""
        return list(self._active)

    @property
    def removed_modules(self) -> dict[str, int]:
        """Removed module name → the optimizer step during which it was removed."""
        return dict(self._removed)

    @property
    def scores(self) -> dict[str, float]:
        """Module name → latest score (a removed module keeps its score at removal)."""
        return dict(self._scores)

    @property
    def last_step(self) -> int:
        """The last optimizer step this callback processed."""
        return self._last_step

    @property
    def done(self) -> bool:
        """Whether pruning has finished (step ``t_final`` processed: ``n_T`` modules left)."""
        return self._last_step >= self.t_final

    # -- without a trainer ---------------------------------------------------------------

    def attach(self, model: nn.Module, trainer: pl.Trainer | None = None) -> None:
        """Bind to the adapted model under ``model``; validate ``target`` against it.

        Re-attached to the very same layer objects, it keeps its removals, scores and
        state; attached to other ones, it starts afresh (a resumed fit then loads its state).

        Raises:
            ValueError: no adapter strategy applied, no adapter layers, or a ``target``
                that leaves nothing to remove or nothing at all.
        """
        adapted = find_adapted_model(model)
        layers = adapter_layers(adapted)
        if not layers:
            record = get_adapter_record(adapted)
            raise ValueError(
                f"{record.strategy.name} injects no adapter layers into "
                f"{type(adapted).__name__}, so AdaptiveSelection has nothing to select; use "
                "it with AdaDHP, HUT, LoRA, IA3 or HadamardAdapter"
            )
        total = len(layers)
        if _is_int(self.target):
            count = int(self.target)
        else:
            count = math.floor(float(self.target) * total + 0.5)
        if not 1 <= count < total:
            raise ValueError(
                f"target={self.target} gives n_T={count} active modules at the end, but it must "
                f"be >= 1 and < the {total} adapted modules of {type(adapted).__name__} "
                f"(pass an int in [1, {total - 1}] or a fraction that rounds into it)"
            )
        same = list(layers) == self._names and all(
            layer is self._layers[name] for name, layer in layers.items()
        )
        self._layers = layers
        self._positions = _positions(adapted, list(layers))
        self._access = access_for(trainer)
        self._target_count = count
        if not same:
            self._names = list(layers)
            self._active = list(layers)
            self._removed = {}
            self._scores = {}
            self._last_step = 0
            self._slots = []
        self._build_slots(keep_state=same)

    def update(self, step: int, optimizers: Sequence[Optimizer] = ()) -> list[str]:
        """Process optimizer step ``step`` from the gradients in place: update the scores
        (while ``step <= t_final``), then remove modules if it is a selection step.

        Returns:
            The names removed during this step.
        """
        self._require_attached()
        if step <= self._last_step:
            return []
        self._access.clear_grads(self._removed_params)
        if step <= self.t_final and self._active:
            self._update_scores()
        newly: list[str] = []
        if self.is_selection_step(step):
            newly = self._select(step, optimizers)
        self._last_step = step
        return newly

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

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        estimated = trainer.estimated_stepping_batches
        if not all(_is_int(v) for v in self.requested_schedule):
            if not math.isfinite(estimated):
                raise ValueError(
                    f"AdaptiveSelection's schedule {self.requested_schedule} is in fractions of "
                    "the fit's optimizer steps, but this fit's length is unknown: set "
                    "trainer.max_steps or max_epochs, or give t_init/t_final/delta_t in steps"
                )
            self.resolve_schedule(int(estimated))
        if math.isfinite(estimated) and self.t_final > estimated:
            raise ValueError(
                f"t_final={self.t_final} is beyond the {int(estimated)} optimizer steps this fit "
                "will take (trainer.estimated_stepping_batches): pruning would never finish. "
                "Lower t_final, or train longer (max_steps / max_epochs)"
            )
        if self._pending is not None:
            self._restore(self._pending, trainer.optimizers)
            self._pending = None
        if self._last_step != trainer.global_step:
            rank_zero_warn(
                f"AdaptiveSelection starts at global_step={trainer.global_step} with state from "
                f"step {self._last_step}; was the checkpoint saved without this callback's state?"
            )
            self._last_step = max(self._last_step, trainer.global_step)

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        # A strategy that accumulates itself (DeepSpeed) calls this on every micro-batch;
        # Lightning's own test of whether this batch ends an optimizer step tells which.
        if trainer.strategy.handles_gradient_accumulation and trainer.fit_loop._should_accumulate():
            return
        step = trainer.global_step + 1
        if step <= self._last_step:
            return
        self.update(step, trainer.optimizers)
        if step % self.delta_t == 0 or self.is_selection_step(step):
            self._log(pl_module, step)

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # After the optimizer step of a batch that ended one (DeepSpeed only needs this).
        if (
            self._access.restore_after_step
            and self._removed
            and trainer.global_step == self._last_step
            and self._restored_at < self._last_step
        ):
            self._access.restore(self._layers[name] for name in self._removed)
            self._restored_at = self._last_step

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.plot or not self._names:
            return
        log_dir = trainer.log_dir or trainer.default_root_dir  # collective: every rank calls it
        if trainer.is_global_zero:
            from hadamard_lit.callbacks.selection_plot import plot_selection

            path = Path(log_dir) / self.plot_filename
            self.plot_path = plot_selection(self, path, last_step=trainer.global_step)

    @override
    def state_dict(self) -> dict[str, Any]:
        importance: dict[str, Tensor] = {}
        uncertainty: dict[str, Tensor] = {}
        for slot, imp, unc in self._slot_views():
            param = self._param(slot.key)
            importance[slot.key] = self._access.gather(imp, param).detach().cpu().clone()
            uncertainty[slot.key] = self._access.gather(unc, param).detach().cpu().clone()
        return {
            "version": STATE_VERSION,
            "config": self._config(),
            "modules": list(self._names),
            "active": list(self._active),
            "removed": dict(self._removed),
            "scores": dict(self._scores),
            "last_step": self._last_step,
            "steps": list(self._steps) if self._steps is not None else None,
            "importance": importance,
            "uncertainty": uncertainty,
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
        return {
            "target": self.target,
            "t_init": self.requested_schedule[0],
            "t_final": self.requested_schedule[1],
            "delta_t": self.requested_schedule[2],
            "beta1": self.beta1,
            "beta2": self.beta2,
        }

    def _require_attached(self) -> None:
        if not self._names:
            raise RuntimeError(
                "AdaptiveSelection is not attached to a model yet: it binds at fit start, "
                "or call `attach(model)` first"
            )

    def _param(self, key: str) -> nn.Parameter:
        name, _, local = key.rpartition(".")
        return self._layers[name].adapter_parameters()[local]

    def _active_params(self) -> list[tuple[str, nn.Parameter]]:
        return [
            (f"{name}.{local}", param)
            for name in self._active
            for local, param in self._layers[name].adapter_parameters().items()
        ]

    def _slot_views(self) -> list[tuple[_Slot, Tensor, Tensor]]:
        return [
            (
                s,
                self._importance[s.start : s.start + s.numel],
                self._uncertainty[s.start : s.start + s.numel],
            )
            for s in self._slots
        ]

    def _build_slots(
        self,
        keep_state: bool,
        full_state: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None,
    ) -> None:
        """Lay out the flat EMA buffers for the active modules, keeping what is known."""
        old = {s.key: (imp, unc) for s, imp, unc in self._slot_views()} if keep_state else {}
        slots: list[_Slot] = []
        imps: list[Tensor] = []
        uncs: list[Tensor] = []
        counts: list[int] = []
        start = 0
        device = torch.device("cpu")
        index = {name: i for i, name in enumerate(self._active)}
        for key, param in self._active_params():
            numel = self._access.local_numel(param)
            module = index[key.rpartition(".")[0]]
            if module == len(counts):
                counts.append(0)
            counts[module] += numel
            device = device_of(param)
            slots.append(_Slot(key, module, start, numel))
            if full_state is not None and key in full_state[0]:
                imp = self._access.scatter(full_state[0][key], param).reshape(-1)
                unc = self._access.scatter(full_state[1][key], param).reshape(-1)
            elif key in old:
                imp, unc = old[key]
            else:
                imp = unc = torch.zeros(numel)
            imps.append(imp.to(device=device, dtype=torch.float32))
            uncs.append(unc.to(device=device, dtype=torch.float32))
            start += numel
        self._slots = slots
        # Parameter objects are fixed once the strategy has wrapped the model (fit start).
        self._params = [param for _, param in self._active_params()]
        self._removed_params = [
            p for name in self._removed for p in self._layers[name].adapter_parameters().values()
        ]
        self._importance = torch.cat(imps) if imps else torch.zeros(0, device=device)
        self._uncertainty = torch.cat(uncs) if uncs else torch.zeros(0, device=device)
        self._segments = torch.cat(
            [torch.full((s.numel,), s.module, dtype=torch.long) for s in slots]
        ).to(device)
        self._counts = torch.tensor(counts, dtype=torch.float64, device=device)

    def _update_scores(self) -> None:
        values: list[Tensor] = []
        grads: list[Tensor] = []
        self._access.begin_step()
        for param in self._params:
            value, grad = self._access.read(param)
            values.append(value.reshape(-1))
            grads.append(torch.zeros_like(values[-1]) if grad is None else grad.reshape(-1))
        device = self._importance.device
        theta = torch.cat(values).to(device=device, dtype=torch.float32)
        grad = torch.cat(grads).to(device=device, dtype=torch.float32)
        importance = (theta * grad).abs_()
        new_imp = self.beta1 * self._importance + (1.0 - self.beta1) * importance
        new_unc = (
            self.beta2 * self._uncertainty + (1.0 - self.beta2) * (importance - new_imp).abs_()
        )
        n_active = len(self._active)
        sums = torch.zeros(n_active, dtype=torch.float64, device=theta.device)
        sums.index_add_(0, self._segments, (new_imp * new_unc).double())
        counts = self._counts
        if self._access.sharded and _distributed():
            totals = torch.cat([sums, counts])
            dist.all_reduce(totals)
            sums, counts = totals[:n_active], totals[n_active:]
        means = sums / counts
        if not bool(torch.isfinite(means).all()):
            # An AMP step with overflowing gradients, which the scaler skips: so do we.
            if not self._warned_nonfinite:
                rank_zero_warn("AdaptiveSelection skipped a step with non-finite gradients")
                self._warned_nonfinite = True
            return
        self._importance, self._uncertainty = new_imp, new_unc
        for name, score in zip(self._active, means.tolist(), strict=True):
            self._scores[name] = score

    def _select(self, step: int, optimizers: Sequence[Optimizer]) -> list[str]:
        excess = len(self._active) - self.budget(step)
        if excess <= 0:
            return []
        scores = torch.tensor([self._scores.get(n, 0.0) for n in self._active], dtype=torch.float64)
        if _distributed():
            # Every rank must remove the same modules: rank 0's scores decide.
            device = self._importance.device
            scores = scores.to(device)
            dist.broadcast(scores, src=0)
            scores = scores.cpu()
            for name, score in zip(self._active, scores.tolist(), strict=True):
                self._scores[name] = score
        order = sorted(range(len(self._active)), key=lambda i: (scores[i].item(), i))
        doomed = {self._active[i] for i in order[:excess]}
        removed = [name for name in self._active if name in doomed]
        self._remove(removed, step, optimizers)
        return removed

    def _remove(self, names: list[str], step: int, optimizers: Sequence[Optimizer]) -> None:
        for name in names:
            layer = self._layers[name]
            self._access.reset(layer, optimizers)
            self._access.clear_grads(layer.adapter_parameters().values())
            self._removed[name] = step
        gone = set(names)
        self._active = [n for n in self._active if n not in gone]
        self._build_slots(keep_state=True)

    def _restore(self, state: dict[str, Any], optimizers: Sequence[Optimizer]) -> None:
        if state["modules"] != self._names:
            raise ValueError(
                "AdaptiveSelection state does not fit this model: the checkpoint selected among "
                f"{len(state['modules'])} modules ({state['modules'][:3]}...), the model has "
                f"{len(self._names)} ({self._names[:3]}...)"
            )
        saved_steps = state.get("steps")
        if saved_steps is not None and tuple(saved_steps) != self._steps:
            rank_zero_warn(
                f"AdaptiveSelection resumes with the schedule (t_init, t_final, delta_t) = "
                f"{self._steps} steps; the checkpoint's run had {tuple(saved_steps)} (its "
                "fractions were resolved for another number of steps): the run will not match "
                "an uninterrupted one"
            )
        self._removed = dict(state["removed"])
        self._scores = dict(state["scores"])
        self._last_step = int(state["last_step"])
        self._active = [n for n in self._names if n not in self._removed]
        if self._active != list(state["active"]):
            raise ValueError("AdaptiveSelection state is inconsistent: active and removed overlap")
        for name in self._removed:
            self._access.reset(self._layers[name], optimizers)
        self._build_slots(keep_state=False, full_state=(state["importance"], state["uncertainty"]))

    def _log(self, pl_module: pl.LightningModule, step: int) -> None:
        active = [self._scores.get(n, 0.0) for n in self._active]
        metrics = {
            "selection/active": float(len(self._active)),
            "selection/budget": float(self.budget(step)),
            "selection/done": float(self.done),
        }
        if active:
            values = torch.tensor(active, dtype=torch.float64)
            quantiles = torch.quantile(
                values, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
            )
            for label, q in zip(
                ("min", "q25", "median", "q75", "max"), quantiles.tolist(), strict=True
            ):
                metrics[f"selection/score_{label}"] = q
        for key, value in metrics.items():
            # The same on every rank, so no sync; every rank logs so any can monitor it.
            pl_module.log(key, value, on_step=True, on_epoch=False)
