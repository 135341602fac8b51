"""Adapter-only folders, written and read: peft's format where peft has the method, ours
for the rest, and what a module exports (merged or peft, always with a model card).

* a **peft folder** (``adapter_config.json`` + ``adapter_model.safetensors``): LoRA, (IA)3,
  HUT (:mod:`~hadamard_lit.interop.peft_format`);
* a **hadamard_lit folder** (``hadamard_lit_adapter.json`` + ``adapter_model.safetensors``):
  any method, our parameter names, the strategy as ``class_path``/``init_args``.

Both load with ``model.init_args.init_adapter_from`` (as a checkpoint does): a new run
starting from the adapter.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from torch import nn

from hadamard_lit import __version__
from hadamard_lit.adapters.base import AdapterStrategy, get_adapter_record
from hadamard_lit.adapters.state import adapter_state_dict, load_adapter_state_dict
from hadamard_lit.backbones import check_output_dir, save_pretrained_atomic
from hadamard_lit.interop import peft_format, peft_import
from hadamard_lit.interop.model_card import CardFacts, last_metrics, write_card
from hadamard_lit.interop.peft_format import AdapterFormatError

if TYPE_CHECKING:
    from hadamard_lit.modules.base import AdapterModule

log = logging.getLogger(__name__)

OURS_FILE = "hadamard_lit_adapter.json"
ADAPTER_SUBFOLDER = "adapter"
ExportFormat = Literal["merged", "peft"]


def is_peft_folder(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / peft_format.CONFIG_FILE).is_file()


def is_adapter_folder(path: str | os.PathLike[str]) -> bool:
    """A peft or hadamard_lit adapter folder (not a checkpoint)."""
    return is_peft_folder(path) or (Path(path) / OURS_FILE).is_file()


def save_adapter_folder(model: nn.Module, folder: Path, task_type: str | None = None) -> str:
    """Write ``model``'s adapter into ``folder`` (existing, empty): peft's format where
    peft has the method and is installed, else ours. Returns the format written."""
    from safetensors.torch import save_file

    from hadamard_lit.modules.hparams import strategy_config  # (modules import this module)

    try:
        peft_format.peft_folder_writer(model, task_type=task_type)(folder)
        return "peft"
    except (AdapterFormatError, ImportError):
        pass  # no peft equivalent, or no peft: our own format
    record = get_adapter_record(model)
    description = {
        "format": "hadamard_lit",
        "hadamard_lit_version": __version__,
        "strategy": strategy_config(record.strategy),
        "adapted": list(record.adapted),
        "modules_to_save": list(record.modules_to_save),
    }
    (folder / OURS_FILE).write_text(json.dumps(description, indent=2, default=str) + "\n")
    tensors = {k: v.cpu().contiguous() for k, v in adapter_state_dict(model).items()}
    save_file(tensors, str(folder / peft_format.WEIGHTS_FILE))
    return "hadamard_lit"


def check_adapter_folder(
    path: str | os.PathLike[str], configured: AdapterStrategy | None = None
) -> None:
    """Refuse, by name, a folder that cannot be loaded, or (``configured``) not into the
    run's method: before any backbone is built."""
    if is_peft_folder(path):
        peft_import.read_peft_config(path)
        if configured is not None:
            check_folder_method(configured, path)
        return
    if not (Path(path) / peft_format.WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{path} has {OURS_FILE} but no {peft_format.WEIGHTS_FILE}")
    if configured is not None:  # tensors of the same names but another scale would load
        from hadamard_lit.modules.hparams import strategy_config

        recorded = json.loads((Path(path) / OURS_FILE).read_text()).get("strategy")
        if recorded != json.loads(json.dumps(strategy_config(configured), default=str)):
            raise AdapterFormatError(
                f"init_adapter_from={str(path)!r} holds {recorded} (its {OURS_FILE}); the "
                f"run's adapter is {configured!r}: configure the same method and options"
            )


def check_folder_method(configured: AdapterStrategy, folder: str | os.PathLike[str]) -> None:
    """Refuse a peft folder of another method than the run's (before any backbone loads).

    Raises:
        AdapterFormatError: the folder's method is not ``configured``'s, or it cannot be
            loaded exactly.
    """
    if not is_peft_folder(folder):
        return
    config = peft_import.read_peft_config(folder)
    wanted = peft_format.BY_TYPE[str(config["peft_type"]).upper()].strategy
    if type(configured) is not wanted:
        raise AdapterFormatError(
            f"init_adapter_from={str(folder)!r} is a peft {wanted.__name__} adapter but the "
            f"run's adapter is {configured.name}: set model.init_args.adapter.class_path to "
            f"{wanted.__module__.rsplit('.', 1)[0]}.{wanted.__name__}"
        )


def adopt_folder_strategy(
    configured: AdapterStrategy, folder: str | os.PathLike[str], model: nn.Module
) -> AdapterStrategy:
    """The strategy to apply when a run starts from the adapter ``folder``.

    A peft folder fixes what the adapter is: its targets, rank and (LoRA) scale. The run's
    ``adapter`` must be the same method; where the run's own value differs from the
    folder's and is not the method's default, the run is refused (each option named);
    where it is the default, the folder's is taken and a warning says so. Dropout, a
    training choice, stays the run's. Targets are compared as the modules they select in
    ``model``, in any order. A hadamard_lit folder is loaded into the configured strategy
    as it is (its tensors' names and shapes are checked when they are copied).

    Raises:
        AdapterFormatError: another method, or options that disagree (each named).
    """
    if not is_peft_folder(folder):
        return configured
    check_folder_method(configured, folder)
    found = peft_import.strategy_from_peft(folder)
    if hasattr(found, "dropout"):
        found.dropout = configured.dropout  # type: ignore[attr-defined]
    defaults = {
        name: p.default
        for name, p in inspect.signature(type(configured).__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    ours, theirs = _fixed_by_folder(configured, model), _fixed_by_folder(found, model)
    run_args = configured.init_args()
    differ, taken = {}, {}
    for name, value in theirs.items():
        if ours[name] == value:
            continue
        if name in run_args and run_args[name] != defaults.get(name):
            differ[name] = (run_args[name], found.init_args()[name])
        else:
            taken[name] = found.init_args()[name]
    if differ:
        listed = ", ".join(f"{k}: run {a!r}, folder {b!r}" for k, (a, b) in differ.items())
        raise AdapterFormatError(
            f"init_adapter_from={str(folder)!r} holds a {found!r}; the run's adapter sets "
            f"other values ({listed}): remove them from the run's config to take the folder's"
        )
    if taken:
        log.warning("init_adapter_from=%s: the peft folder's %s replace the run's defaults",
                    folder, ", ".join(f"{k}={v!r}" for k, v in taken.items()))  # fmt: skip
    return found


def _fixed_by_folder(strategy: AdapterStrategy, model: nn.Module) -> dict[str, Any]:
    """What a peft folder fixes about ``strategy``, comparably: the modules it adapts (a
    set, resolved in ``model``), the rank, LoRA's scale, (IA)3's input-scaled modules."""
    targets = strategy.target_names(model)
    fixed: dict[str, Any] = {"target_modules": frozenset(targets)}
    if hasattr(strategy, "rank"):
        fixed["rank"] = strategy.rank
    if type(strategy).__name__ == "LoRA":
        fixed["alpha"] = float(strategy.alpha)  # type: ignore[attr-defined]
    if type(strategy).__name__ == "IA3":
        options = strategy.layer_options(model, targets)
        fixed["feedforward_modules"] = frozenset(
            n for n, o in options.items() if o.get("scale_input")
        )
    return fixed


def load_adapter_folder(model: nn.Module, folder: str | os.PathLike[str]) -> None:
    """Copy the folder's tensors into ``model`` (its strategy applied as
    :func:`adopt_folder_strategy` says)."""
    if is_peft_folder(folder):
        peft_import.load_peft_tensors(model, folder)
        return
    from safetensors.torch import load_file

    load_adapter_state_dict(model, load_file(str(Path(folder) / peft_format.WEIGHTS_FILE)))


# -- what a module exports -----------------------------------------------------------------


def card_facts(
    module: AdapterModule,
    kind: ExportFormat,
    selection: dict[str, Any] | None = None,
    run_dir: Path | None = None,
    checkpoint: str | None = None,
    validation: dict[str, Any] | None = None,
) -> CardFacts:
    """The model card's facts about ``module`` (adapted, not yet merged)."""
    from hadamard_lit.adapters.state import count_parameters, count_trainable_parameters

    model = module.model
    record = get_adapter_record(model)
    config = run_dir / "config.yaml" if run_dir is not None else None
    return CardFacts(
        base_model=module.model_name_or_path or f"(built from a config: {module.backbone_config})",
        model_class=type(model).__name__,
        method=record.strategy.name,
        method_options=record.strategy.init_args(),
        trainable_params=count_trainable_parameters(model),
        total_params=count_parameters(model),
        task=module.task,
        kind=kind,
        selection=selection,
        metrics=last_metrics(run_dir) if run_dir is not None else {},
        config_yaml=config.read_text() if config is not None and config.is_file() else None,
        adapted_modules=list(record.adapted),
        run_dir=None if run_dir is None else str(run_dir),
        base_kwargs=_base_kwargs(model),
        checkpoint=checkpoint,
        validation=validation,
    )


def _base_kwargs(model: nn.Module) -> dict[str, Any]:
    """What ``from_pretrained`` of the base needs for the adapter's head to fit."""
    if type(model).__name__.endswith("ForSequenceClassification"):
        config: Any = model.config  # a transformers PretrainedConfig
        return {"num_labels": int(config.num_labels)}
    return {}


def export_module(
    module: AdapterModule,
    output_dir: str | os.PathLike[str],
    *,
    format: ExportFormat = "merged",
    with_adapter: bool = False,
    overwrite: bool = False,
    selection: dict[str, Any] | None = None,
    run_dir: Path | None = None,
    checkpoint: str | None = None,
    validation: dict[str, Any] | None = None,
) -> Path:
    """Write ``module`` to ``output_dir`` with a model card, all or nothing.

    ``merged``: a plain transformers model (the adapter folded in; ``module.model`` is merged
    in place) and the tokenizer; ``with_adapter`` also writes the adapter alone in
    ``adapter/``. ``peft``: a peft adapter folder and the tokenizer (LoRA, (IA)3, HUT).

    Raises:
        ValueError: ``peft`` for a method peft does not have (before anything is written).
        FileExistsError: ``output_dir`` is not empty and ``overwrite`` is False.
    """
    if format not in ("merged", "peft"):
        raise ValueError(f"export format must be 'merged' or 'peft', got {format!r}")
    check_output_dir(output_dir, overwrite)
    module.configure_model()
    model = module.model
    facts = card_facts(module, format, selection, run_dir, checkpoint, validation)
    name = Path(output_dir).resolve().name
    tokenizer = module.tokenizer
    if format == "peft":
        if with_adapter:
            raise ValueError("with_adapter is for the merged export; a peft export is the adapter")

        def extra_peft(folder: Path) -> None:
            tokenizer.save_pretrained(folder)
            write_card(folder, facts, name)

        task_type = peft_format.task_type_of(model, facts.auto_class)
        return peft_format.save_peft_adapter(
            model, output_dir, module.model_name_or_path, overwrite, extra_peft, task_type
        )

    # The adapter alone is written before the merge, which removes the adapter layers, into
    # a private temporary folder beside the target that is moved into the export at the end.
    parent = Path(output_dir).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    adapter_dir = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".adapter", dir=parent))
    try:
        if with_adapter:
            save_adapter_folder(
                model, adapter_dir, peft_format.task_type_of(model, facts.auto_class)
            )
        get_adapter_record(model).strategy.merge(model)

        def extra_merged(folder: Path) -> None:
            if with_adapter:
                adapter_dir.rename(folder / ADAPTER_SUBFOLDER)
            write_card(folder, facts, name)

        return save_pretrained_atomic(model, tokenizer, output_dir, overwrite, extra=extra_merged)
    finally:
        shutil.rmtree(adapter_dir, ignore_errors=True)
