"""Whole tensors from sharded parameters: the only place that knows how each set-up stores one.

* one process and DDP: plain tensors;
* FSDP2 (``fully_shard``): ``DTensor`` shards, whose ``shape`` is the global one;
* DeepSpeed ZeRO-3: a 1-D partition in ``param.ds_tensor``; ``param.data`` is an empty
  placeholder, ``ds_shape`` / ``ds_numel`` the whole parameter's, and
  ``deepspeed.zero.GatheredParameters`` makes it whole for a while.

Everything else in hadamard_lit (state dicts, the selection tracker, checkpoints) asks here.
No Lightning: these work in a plain PyTorch loop too.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


def full_shape(param: Tensor) -> tuple[int, ...]:
    """The whole parameter's shape (a DTensor's is global; a ZeRO-3 one's is ``ds_shape``)."""
    return tuple(getattr(param, "ds_shape", param.shape))


def full_numel(param: Tensor) -> int:
    """The whole parameter's number of elements."""
    return int(getattr(param, "ds_numel", param.numel()))


def storage_device(param: Tensor) -> torch.device:
    """Where ``param``'s data lives (a ZeRO-3 parameter: its partition's device)."""
    shard = getattr(param, "ds_tensor", None)
    return shard.device if shard is not None else param.device


def whole(tensor: Tensor) -> Tensor:
    """A DTensor made whole (collective); any other tensor as it is."""
    full_tensor = getattr(tensor, "full_tensor", None)
    return full_tensor() if callable(full_tensor) else tensor


def local_part(tensor: Tensor | None) -> Tensor | None:
    """This rank's shard of a DTensor; any other tensor as it is."""
    if tensor is None:
        return None
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def local_values(param: Tensor) -> Tensor:
    """What this rank holds of ``param``: an FSDP2 shard, a ZeRO-3 partition, or all of it."""
    shard = getattr(param, "ds_tensor", None)
    if shard is not None:
        return shard.detach()
    local = local_part(param.detach())
    assert local is not None
    return local


def is_zero3(param: Tensor) -> bool:
    return hasattr(param, "ds_id")


def gathered(params: Iterable[nn.Parameter], modifier_rank: int | None = None) -> Any:
    """Whole DeepSpeed ZeRO-3 parameters inside the context (collective); else a no-op.

    With ``modifier_rank``, what that rank writes to them is kept and re-partitioned.
    """
    zero3 = [p for p in params if is_zero3(p)]
    if not zero3:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(zero3, modifier_rank=modifier_rank)


def copy_whole_into(param: nn.Parameter, value: Tensor) -> None:
    """Set ``param`` to the whole tensor ``value`` (an FSDP2 shard keeps only its part).

    Under ZeRO-3 call it inside :func:`gathered` with a ``modifier_rank``.
    """
    with torch.no_grad():
        data: Any = param.data
        if hasattr(data, "device_mesh"):  # an FSDP2 DTensor
            from torch.distributed.tensor import distribute_tensor

            param.copy_(distribute_tensor(value.to(param.dtype), data.device_mesh, data.placements))
        else:
            param.copy_(value.to(device=param.device, dtype=param.dtype))


def shard_like(full: Tensor, param: Tensor) -> Tensor:
    """This rank's part of a whole tensor laid out as the FSDP2 ``param`` (no communication)."""
    if not hasattr(param, "device_mesh"):
        return full
    from torch.distributed.tensor import distribute_tensor

    spec: Any = param
    shard = distribute_tensor(
        full.to(param.device), spec.device_mesh, spec.placements, src_data_rank=None
    )
    return shard.to_local()


def whole_like(local: Tensor, param: Tensor) -> Tensor:
    """The whole tensor from this rank's part laid out as the FSDP2 ``param`` (collective)."""
    if not hasattr(param, "device_mesh"):
        return local
    from torch.distributed.tensor import DTensor

    spec: Any = param
    return DTensor.from_local(
        local.to(param.device),
        spec.device_mesh,
        spec.placements,
        run_check=False,
        shape=param.shape,
        stride=param.stride(),
    ).full_tensor()


def is_distributed() -> bool:
    """Whether more than one process takes part (a process group of size > 1)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_ranks(tensor: Tensor) -> Tensor:
    """``tensor`` summed over every rank (in place; unchanged in one process)."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def from_rank_zero(tensor: Tensor) -> Tensor:
    """Rank 0's ``tensor`` on every rank (in place; unchanged in one process)."""
    if is_distributed():
        dist.broadcast(tensor, src=0)
    return tensor
