"""Running an adapted backbone under sharded strategies: FSDP2 units and DeepSpeed checkpoints.

FSDP2 (``torch.distributed.fsdp.fully_shard``, through Lightning's ``ModelParallelStrategy``)
shards by unit: each transformer block is one, gathered just before it runs and freed after,
and the root holds what is left (embeddings, final norm, heads). One unit may mix frozen
backbone weights and trainable adapter tensors; FSDP2 shards each parameter on its own.

Blocks are the architecture table's (``encoder.block`` and ``decoder.block`` for T5,
``layers`` for Llama-style decoders, ...); for a model outside the table, the items of
layer lists whose class it lists in ``_no_split_modules``, else of lists of same-class
layers.

Lightning's ``DeepSpeedStrategy`` saves a checkpoint *directory* written by DeepSpeed's
engine and leaves the LightningModule's ``state_dict`` out of it; the module's adapter state
travels in the client state instead (see ``AdapterModule.on_save_checkpoint``), and
:func:`read_checkpoint` reads it back from either form.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Where a checkpoint's consolidated adapter state goes when the strategy drops "state_dict".
CLIENT_STATE_KEY = "hadamard_lit_state_dict"


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


# -- DeepSpeed ZeRO-3 ---------------------------------------------------------------------


def transformers_zero3_config(strategy: Any) -> Any:
    """Tell transformers that models are built under ZeRO-3, for as long as the result lives.

    Lightning's ``DeepSpeedStrategy`` (stage 3) runs ``configure_model`` inside
    ``deepspeed.zero.Init``, which partitions every weight as its layer is created.
    transformers must know, or its weight initialisation indexes the empty placeholders
    (``from_config``) and ``from_pretrained`` copies into them; with an ``HfDeepSpeedConfig``
    alive it initialises and loads each layer gathered, and ``generate`` keeps the ranks
    in step (``synced_gpus``). transformers holds it by a weak reference.

    Returns:
        The ``HfDeepSpeedConfig`` to keep a reference to, or None when ``strategy`` is not
        DeepSpeed ZeRO-3.
    """
    from lightning.pytorch.strategies import DeepSpeedStrategy

    if not (isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3):
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(strategy.config)


# -- checkpoints ------------------------------------------------------------------------


def restores_weights_itself(strategy: Any) -> bool:
    """Whether ``strategy`` restores a checkpoint's weights without the module's own
    ``load_state_dict`` (FSDP2's ``ModelParallelStrategy``, FSDP1, DeepSpeed)."""
    from lightning.pytorch.strategies import (
        DeepSpeedStrategy,
        FSDPStrategy,
        ModelParallelStrategy,
    )

    return isinstance(strategy, (ModelParallelStrategy, FSDPStrategy, DeepSpeedStrategy))


def deepspeed_model_states_file(path: str | os.PathLike[str]) -> Path | None:
    """The file holding a DeepSpeed checkpoint directory's client state, or None.

    Lightning saves with the tag ``checkpoint``: ``<dir>/checkpoint/mp_rank_00_model_states.pt``
    (ZeRO-2) or ``<dir>/checkpoint/zero_pp_rank_0_mp_rank_00_model_states.pt`` (ZeRO-3).
    """
    folder = Path(path)
    if not folder.is_dir():
        return None
    tag_file = folder / "latest"
    tag = tag_file.read_text().strip() if tag_file.is_file() else "checkpoint"
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt"):
        if (folder / tag / name).is_file():
            return folder / tag / name
    return None


def read_checkpoint(path: str | os.PathLike[str], weights_only: bool = True) -> dict[str, Any]:
    """A Lightning checkpoint as a dict whose ``state_dict`` is the adapter state.

    Accepts a checkpoint file (single process, DDP, FSDP2 with
    ``save_distributed_checkpoint=False``) or a DeepSpeed checkpoint directory, whose
    ``state_dict`` is rebuilt from the consolidated adapter state in its client state.

    Raises:
        ValueError: a directory that is not a DeepSpeed checkpoint saved by an
            ``AdapterModule`` (e.g. FSDP2's sharded checkpoints: save them consolidated).
    """
    states = deepspeed_model_states_file(path)
    if states is None:
        if Path(path).is_dir():
            raise ValueError(
                f"{path} is a directory but not a DeepSpeed checkpoint; for FSDP2 save "
                "consolidated checkpoints (ModelParallelStrategy(save_distributed_checkpoint=False))"
            )
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    client = torch.load(states, map_location="cpu", weights_only=weights_only)
    if CLIENT_STATE_KEY not in client:
        raise ValueError(f"{path} is a DeepSpeed checkpoint without hadamard_lit's adapter state")
    checkpoint = {k: v for k, v in client.items() if k not in _DEEPSPEED_ENTRIES}
    checkpoint["state_dict"] = checkpoint.pop(CLIENT_STATE_KEY)
    return checkpoint


_DEEPSPEED_ENTRIES = {
    "module",
    "buffer_names",
    "optimizer",
    "param_shapes",
    "frozen_param_shapes",
    "frozen_param_fragments",
    "shared_params",
    "lr_scheduler",
    "data_sampler",
    "random_ltd",
    "sparse_tensor_module_names",
    "csr_tensor_module_names",
    "skipped_steps",
    "global_steps",
    "global_samples",
    "dp_world_size",
    "mp_world_size",
    "ds_config",
    "ds_version",
}
