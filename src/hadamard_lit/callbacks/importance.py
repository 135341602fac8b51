"""AdaDHP's importance scores per adapted module, and the removal of the lowest-scoring.

Per element of every adapter tensor θ of every still-active module, once per optimizer
step (gradients final: accumulated, unscaled, synchronised, not yet clipped)::

    I = |θ ⊙ ∂L/∂θ|     Ī ← β1·Ī + (1−β1)·I     Ū ← β2·Ū + (1−β2)·|I − Ī|     s = Ī ⊙ Ū

and a module's score is the mean of ``s`` over all its adapter tensors' elements together
(AdaDHP: the ``in + out`` entries of ``l`` and ``r``). A removed module is reset to exactly
its base layer, frozen, and never trained again.

:class:`ImportanceTracker` needs no Trainer; a plain PyTorch loop drives it::

    tracker = ImportanceTracker(adapter_layers(model))
    schedule = CubicSchedule(total=len(tracker.modules), target=96, t_init=400, t_final=3600, delta_t=500)
    for step, batch in enumerate(loader, start=1):
        model(**batch).loss.backward()
        tracker.step(step, schedule, [optimizer])    # scores, then removals, before the step
        optimizer.step(); optimizer.zero_grad()

How it reads gradients and freezes tensors under DDP, FSDP2 and DeepSpeed is the
:mod:`hadamard_lit.parallel.access` object it is given. DDP's gradients are already
averaged; under FSDP2 (``DTensor`` shards) per-module sums and element counts are
all-reduced, the exact whole-vector mean; under DeepSpeed ZeRO the full fp32 values and
gradients come from DeepSpeed's accessors, unscaled. Before each selection every rank
takes rank 0's scores, so all remove the same modules. A removed module's parameters get
``requires_grad=False`` where the strategy allows it (not under DDP without
``find_unused_parameters``, nor DeepSpeed), their ``.grad`` is cleared before every later
optimizer step and their optimizer state is dropped; under DeepSpeed their fp32 master
copy and module values are put back to identity after each step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer

from hadamard_lit.adapters.base import AdapterLayer, find_adapted_model, get_adapter_record
from hadamard_lit.adapters.state import adapter_layers
from hadamard_lit.callbacks.divergence import TrainingDiverged
from hadamard_lit.callbacks.selection_schedule import CubicSchedule
from hadamard_lit.parallel.access import Access
from hadamard_lit.parallel.tensors import (
    from_rank_zero,
    is_distributed,
    storage_device,
    sum_over_ranks,
)


@dataclass
class _Slot:
    """Where one adapter tensor's EMA state lives in the flat buffers."""

    key: str  # "<module name>.<local parameter name>"
    module: int  # position of its module among the active ones
    start: int
    numel: int


class ImportanceTracker:
    """The importance EMAs of every active adapted module, in flat buffers.

    Args:
        layers: adapted module name → its :class:`~hadamard_lit.adapters.AdapterLayer`, in
            model order (``adapter_layers(model)``).
        beta1: EMA factor of the importance ``Ī``.
        beta2: EMA factor of the uncertainty ``Ū``.
        access: how to read and freeze tensors (``access_for(trainer)``; plain by default).

    Non-finite gradients are an error (:class:`~hadamard_lit.callbacks.TrainingDiverged`)
    unless ``allow_nonfinite`` is set, as under AMP's gradient scaler, which skips such
    steps: then the scores skip them too.
    """

    def __init__(
        self,
        layers: dict[str, AdapterLayer],
        beta1: float = 0.85,
        beta2: float = 0.85,
        access: Access | None = None,
    ) -> None:
        self.layers = dict(layers)
        self.modules = list(layers)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.access = access or Access()
        self.active: list[str] = list(layers)
        self.removed: dict[str, int] = {}
        self.scores: dict[str, float] = {}
        self.last_step = 0
        self._restored_at = 0
        self.allow_nonfinite = False
        self._warned_nonfinite = False
        self._slots: list[_Slot] = []
        self._importance = torch.zeros(0)
        self._uncertainty = torch.zeros(0)
        self._build_slots(keep_state=False)

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        beta1: float = 0.85,
        beta2: float = 0.85,
        access: Access | None = None,
    ) -> ImportanceTracker:
        """A tracker of every adapter layer of the adapted model under ``model``.

        Raises:
            ValueError: no adapter strategy applied, or one that injects no layers.
        """
        adapted = find_adapted_model(model)
        layers = adapter_layers(adapted)
        if not layers:
            raise ValueError(
                f"{get_adapter_record(adapted).strategy.name} injects no adapter layers into "
                f"{type(adapted).__name__}, so AdaptiveSelection has nothing to select; use "
                "it with AdaDHP, HUT, LoRA, IA3 or HadamardAdapter"
            )
        return cls(layers, beta1, beta2, access)

    # -- one optimizer step --------------------------------------------------------------

    def step(
        self, step: int, schedule: CubicSchedule, optimizers: Sequence[Optimizer] = ()
    ) -> list[str]:
        """Process optimizer step ``step`` from the gradients in place: update the scores
        (while ``step <= t_final``), then remove modules if it is a selection step.

        Returns:
            The names removed during this step.
        """
        if step <= self.last_step:
            return []
        self.access.clear_grads(self._removed_params)
        if step <= schedule.t_final and self.active:
            self.update_scores()
        newly: list[str] = []
        if schedule.is_selection_step(step):
            newly = self.remove_lowest(len(self.active) - schedule.budget(step), step, optimizers)
        self.last_step = step
        return newly

    def update_scores(self) -> None:
        """Fold this step's gradients into the EMAs and the active modules' scores."""
        values: list[Tensor] = []
        grads: list[Tensor] = []
        self.access.begin_step()
        for param in self._params:
            value, grad = self.access.read(param)
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
        n_active = len(self.active)
        sums = torch.zeros(n_active, dtype=torch.float64, device=theta.device)
        sums.index_add_(0, self._segments, (new_imp * new_unc).double())
        counts = self._counts
        if self.access.sharded:
            totals = sum_over_ranks(torch.cat([sums, counts]))
            sums, counts = totals[:n_active], totals[n_active:]
        means = sums / counts
        if not bool(torch.isfinite(means).all()):
            if not self.allow_nonfinite:
                # Removing modules by stale scores after this would pick them at random.
                bad = [
                    n
                    for n, m in zip(self.active, means.tolist(), strict=True)
                    if not math.isfinite(m)
                ]
                raise TrainingDiverged(
                    f"AdaptiveSelection: the gradients of {len(bad)} adapted modules are not "
                    f"finite at step {self.last_step + 1} (e.g. {bad[0]}): training has diverged, "
                    "and no module is removed by stale scores. Lower the learning rate"
                )
            # An AMP step with overflowing gradients, which the scaler skips: so do we.
            if not self._warned_nonfinite:
                rank_zero_warn("AdaptiveSelection skipped a step with non-finite gradients")
                self._warned_nonfinite = True
            return
        self._importance, self._uncertainty = new_imp, new_unc
        for name, score in zip(self.active, means.tolist(), strict=True):
            self.scores[name] = score

    def remove_lowest(
        self, count: int, step: int, optimizers: Sequence[Optimizer] = ()
    ) -> list[str]:
        """Remove the ``count`` lowest-scoring active modules (ties: earlier in model order)."""
        if count <= 0:
            return []
        scores = torch.tensor([self.scores.get(n, 0.0) for n in self.active], dtype=torch.float64)
        if is_distributed():
            # Every rank must remove the same modules: rank 0's scores decide.
            scores = from_rank_zero(scores.to(self._importance.device)).cpu()
            for name, score in zip(self.active, scores.tolist(), strict=True):
                self.scores[name] = score
        order = sorted(range(len(self.active)), key=lambda i: (scores[i].item(), i))
        doomed = {self.active[i] for i in order[:count]}
        removed = [name for name in self.active if name in doomed]
        self.remove(removed, step, optimizers)
        return removed

    def rebind(self, access: Access) -> None:
        """Read the same layers through ``access`` (a new trainer's strategy), keeping the
        scores: the flat buffers are laid out again for how that strategy holds them."""
        self.access = access
        self._build_slots(keep_state=True)

    def remove(self, names: list[str], step: int, optimizers: Sequence[Optimizer] = ()) -> None:
        """Reset ``names`` to identity, freeze them, and stop tracking them (at ``step``)."""
        for name in names:
            layer = self.layers[name]
            self.access.reset(layer, optimizers)
            self.access.clear_grads(layer.adapter_parameters().values())
            self.removed[name] = step
        gone = set(names)
        self.active = [n for n in self.active if n not in gone]
        self._build_slots(keep_state=True)

    def restore_removed(self, once_per_step: bool = False) -> None:
        """Undo what an optimizer step did to removed modules (DeepSpeed's flat partitions);
        with ``once_per_step``, at most once after each processed step."""
        if not self.removed or (once_per_step and self._restored_at >= self.last_step):
            return
        self.access.restore(self.layers[name] for name in self.removed)
        self._restored_at = self.last_step

    def summary(self) -> dict[str, float]:
        """``selection/active`` and the quantiles of the active modules' scores."""
        metrics = {"selection/active": float(len(self.active))}
        active = [self.scores.get(n, 0.0) for n in self.active]
        if active:
            points = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
            quantiles = torch.quantile(torch.tensor(active, dtype=torch.float64), points)
            for label, q in zip(
                ("min", "q25", "median", "q75", "max"), quantiles.tolist(), strict=True
            ):
                metrics[f"selection/score_{label}"] = q
        return metrics

    # -- state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Removals, scores and the whole EMA vectors (gathered: collective under FSDP2)."""
        importance: dict[str, Tensor] = {}
        uncertainty: dict[str, Tensor] = {}
        for slot, imp, unc in self._slot_views():
            param = self._param(slot.key)
            importance[slot.key] = self.access.gather(imp, param).detach().cpu().clone()
            uncertainty[slot.key] = self.access.gather(unc, param).detach().cpu().clone()
        return {
            "modules": list(self.modules),
            "active": list(self.active),
            "removed": dict(self.removed),
            "scores": dict(self.scores),
            "last_step": self.last_step,
            "importance": importance,
            "uncertainty": uncertainty,
        }

    def load_state_dict(self, state: dict[str, Any], optimizers: Sequence[Optimizer] = ()) -> None:
        """Take up a saved run: its removals (reset again), scores, step and EMAs.

        Raises:
            ValueError: the state selected among other modules, or is inconsistent.
        """
        if state["modules"] != self.modules:
            raise ValueError(
                "AdaptiveSelection state does not fit this model: the checkpoint selected among "
                f"{len(state['modules'])} modules ({state['modules'][:3]}...), the model has "
                f"{len(self.modules)} ({self.modules[:3]}...)"
            )
        self.removed = dict(state["removed"])
        self.scores = dict(state["scores"])
        self.last_step = int(state["last_step"])
        self.active = [n for n in self.modules if n not in self.removed]
        if self.active != list(state["active"]):
            raise ValueError("AdaptiveSelection state is inconsistent: active and removed overlap")
        for name in self.removed:
            self.access.reset(self.layers[name], optimizers)
        self._build_slots(keep_state=False, full_state=(state["importance"], state["uncertainty"]))

    # -- the flat buffers ----------------------------------------------------------------

    def _param(self, key: str) -> nn.Parameter:
        name, _, local = key.rpartition(".")
        return self.layers[name].adapter_parameters()[local]

    def _active_params(self) -> list[tuple[str, nn.Parameter]]:
        return [
            (f"{name}.{local}", param)
            for name in self.active
            for local, param in self.layers[name].adapter_parameters().items()
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
        index = {name: i for i, name in enumerate(self.active)}
        for key, param in self._active_params():
            numel = self.access.local_numel(param)
            module = index[key.rpartition(".")[0]]
            if module == len(counts):
                counts.append(0)
            counts[module] += numel
            device = storage_device(param)
            slots.append(_Slot(key, module, start, numel))
            if full_state is not None and key in full_state[0]:
                imp = self.access.scatter(full_state[0][key], param).reshape(-1)
                unc = self.access.scatter(full_state[1][key], param).reshape(-1)
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
        self._removed_params = _parameters(self.layers[name] for name in self.removed)
        self._importance = torch.cat(imps) if imps else torch.zeros(0, device=device)
        self._uncertainty = torch.cat(uncs) if uncs else torch.zeros(0, device=device)
        segments = [torch.full((s.numel,), s.module, dtype=torch.long) for s in slots]
        self._segments = (torch.cat(segments) if segments else torch.zeros(0, dtype=torch.long)).to(
            device
        )
        self._counts = torch.tensor(counts, dtype=torch.float64, device=device)


def _parameters(layers: Iterable[AdapterLayer]) -> list[nn.Parameter]:
    return [p for layer in layers for p in layer.adapter_parameters().values()]
