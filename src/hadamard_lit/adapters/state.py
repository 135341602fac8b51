"""What a strategy trains, as state dicts: select by the model's record, whole tensors.

The record on the model (:class:`~hadamard_lit.adapters.base.AdapterRecord`) lists the
trained parameters; names are never matched by substring. Sharded parameters (FSDP2
DTensors, DeepSpeed ZeRO-3 partitions) are made whole or written shard-wise through
:mod:`hadamard_lit.parallel.tensors`, so these calls are collective there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from hadamard_lit.adapters.base import AdapterLayer, get_adapter_record
from hadamard_lit.parallel.tensors import copy_whole_into, full_numel, full_shape, gathered, whole


def iter_adapter_layers(model: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
    """``(name, layer)`` for every adapter layer in ``model``, in model order."""
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            yield name, module


def adapter_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    """Every adapter layer in ``model`` by module name."""
    return dict(iter_adapter_layers(model))


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """What the applied strategy trains, by full parameter name, detached, whole.

    Adapter tensors and the parameters of ``modules_to_save`` only: a few megabytes even
    for a 7B backbone. Sharded parameters (FSDP2 DTensors, DeepSpeed ZeRO-3 partitions)
    are gathered, so every rank must call this (it is collective there).
    """
    record = get_adapter_record(model)
    params = dict(model.named_parameters())
    with gathered([params[name] for name in record.trained_parameters]):
        return {name: whole(params[name]).detach().clone() for name in record.trained_parameters}


def check_adapter_state(model: nn.Module, shapes: Mapping[str, Sequence[int]]) -> None:
    """Check that an adapter state dict with these names and ``shapes`` fits ``model``.

    Raises:
        ValueError: keys missing or unexpected, or shapes that differ.
    """
    record = get_adapter_record(model)
    expected = set(record.trained_parameters)
    missing = sorted(expected - shapes.keys())
    unexpected = sorted(shapes.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"Adapter state dict does not fit {record.strategy.name} on "
            f"{type(model).__name__}: missing {missing[:5]}{'...' if len(missing) > 5 else ''} "
            f"({len(missing)}), unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
        )
    params = dict(model.named_parameters())
    bad = [
        f"{n}: {tuple(shapes[n])} vs {full_shape(params[n])}"
        for n in record.trained_parameters
        if tuple(shapes[n]) != full_shape(params[n])
    ]
    if bad:
        raise ValueError(f"Adapter state dict shapes differ from the model's: {bad[:5]}")


def load_adapter_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Copy an :func:`adapter_state_dict` into ``model`` (the same strategy applied).

    Collective where parameters are sharded (FSDP2, ZeRO-3): every rank must call it.

    Raises:
        ValueError: keys missing or unexpected, or shapes that differ.
    """
    check_adapter_state(model, {name: value.shape for name, value in state_dict.items()})
    record = get_adapter_record(model)
    params = dict(model.named_parameters())
    trained = [params[name] for name in record.trained_parameters]
    with torch.no_grad(), gathered(trained, modifier_rank=0):
        for name in record.trained_parameters:
            copy_whole_into(params[name], state_dict[name])


def count_trainable_parameters(model: nn.Module) -> int:
    """Number of trainable elements in ``model`` (shared parameters counted once)."""
    # A DTensor's numel is the global one, so sharded models count the same.
    return sum(full_numel(p) for p in model.parameters() if p.requires_grad)


def count_parameters(model: nn.Module) -> int:
    """Number of elements in ``model``'s parameters (shared parameters counted once)."""
    return sum(full_numel(p) for p in model.parameters())
