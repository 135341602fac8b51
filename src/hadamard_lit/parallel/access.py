"""Reading, resetting and freezing trained tensors between backward and optimizer step.

One class per way a Lightning strategy holds parameters, gradients and optimizer state:

* :class:`Access`: plain tensors (one process, or DDP with ``find_unused_parameters``).
* :class:`DDPAccess`: DDP, whose reducer breaks if a parameter stops requiring grad.
* :class:`DTensorAccess`: FSDP2 shards; sums are all-reduced by the caller.
* :class:`DeepSpeedAccess`: ZeRO 1-3 through DeepSpeed's ``safe_get_full_*`` accessors.

:func:`access_for` picks one for a trainer (``None``: a plain PyTorch loop). The selection
tracker (:mod:`hadamard_lit.callbacks.importance`) is the user: it never looks at the
strategy itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from hadamard_lit.adapters.base import AdapterLayer
from hadamard_lit.parallel.tensors import (
    full_numel,
    full_shape,
    local_part,
    shard_like,
    storage_device,
    whole_like,
)


class Access:
    """Plain tensors: one process, or DDP (gradients already averaged, values replicated)."""

    #: Whether per-module sums must be all-reduced (each rank holds part of each vector).
    sharded = False
    #: Whether ``requires_grad`` may be turned off once the model is wrapped.
    can_freeze = True
    #: Whether removed modules must be put back to identity after every optimizer step.
    restore_after_step = False

    def is_step_boundary(self) -> bool:
        """Whether the gradients now in place end an optimizer step.

        Lightning calls ``on_before_optimizer_step`` once per optimizer step, except under
        a strategy that accumulates gradients itself (DeepSpeed): there, on every batch.
        """
        return True

    def begin_step(self) -> None:
        """Called before the reads of each optimizer step."""

    def read(self, param: nn.Parameter) -> tuple[Tensor, Tensor | None]:
        """This rank's part of ``param`` and of its gradient (``None``: no gradient)."""
        return param.detach(), param.grad

    def local_numel(self, param: nn.Parameter) -> int:
        return param.numel()

    def gather(self, local: Tensor, param: nn.Parameter) -> Tensor:
        """The whole tensor from this rank's part (collective where sharded)."""
        return local

    def scatter(self, full: Tensor, param: nn.Parameter) -> Tensor:
        """This rank's part of a whole tensor (no communication)."""
        return full

    def reset(self, layer: AdapterLayer, optimizers: Sequence[Optimizer]) -> None:
        """Put ``layer`` back to identity and freeze it, drop its optimizer state.

        May run outside an optimizer step (on resume); gradients are the business of
        :meth:`clear_grads`, which only runs inside one.
        """
        layer.reset_adapter()
        for param in layer.adapter_parameters().values():
            param.grad = None
            if self.can_freeze:
                param.requires_grad_(False)
            for optimizer in optimizers:
                optimizer.state.pop(param, None)

    def clear_grads(self, params: Iterable[nn.Parameter]) -> None:
        """Make sure the optimizer skips ``params`` this step (between backward and step)."""
        for param in params:
            param.grad = None

    def restore(self, layers: Iterable[AdapterLayer]) -> None:
        """Undo whatever an optimizer step did to removed layers (DeepSpeed only)."""


class DDPAccess(Access):
    can_freeze = False


class DTensorAccess(Access):
    """FSDP2 (``fully_shard``): parameters and gradients are ``DTensor`` shards."""

    sharded = True

    def read(self, param: nn.Parameter) -> tuple[Tensor, Tensor | None]:
        value = local_part(param.detach())
        assert value is not None
        return value, local_part(param.grad)

    def local_numel(self, param: nn.Parameter) -> int:
        local = local_part(param)
        assert local is not None
        return local.numel()

    def gather(self, local: Tensor, param: nn.Parameter) -> Tensor:
        return whole_like(local, param)

    def scatter(self, full: Tensor, param: nn.Parameter) -> Tensor:
        return shard_like(full, param)


class DeepSpeedAccess(Access):
    """DeepSpeed ZeRO 1-3: full fp32 values and gradients through DeepSpeed's accessors."""

    can_freeze = False
    restore_after_step = True

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.grad_divisor = 1.0

    def is_step_boundary(self) -> bool:
        return bool(self.engine.is_gradient_accumulation_boundary())

    def begin_step(self) -> None:
        # What the gradients DeepSpeed holds are multiplied by: its fp16 loss scale (read
        # every step: it changes), and 1 / gradient_accumulation_steps, because Lightning
        # divides each micro-batch loss by accumulate_grad_batches and DeepSpeed's
        # engine.backward divides it again. Undone, so scores equal other strategies'
        # (the ranking would not change: every step is off by the same factor).
        divisor = 1.0 / float(self.engine.gradient_accumulation_steps())
        if self.engine.fp16_enabled():
            divisor *= float(getattr(self.engine.optimizer, "loss_scale", 1.0))
        self.grad_divisor = divisor

    def read(self, param: nn.Parameter) -> tuple[Tensor, Tensor | None]:
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_grad

        value = safe_get_full_fp32_param(param)
        grad = safe_get_full_grad(param)
        if value is None:  # not managed by a ZeRO optimizer: plain tensors
            value = param.detach()
        if grad is not None and self.grad_divisor != 1.0:
            grad = grad / self.grad_divisor
        return value.reshape(full_shape(param)), grad

    def local_numel(self, param: nn.Parameter) -> int:
        return full_numel(param)

    def reset(self, layer: AdapterLayer, optimizers: Sequence[Optimizer]) -> None:
        from deepspeed.utils import safe_set_full_optimizer_state

        params = list(layer.adapter_parameters().values())
        self._set_identity(layer, params)
        for param in params:
            for key in _deepspeed_state_keys(param):
                value = torch.zeros(
                    full_shape(param), dtype=torch.float32, device=storage_device(param)
                )
                safe_set_full_optimizer_state(param, value, key)

    def clear_grads(self, params: Iterable[nn.Parameter]) -> None:
        from deepspeed.utils import safe_set_full_grad

        for param in params:
            param.grad = None
            zeros = torch.zeros(
                full_shape(param), dtype=torch.float32, device=storage_device(param)
            )
            safe_set_full_grad(param, zeros)

    def restore(self, layers: Iterable[AdapterLayer]) -> None:
        for layer in layers:
            self._set_identity(layer, list(layer.adapter_parameters().values()))

    @staticmethod
    def _set_identity(layer: AdapterLayer, params: list[nn.Parameter]) -> None:
        import deepspeed
        from deepspeed.utils import safe_set_full_fp32_param

        # ZeRO-3 keeps only a partition of each module parameter: gather, reset, re-partition.
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            layer.reset_adapter()
            values = [p.detach().float().clone() for p in params]
        for param, value in zip(params, values, strict=True):
            safe_set_full_fp32_param(param, value)


def _deepspeed_state_keys(param: nn.Parameter) -> list[str]:
    """Names of the optimizer's per-element state tensors (``exp_avg``, ...) for ``param``."""
    mapping = getattr(param, "_hp_mapping", None)
    if mapping is not None:  # ZeRO 1/2: only the ranks that own a fragment
        return list(mapping.get_optim_state_keys())
    z3 = getattr(param, "_z3_optimizer", None)
    if z3 is not None:
        for state in z3.optimizer.state.values():
            return [k for k, v in state.items() if isinstance(v, Tensor) and v.dim() > 0]
    return []


def access_for(trainer: pl.Trainer | None) -> Access:
    """The access for ``trainer``'s strategy (``None``: plain tensors, a PyTorch loop)."""
    if trainer is None:
        return Access()
    from lightning.pytorch.strategies import DeepSpeedStrategy
    from torch.nn.parallel import DistributedDataParallel

    strategy = trainer.strategy
    if isinstance(strategy, DeepSpeedStrategy):
        return DeepSpeedAccess(strategy.model)
    if isinstance(strategy.model, DistributedDataParallel):
        # Its reducer copes with parameters that stop requiring grad only when it looks for
        # unused ones.
        return Access() if strategy.model.find_unused_parameters else DDPAccess()
    module = trainer.lightning_module
    if any(hasattr(p, "device_mesh") for p in module.parameters()):
        return DTensorAccess()
    return Access()
