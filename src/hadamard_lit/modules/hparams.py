"""Hyper-parameters a checkpoint can rebuild a module from, without pickled objects.

LightningCLI saves a module's config (``class_path``/``init_args`` dicts) as its hparams
and rebuilds from them in ``load_from_checkpoint``. A module built in Python gets the
same treatment here, so both kinds of checkpoint load with ``weights_only=True``.
"""

from __future__ import annotations

import functools
from typing import Any

from hadamard_lit.adapters import AdapterStrategy

_PLAIN = (str, int, float, bool, type(None))
_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _as_config(value: Any) -> dict[str, Any] | None:
    """``value`` as a LightningCLI ``class_path``/``init_args`` dict, when that is possible.

    Works for a class, a ``functools.partial`` of a class (optimisers), and a strategy
    (:meth:`~hadamard_lit.adapters.AdapterStrategy.init_args`, its contract).
    """
    if isinstance(value, type):
        return {"class_path": _class_path(value)}
    if isinstance(value, functools.partial) and isinstance(value.func, type) and not value.args:
        if _is_plain(value.keywords):
            return {"class_path": _class_path(value.func), "init_args": dict(value.keywords)}
        return None
    if not isinstance(value, AdapterStrategy):
        return None
    init_args = value.init_args()
    if not all(_is_plain(v) for v in init_args.values()):
        return None
    return {"class_path": _class_path(type(value)), "init_args": init_args}


def make_hparams_portable(hparams: Any) -> None:
    """Store object-valued hparams as class-path dicts, as LightningCLI does.

    A module built in Python would otherwise pickle its strategy and optimiser factory
    into the checkpoint, which ``torch.load(weights_only=True)`` (the default) refuses.
    Left alone: hparams already given by LightningCLI. An optimiser or scheduler factory
    that cannot be described (a lambda) is dropped: rebuilding for inference needs none.
    """
    if "_instantiator" in hparams:
        return
    portable = True
    for key in ("adapter", "optimizer", "lr_scheduler"):
        value = hparams.get(key)
        if _is_plain(value):
            continue
        config = _as_config(value)
        if config is not None:
            hparams[key] = config
        elif key == "adapter":
            portable = False
        else:
            del hparams[key]
    if portable:
        hparams["_instantiator"] = _INSTANTIATOR


def strategy_config(strategy: AdapterStrategy) -> dict[str, Any]:
    """``strategy`` as the ``class_path``/``init_args`` dict a checkpoint rebuilds it from."""
    config = _as_config(strategy)
    if config is None:
        raise TypeError(f"{strategy!r} has init_args that are not plain values")
    return config
