"""Start from peft's LoRA, IA3 and HiRA folders: our LoRA, (IA)3 and HUT with their tensors.

The reverse of :mod:`~hadamard_lit.interop.peft_format` (which has the table of names and
scales). Only folders we compute exactly are read; any option that changes what the
adapter computes and that our layers lack is refused by name. Reading needs no peft.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hadamard_lit.adapters import HUT, IA3, LoRA
from hadamard_lit.adapters.base import AdapterLayer, AdapterStrategy, get_adapter_record
from hadamard_lit.adapters.state import load_adapter_state_dict
from hadamard_lit.interop.peft_format import (
    BY_TYPE,
    CONFIG_FILE,
    PREFIX,
    WEIGHTS_FILE,
    AdapterFormatError,
    PeftMethod,
    method_for,
)

#: adapter_config.json options that change what the adapter computes and that our layers
#: do not have: a folder that sets them is refused, never loaded approximately.
UNSUPPORTED: dict[str, dict[str, Any]] = {
    "LORA": {
        "use_dora": False, "rank_pattern": {}, "alpha_pattern": {}, "bias": "none",
        "lora_bias": False, "layers_to_transform": None, "exclude_modules": None,
        "target_parameters": None, "trainable_token_indices": None, "layer_replication": None,
        "use_qalora": False, "use_bdlora": None, "alora_invocation_tokens": None,
        "arrow_config": None, "kasa_config": None, "monteclora_config": None,
    },
    "IA3": {"layers_to_transform": None, "exclude_modules": None},
    "HIRA": {"rank_pattern": {}, "layers_to_transform": None, "exclude_modules": None},
}  # fmt: skip


def read_peft_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``adapter_config.json`` of a peft folder, checked to be one we can load exactly.

    Raises:
        FileNotFoundError: no such folder, or no adapter_config.json / safetensors in it.
        ValueError: a peft type we do not have, or options our layers cannot honour.
    """
    path = Path(folder)
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is not a peft adapter folder: it has no {CONFIG_FILE}"
        )
    if not (path / WEIGHTS_FILE).is_file():
        found = sorted(p.name for p in path.iterdir())
        raise FileNotFoundError(
            f"{str(path)!r} has no {WEIGHTS_FILE} (found {found}); pickled adapter_model.bin "
            "files are not loaded: save the adapter again with peft's safe_serialization"
        )
    config = json.loads((path / CONFIG_FILE).read_text())
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type not in BY_TYPE:
        raise AdapterFormatError(
            f"{path / CONFIG_FILE}: peft_type {config.get('peft_type')!r} has no "
            f"hadamard_lit equivalent; loadable types: {sorted(BY_TYPE)}"
        )
    odd = {
        key: config[key]
        for key, plain in UNSUPPORTED[peft_type].items()
        if config.get(key, plain) not in (plain, None, {}, [])
    }
    # Inits that rewrite the base weights when peft loads the folder (PiSSA, OLoRA, LoftQ,
    # CorDA, EVA, LoRA-GA): peft then computes W_res + s B A, we would compute W + s B A.
    if config.get("init_lora_weights", True) not in (True, False, "gaussian"):
        odd["init_lora_weights"] = config["init_lora_weights"]
    if odd:
        raise AdapterFormatError(
            f"{path / CONFIG_FILE} sets {odd}, which hadamard_lit's "
            f"{BY_TYPE[peft_type].strategy.__name__} cannot compute exactly; only the plain "
            "method is loaded"
        )
    return config


def _read_tensors(folder: str | os.PathLike[str]) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return {
        k.removeprefix(PREFIX): v for k, v in load_file(str(Path(folder) / WEIGHTS_FILE)).items()
    }


def _split(method: PeftMethod, tensors: Mapping[str, Tensor]) -> tuple[dict, list[str]]:
    """The folder's tensors as {adapted module: {peft local name: tensor}} and the names of
    the others (the modules to save's parameters)."""
    adapted: dict[str, dict[str, Tensor]] = {}
    others = []
    for name, value in tensors.items():
        local = next((t for t in method.tensors.values() if name.endswith("." + t)), None)
        if local is None:
            others.append(name)
        else:
            adapted.setdefault(name[: -len(local) - 1], {})[local] = value
    return adapted, others


def _rank(config: dict[str, Any], folder: str | os.PathLike[str]) -> int:
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise AdapterFormatError(
            f"{Path(folder) / CONFIG_FILE}: r={r!r}, expected the rank as an integer >= 1"
        )
    return r


def strategy_from_peft(folder: str | os.PathLike[str]) -> AdapterStrategy:
    """Our strategy that computes what the peft adapter in ``folder`` computes.

    What is adapted and what is trained in full are read from the folder's tensors (exact
    module names), not from ``adapter_config.json``'s patterns, whose matching rules
    differ from ours and which may name modules a model does not have; (IA)3's input
    scaling from each vector's shape (``(1, in)``).
    """
    config = read_peft_config(folder)
    method = BY_TYPE[str(config["peft_type"]).upper()]
    adapted, others = _split(method, _read_tensors(folder))
    if not adapted:
        raise AdapterFormatError(f"{folder}: {WEIGHTS_FILE} holds no {method.peft_type} tensor")
    targets = sorted(adapted)
    saved = sorted({name.rpartition(".")[0] for name in others})
    if method.peft_type == "LORA":
        r = _rank(config, folder)
        alpha = float(config.get("lora_alpha", 8))  # peft's default
        if config.get("use_rslora"):
            alpha *= math.sqrt(r)  # our scale alpha / r equals rsLoRA's lora_alpha / sqrt(r)
        dropout = float(config.get("lora_dropout", 0.0))
        return LoRA(targets, rank=r, alpha=alpha, dropout=dropout, modules_to_save=saved)
    if method.peft_type == "HIRA":
        r = _rank(config, folder)
        dropout = float(config.get("hira_dropout", 0.0))
        return HUT(targets, rank=r, alpha=float(r), dropout=dropout, modules_to_save=saved)
    feedforward = [m for m in targets if _is_input_scale(adapted[m]["ia3_l"])]
    return IA3(targets, feedforward_modules=feedforward, modules_to_save=saved)


def _is_input_scale(vector: Tensor) -> bool:
    """peft's (IA)3 vector: ``(1, in)`` scales the input, ``(out, 1)`` the output."""
    return vector.dim() == 2 and vector.shape[0] == 1 and vector.shape[1] != 1


def load_peft_tensors(model: nn.Module, folder: str | os.PathLike[str]) -> None:
    """Copy the peft folder's tensors into ``model``, which has the folder's strategy
    applied (:func:`strategy_from_peft`).

    Raises:
        ValueError: tensors missing or left over, or shapes that differ.
    """
    record = get_adapter_record(model)
    method = method_for(record.strategy)
    adapted, others = _split(method, tensors := _read_tensors(folder))
    back = {peft: ours for ours, peft in method.tensors.items()}
    state: dict[str, Tensor] = {name: tensors[name] for name in others}
    for module, locals_ in adapted.items():
        layer = model.get_submodule(module) if module in record.adapted else None
        for local, value in locals_.items():
            if method.peft_type == "IA3" and isinstance(layer, AdapterLayer):
                # Only the vector's own layout is a vector: (1, in) input, (out, 1) output.
                if _is_input_scale(value) != bool(layer.scale_input):
                    raise AdapterFormatError(
                        f"{module}.ia3_l has shape {tuple(value.shape)}, but the layer scales "
                        f"its {'input' if layer.scale_input else 'output'}"
                    )
                value = value.reshape(-1)
            state[f"{module}.{back[local]}"] = value
    params = dict(model.named_parameters())
    state = {k: v.to(params[k].dtype) if k in params else v for k, v in state.items()}
    load_adapter_state_dict(model, state)


def load_peft_adapter(model: nn.Module, folder: str | os.PathLike[str]) -> AdapterStrategy:
    """Apply the peft adapter in ``folder`` to a freshly loaded ``model`` as our method,
    with its trained tensors: the model then computes what peft's would, and trains on.

    Returns:
        The applied strategy (LoRA, IA3 or HUT).

    Raises:
        FileNotFoundError, ValueError: see :func:`read_peft_config`, :func:`load_peft_tensors`.
    """
    strategy = strategy_from_peft(folder)
    strategy.apply(model)
    with torch.no_grad():
        load_peft_tensors(model, folder)
    return strategy
