"""peft's adapter folders: write our LoRA, (IA)3 and HUT adapters as peft LoRA, IA3 and
HiRA, and start from such folders.

A peft folder is ``adapter_config.json`` + ``adapter_model.safetensors``; peft loads it onto
the base model (``PeftModel.from_pretrained(base, folder)``; vLLM and TGI serve LoRA ones).
The methods are the same functions, so only names and one scale differ:

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
full travel as peft's ``modules_to_save``; peft matches those by plain suffix and adds
``classifier``/``score`` for classification, so every module its loader will look for is
written (DistilBERT's untrained ``pre_classifier`` too). Reading takes what is adapted
and saved from the folder's tensors, whose names are exact. Writing needs peft (its config classes write
the ``adapter_config.json`` its loader expects); reading (:mod:`~hadamard_lit.interop.peft_import`)
does not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from hadamard_lit.adapters import HUT, IA3, LoRA
from hadamard_lit.adapters.base import AdapterLayer, AdapterStrategy, get_adapter_record
from hadamard_lit.adapters.state import adapter_state_dict
from hadamard_lit.backbones import write_folder_atomic
from hadamard_lit.parallel.tensors import gathered, whole

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
    ("LMHeadModel", "CAUSAL_LM"),
    ("ForTokenClassification", "TOKEN_CLS"),
    ("ForQuestionAnswering", "QUESTION_ANS"),
)


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


#: peft task types by the transformers auto class a model was loaded with.
AUTO_TASK_TYPES = {
    "AutoModelForSequenceClassification": "SEQ_CLS",
    "AutoModelForSeq2SeqLM": "SEQ_2_SEQ_LM",
    "AutoModelForCausalLM": "CAUSAL_LM",
    "AutoModelForTokenClassification": "TOKEN_CLS",
    "AutoModelForQuestionAnswering": "QUESTION_ANS",
}
#: What peft trains in full for a task type whatever the config says (peft_model.py).
TASK_MODULES_TO_SAVE = {"SEQ_CLS": ("classifier", "score"), "TOKEN_CLS": ("classifier", "score")}


def task_type_of(model: nn.Module, auto_class: str | None = None) -> str | None:
    """peft's ``task_type`` for ``model``: from the auto class it was loaded with when
    known (``AutoModelForSeq2SeqLM``), else from its class name (``None`` if none fits)."""
    if auto_class in AUTO_TASK_TYPES:
        return AUTO_TASK_TYPES[auto_class]
    name = type(model).__name__
    return next((task for suffix, task in TASK_TYPES if name.endswith(suffix)), None)


def peft_wrapped_modules(model: nn.Module, names: Sequence[str]) -> list[str]:
    """The modules peft trains in full for ``modules_to_save`` = ``names``: every module whose
    name ends with one of them as a plain string (so ``classifier`` also selects
    DistilBERT's ``pre_classifier``), outermost only."""
    keys = [k for k, _ in model.named_modules() if k and any(k.endswith(n) for n in names)]
    return [k for k in keys if not any(k.startswith(other + ".") for other in keys)]


# -- writing -------------------------------------------------------------------------------


def peft_tensors(model: nn.Module, task_type: str | None = None) -> dict[str, Tensor]:
    """The adapted ``model``'s trained tensors under peft's names, in peft's shapes, and
    the weights of every module peft's loader will look for as a module to save
    (:func:`peft_wrapped_modules`; for classification also ``classifier`` / ``score``)."""
    record = get_adapter_record(model)
    out = peft_layout(model, adapter_state_dict(model))
    names = [*record.modules_to_save, *TASK_MODULES_TO_SAVE.get(task_type or "", ())]
    for module in peft_wrapped_modules(model, names):
        for local, param in model.get_submodule(module).named_parameters():
            key = f"{PREFIX}{module}.{local}"
            if key not in out:  # not trained here: peft still loads its (frozen) weights
                with gathered([param]):
                    out[key] = whole(param).detach().clone().contiguous()
    return out


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
                scaling = float(layer.scaling)  # type: ignore[arg-type]  # HUT's alpha / r
                value = value / scaling if gradients else value * scaling
            name = f"{module_name}.{method.tensors[local]}"
        out[PREFIX + name] = value.contiguous()
    return out


def peft_config(
    model: nn.Module, base_model_name_or_path: str | None = None, task_type: str | None = None
) -> Any:
    """A peft config object (``LoraConfig``, ``IA3Config``, ``HiraConfig``) for ``model``
    (``task_type``: peft's, e.g. ``SEQ_CLS``; default: from the model's class).

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
    strategy: Any = record.strategy  # LoRA or HUT where rank/alpha/dropout are read below
    options: dict[str, Any] = {
        "target_modules": list(record.adapted),
        "modules_to_save": list(record.modules_to_save) or None,
        "task_type": task_type or task_type_of(model),
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
    task_type: str | None = None,
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
    write_adapter = peft_folder_writer(model, base_model_name_or_path, task_type)

    def write(folder: Path) -> None:
        write_adapter(folder)
        if extra is not None:
            extra(folder)

    return write_folder_atomic(output_dir, write, overwrite)


def peft_folder_writer(
    model: nn.Module, base_model_name_or_path: str | None = None, task_type: str | None = None
) -> Callable[[Path], None]:
    """What writes ``model``'s adapter as a peft folder into a given (empty) folder; the
    config and tensors are made now, so a method peft lacks is refused before any writing.

    Raises:
        AdapterFormatError, ImportError: see :func:`peft_config`.
    """
    from safetensors.torch import save_file

    config = peft_config(model, base_model_name_or_path, task_type)
    tensors = {k: v.cpu() for k, v in peft_tensors(model, config.task_type).items()}

    def write(folder: Path) -> None:
        config.save_pretrained(str(folder))
        save_file(tensors, str(folder / WEIGHTS_FILE))

    return write


def _import_peft() -> Any:
    try:
        import peft
    except ImportError as err:
        raise ImportError(
            "Writing peft's format needs peft: pip install 'hadamard-lit[peft]'"
        ) from err
    return peft
