"""peft's adapter folders: write our LoRA, (IA)3 and HUT adapters as peft LoRA, IA3 and
HiRA, and start from such folders.

A peft folder is ``adapter_config.json`` + ``adapter_model.safetensors``; peft, vLLM and
TGI load it onto the base model (``PeftModel.from_pretrained(base, folder)``). The methods
are the same functions, so only names and one scale differ:

=========  ======================================  ==========================================
ours       computes                                peft
=========  ======================================  ==========================================
LoRA       ``W x + (alpha/r) B A x``               LORA ``lora_A.weight``, ``lora_B.weight``;
                                                   scale ``lora_alpha / r`` (rsLoRA:
                                                   ``lora_alpha / sqrt(r)``)
(IA)3      ``l ⊙ (W x + b)`` or ``W (l ⊙ x) + b``  IA3 ``ia3_l``: ``(out, 1)``, or ``(1, in)``
                                                   for ``feedforward_modules``
HUT        ``W ⊙ (1 + (alpha/r) B A)``             HIRA ``hira_A``, ``hira_B``; no scale, so
                                                   ``B`` is written times ``alpha / r`` and
                                                   read back with ``alpha = r``
=========  ======================================  ==========================================

AdaDHP and the Hadamard Adapter have no peft counterpart: export them merged
(``export`` without ``--format peft``). The task head and any other module trained in
full travel as peft's ``modules_to_save``. Writing needs peft (its config classes write
the ``adapter_config.json`` its loader expects); reading does not.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hadamard_lit.adapters import HUT, IA3, LoRA
from hadamard_lit.adapters.base import AdapterLayer, AdapterStrategy, get_adapter_record
from hadamard_lit.adapters.state import adapter_state_dict, load_adapter_state_dict
from hadamard_lit.backbones import write_folder_atomic

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
#: peft's prefix of every saved tensor name (``PeftModel`` -> its tuner -> the model).
PREFIX = "base_model.model."


class AdapterFormatError(ValueError):
    """An adapter that cannot cross between hadamard_lit and peft exactly (the message says
    why and what to do instead)."""


@dataclass(frozen=True)
class PeftMethod:
    """One of our methods and its peft type: the config class and tensor names."""

    peft_type: str
    config_class: str  # in ``peft``
    strategy: type[AdapterStrategy]
    tensors: Mapping[str, str]  # our layer's parameter name -> peft's, below the module


METHODS = (
    PeftMethod("LORA", "LoraConfig", LoRA, {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight"}),
    PeftMethod("IA3", "IA3Config", IA3, {"ia3_scale": "ia3_l"}),
    PeftMethod("HIRA", "HiraConfig", HUT, {"hut_A": "hira_A", "hut_B": "hira_B"}),
)
BY_TYPE = {m.peft_type: m for m in METHODS}

#: peft task types by the transformers class suffix (``None``: a plain ``PeftModel``).
TASK_TYPES = (
    ("ForSequenceClassification", "SEQ_CLS"),
    ("ForConditionalGeneration", "SEQ_2_SEQ_LM"),
    ("ForSeq2SeqLM", "SEQ_2_SEQ_LM"),
    ("ForCausalLM", "CAUSAL_LM"),
    ("ForTokenClassification", "TOKEN_CLS"),
    ("ForQuestionAnswering", "QUESTION_ANS"),
)

#: adapter_config.json options that change what the adapter computes and that our layers
#: do not have: a folder that sets them is refused, never loaded approximately.
UNSUPPORTED = {
    "LORA": {
        "use_dora": False, "rank_pattern": {}, "alpha_pattern": {}, "bias": "none",
        "lora_bias": False, "layers_to_transform": None, "exclude_modules": None,
        "target_parameters": None, "trainable_token_indices": None, "layer_replication": None,
        "use_qalora": False, "use_bdlora": None,
    },
    "IA3": {"layers_to_transform": None, "exclude_modules": None},
    "HIRA": {"rank_pattern": {}, "layers_to_transform": None, "exclude_modules": None},
}  # fmt: skip


def method_for(strategy: AdapterStrategy) -> PeftMethod:
    """The peft type of ``strategy``.

    Raises:
        ValueError: peft has no such method (AdaDHP, the Hadamard Adapter, full, head only).
    """
    for method in METHODS:
        if type(strategy) is method.strategy:
            return method
    names = ", ".join(m.strategy.__name__ for m in METHODS)
    raise AdapterFormatError(
        f"{strategy.name} has no peft equivalent (peft-format export covers {names}): "
        "export it merged instead (`export` without --format peft), which writes a plain "
        "transformers model that needs neither hadamard_lit nor peft"
    )


def task_type_of(model: nn.Module) -> str | None:
    """peft's ``task_type`` for a transformers model class (``None`` if none fits)."""
    name = type(model).__name__
    return next((task for suffix, task in TASK_TYPES if name.endswith(suffix)), None)


# -- writing -------------------------------------------------------------------------------


def peft_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The adapted ``model``'s trained tensors under peft's names, in peft's shapes."""
    return peft_layout(model, adapter_state_dict(model))


def peft_layout(
    model: nn.Module, tensors: Mapping[str, Tensor], gradients: bool = False
) -> dict[str, Tensor]:
    """``tensors`` (ours, by parameter name) under peft's names and shapes.

    ``gradients``: they are gradients of those parameters, so HUT's ``B``, which peft
    holds times ``alpha / r``, has its gradient divided by ``alpha / r`` instead.
    """
    record = get_adapter_record(model)
    method = method_for(record.strategy)
    layers = {name: model.get_submodule(name) for name in record.adapted}
    out: dict[str, Tensor] = {}
    for name, value in tensors.items():
        module_name, _, local = name.rpartition(".")
        layer = layers.get(module_name)
        if isinstance(layer, AdapterLayer) and local in method.tensors:
            if method.peft_type == "IA3":  # peft keeps (IA)3 vectors as matrices
                value = value.reshape(1, -1) if layer.scale_input else value.reshape(-1, 1)
            elif method.peft_type == "HIRA" and local == "hut_B":
                # HiRA has no scale: alpha / r is folded into B.
                value = value / layer.scaling if gradients else value * layer.scaling
            name = f"{module_name}.{method.tensors[local]}"
        out[PREFIX + name] = value.contiguous()
    return out


def peft_config(model: nn.Module, base_model_name_or_path: str | None = None) -> Any:
    """A peft config object (``LoraConfig``, ``IA3Config``, ``HiraConfig``) for ``model``.

    Raises:
        ImportError: peft is not installed, or this peft has no such method.
        ValueError: the method has no peft equivalent.
    """
    record = get_adapter_record(model)
    method = method_for(record.strategy)
    peft = _import_peft()
    config_class = getattr(peft, method.config_class, None)
    if config_class is None:
        raise ImportError(
            f"peft {peft.__version__} has no {method.config_class} ({method.peft_type}): "
            f"install a peft that has it to export {record.strategy.name} in peft's format"
        )
    layers = [model.get_submodule(name) for name in record.adapted]
    strategy = record.strategy
    options: dict[str, Any] = {
        "target_modules": list(record.adapted),
        "modules_to_save": list(record.modules_to_save) or None,
        "task_type": task_type_of(model),
        "base_model_name_or_path": base_model_name_or_path,
        # GPT-2's Conv1D stores (in, out); peft needs to know to transpose it.
        "fan_in_fan_out": any(layer.transposed for layer in layers),
        "inference_mode": True,
    }
    if method.peft_type == "LORA":
        options.update(r=strategy.rank, lora_alpha=strategy.alpha, lora_dropout=strategy.dropout)
    elif method.peft_type == "HIRA":
        options.update(r=strategy.rank, hira_dropout=strategy.dropout)
    else:
        options["feedforward_modules"] = [n for n, la in zip(record.adapted, layers, strict=True)
                                          if la.scale_input]  # fmt: skip
    return config_class(**options)


def save_peft_adapter(
    model: nn.Module,
    output_dir: str | os.PathLike[str],
    base_model_name_or_path: str | None = None,
    overwrite: bool = False,
    extra: Any = None,
) -> Path:
    """Write ``model``'s adapter (LoRA, (IA)3 or HUT) as a peft folder, all or nothing.

    ``PeftModel.from_pretrained(base, output_dir)`` then computes what ``model`` does.
    ``extra(folder)`` may add files (a model card, the tokenizer) before the folder is
    moved into place.

    Raises:
        ValueError: the method has no peft equivalent (nothing is written).
        ImportError: peft is not installed (nothing is written).
        FileExistsError: ``output_dir`` is not empty and ``overwrite`` is False.
    """
    from safetensors.torch import save_file

    config = peft_config(model, base_model_name_or_path)  # refuses before any writing
    tensors = peft_tensors(model)

    def write(folder: Path) -> None:
        config.save_pretrained(str(folder))
        save_file({k: v.cpu() for k, v in tensors.items()}, str(folder / WEIGHTS_FILE))
        if extra is not None:
            extra(folder)

    return write_folder_atomic(output_dir, write, overwrite)


def _import_peft() -> Any:
    try:
        import peft
    except ImportError as err:
        raise ImportError(
            "Writing peft's format needs peft: pip install 'hadamard-lit[peft]'"
        ) from err
    return peft


# -- reading ------------------------------------------------------------------------------


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
    target = config.get("target_modules")
    if target == "all-linear" or target is None:
        odd["target_modules"] = target
    if odd:
        raise AdapterFormatError(
            f"{path / CONFIG_FILE} sets {odd}, which hadamard_lit's "
            f"{BY_TYPE[peft_type].strategy.__name__} cannot compute exactly; only the plain "
            "method is loaded (list target_modules by name)"
        )
    return config


def _patterns(value: Any) -> list[str] | None:
    """peft's module selector (a list of names/suffixes, or one regex) as our patterns."""
    if value is None:
        return None
    if isinstance(value, str):  # peft: a regex matched against the whole module name
        return [f"re:{value}"]
    return list(value)


def _saved_modules(model: nn.Module, names: list[str] | None) -> list[str]:
    """The modules of ``model`` that peft's ``modules_to_save`` names (suffix matches;
    peft adds ``classifier`` and ``score`` for classification whether the model has them)."""
    wanted = list(dict.fromkeys(names or []))
    return [
        name
        for name, _ in model.named_modules()
        if name
        and any(name == w or name.endswith("." + w) for w in wanted)
        and not any(name.startswith(other + ".") for other in wanted if other != name)
    ]


def strategy_from_peft(
    folder: str | os.PathLike[str], model: nn.Module | None = None
) -> AdapterStrategy:
    """Our strategy that computes what the peft adapter in ``folder`` computes.

    With ``model``, ``modules_to_save`` is resolved to its module names (peft lists names a
    model may not have); without, the task head default is kept.
    """
    config = read_peft_config(folder)
    method = BY_TYPE[str(config["peft_type"]).upper()]
    targets = _patterns(config.get("target_modules"))
    saved = None if model is None else _saved_modules(model, config.get("modules_to_save"))
    r = config.get("r")
    if method.peft_type == "LORA":
        alpha = float(config.get("lora_alpha", r))
        if config.get("use_rslora"):
            alpha *= math.sqrt(r)  # our scale alpha / r equals rsLoRA's lora_alpha / sqrt(r)
        dropout = float(config.get("lora_dropout", 0.0))
        return LoRA(targets, rank=r, alpha=alpha, dropout=dropout, modules_to_save=saved)
    if method.peft_type == "HIRA":
        dropout = float(config.get("hira_dropout", 0.0))
        return HUT(targets, rank=r, alpha=float(r), dropout=dropout, modules_to_save=saved)
    feedforward = _patterns(config.get("feedforward_modules")) or []
    return IA3(targets, feedforward_modules=feedforward, modules_to_save=saved)


def load_peft_tensors(model: nn.Module, folder: str | os.PathLike[str]) -> None:
    """Copy the peft folder's tensors into ``model``, which has the folder's strategy
    applied (:func:`strategy_from_peft`).

    Raises:
        ValueError: tensors missing or left over, or shapes that differ.
    """
    from safetensors.torch import load_file

    record = get_adapter_record(model)
    method = method_for(record.strategy)
    back = {peft: ours for ours, peft in method.tensors.items()}
    params = dict(model.named_parameters())
    state: dict[str, Tensor] = {}
    for key, value in load_file(str(Path(folder) / WEIGHTS_FILE)).items():
        name = key.removeprefix(PREFIX)
        for peft_name, ours in back.items():
            if name.endswith("." + peft_name):
                name = name[: -len(peft_name)] + ours
                break
        param = params.get(name)
        if param is not None and value.numel() == param.numel():
            # (IA)3's (out, 1) / (1, in) matrices are our vectors; other shapes are checked.
            value = value.reshape(param.shape).to(param.dtype)
        state[name] = value
    load_adapter_state_dict(model, state)


def load_peft_adapter(model: nn.Module, folder: str | os.PathLike[str]) -> AdapterStrategy:
    """Apply the peft adapter in ``folder`` to a freshly loaded ``model`` as our method,
    with its trained tensors: the model then computes what peft's would, and trains on.

    Returns:
        The applied strategy (LoRA, IA3 or HUT).

    Raises:
        FileNotFoundError, ValueError: see :func:`read_peft_config`, :func:`load_peft_tensors`.
    """
    strategy = strategy_from_peft(folder, model)
    strategy.apply(model)
    with torch.no_grad():
        load_peft_tensors(model, folder)
    return strategy
