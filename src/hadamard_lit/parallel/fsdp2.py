"""FSDP2 units: each transformer block is one, the root holds what is left.

FSDP2 (``torch.distributed.fsdp.fully_shard``, through Lightning's ``ModelParallelStrategy``)
shards by unit: each transformer block is gathered just before it runs and freed after,
and the root holds what is left (embeddings, final norm, heads). One unit may mix frozen
backbone weights and trainable adapter tensors; FSDP2 shards each parameter on its own.

Blocks are the architecture table's (``encoder.block`` and ``decoder.block`` for T5,
``layers`` for Llama-style decoders, ...); for a model outside the table, the items of
layer lists whose class it lists in ``_no_split_modules``, else of lists of same-class
layers.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated layers of ``model`` (outermost only), in model order.

    The architecture table's block lists (:mod:`hadamard_lit.adapters.architectures`);
    for a model outside it, the layer lists the role detection finds (of
    ``_no_split_modules`` classes, else of identical layers). Only list items: an embedding
    that is also "no split" (BERT's) stays in the root's unit, with any output head tied to it.

    Raises:
        ValueError: nothing in ``model`` looks like a transformer block.
    """
    from hadamard_lit.adapters.architectures import get_architecture
    from hadamard_lit.adapters.detection import find_blocks

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    architecture = get_architecture(str(model_type))
    if architecture is not None:
        blocks = [block.module for block in architecture.find_blocks(model)]
    else:
        lists = [model.get_submodule(name) for name in find_blocks(model)]
        blocks = [item for layers in lists if isinstance(layers, nn.ModuleList) for item in layers]
    if not blocks:
        raise ValueError(
            f"Found no transformer blocks in {type(model).__name__} to shard: no layer list "
            "of _no_split_modules classes or of identical layers"
        )
    return blocks


def is_fully_sharded(model: nn.Module) -> bool:
    """Whether ``fully_shard`` was applied to ``model`` itself."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def fully_shard_blocks(model: nn.Module, mesh: Any, **fsdp_kwargs: Any) -> bool:
    """``fully_shard`` every transformer block of ``model``, then ``model``; once.

    Args:
        model: the (adapted) transformers model.
        mesh: the 1-D data-parallel ``DeviceMesh`` to shard over.
        **fsdp_kwargs: more ``fully_shard`` arguments (``mp_policy``, ``reshard_after_forward``).

    Returns:
        False when ``model`` was sharded already (nothing done), else True.
    """
    from torch.distributed.fsdp import fully_shard

    if is_fully_sharded(model):
        return False
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, **fsdp_kwargs)
    fully_shard(model, mesh=mesh, **fsdp_kwargs)
    return True


def data_parallel_mesh(device_mesh: Any) -> Any:
    """The data-parallel part of ``ModelParallelStrategy``'s mesh.

    Raises:
        ValueError: the mesh asks for tensor parallelism, which no adapter layer implements.
    """
    names = device_mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and device_mesh["tensor_parallel"].size() > 1:
        raise ValueError(
            "hadamard_lit shards with FSDP2 only: set ModelParallelStrategy's "
            f"tensor_parallel_size=1 (got {device_mesh['tensor_parallel'].size()})"
        )
    return device_mesh["data_parallel"] if "data_parallel" in names else device_mesh
