"""Checkpoint layouts: a file, or the directory Lightning's DeepSpeed strategy writes.

Lightning's ``DeepSpeedStrategy`` saves a checkpoint *directory* written by DeepSpeed's
engine and leaves the LightningModule's ``state_dict`` out of it; the module's adapter state
travels in the client state instead (:data:`CLIENT_STATE_KEY`, see
``hadamard_lit.modules.checkpointing``), and :func:`read_checkpoint` reads it back from
either form.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

#: Where a checkpoint's consolidated adapter state goes when the strategy drops "state_dict".
CLIENT_STATE_KEY = "hadamard_lit_state_dict"


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


def non_finite(state: dict[str, Any]) -> list[str]:
    """Names of the tensors in ``state`` holding NaN or infinity."""
    return [
        name
        for name, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]  # fmt: skip


def check_checkpoint_file(path: str | os.PathLike[str]) -> None:
    """Refuse, by name, a checkpoint that cannot be one: missing, empty, or cut off.

    A DeepSpeed checkpoint directory is checked for its model-states file.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: an empty or truncated file (not a whole ``torch.save`` archive).
    """
    file = Path(path)
    if file.is_dir():
        if deepspeed_model_states_file(file) is None:
            raise ValueError(
                f"{file} is a directory but not a DeepSpeed checkpoint; for FSDP2 save "
                "consolidated checkpoints (ModelParallelStrategy(save_distributed_checkpoint=False))"
            )
        return
    if not file.exists():
        raise FileNotFoundError(f"checkpoint {str(file)!r} does not exist")
    size = file.stat().st_size
    if size == 0 or not zipfile.is_zipfile(file):
        why = "is empty (0 bytes)" if size == 0 else f"is not a whole checkpoint ({size:,} bytes)"
        raise ValueError(
            f"checkpoint {str(file)!r} {why}: it was cut off while being written (a killed "
            "job?). Use an earlier one, e.g. the best checkpoint beside it, or train again"
        )


def read_checkpoint(path: str | os.PathLike[str], weights_only: bool = True) -> dict[str, Any]:
    """A Lightning checkpoint as a dict whose ``state_dict`` is the adapter state.

    Accepts a checkpoint file (single process, DDP, FSDP2 with
    ``save_distributed_checkpoint=False``) or a DeepSpeed checkpoint directory, whose
    ``state_dict`` is rebuilt from the consolidated adapter state in its client state.

    Raises:
        ValueError: a directory that is not a DeepSpeed checkpoint saved by an
            ``AdapterModule`` (e.g. FSDP2's sharded checkpoints: save them consolidated).
    """
    check_checkpoint_file(path)
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
