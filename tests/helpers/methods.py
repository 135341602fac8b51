"""Every adapter strategy the package ships, found in it rather than listed by hand.

A new method file under ``hadamard_lit/adapters/`` is in every parametrised test without a
test being edited. Its defaults must build a strategy (``Strategy()``); the low-rank ones
run at rank 2 here to keep the tiny models tiny.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import hadamard_lit.adapters as adapters
from hadamard_lit.adapters import AdapterStrategy


def strategy_classes() -> dict[str, type[AdapterStrategy]]:
    """Module name → the concrete strategy class it defines, for every adapters module."""
    found: dict[str, type[AdapterStrategy]] = {}
    for info in pkgutil.iter_modules(adapters.__path__):
        module = importlib.import_module(f"{adapters.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, AdapterStrategy)
                and cls.__module__ == module.__name__
                and not inspect.isabstract(cls)
                and not cls.__name__.startswith("_")
                and "make_layer" in _concrete(cls)
            ):
                found[info.name] = cls
    return dict(sorted(found.items()))


def _concrete(cls: type) -> set[str]:
    return {
        name for name in dir(cls) if not getattr(getattr(cls, name), "__isabstractmethod__", False)
    }


def make(name: str) -> AdapterStrategy:
    """The strategy of adapters module ``name`` with its defaults (rank 2 if it has a rank)."""
    cls = strategy_classes()[name]
    if "rank" in inspect.signature(cls).parameters:
        return cls(rank=2)  # type: ignore[call-arg]
    return cls()


#: Module name of every strategy, e.g. ``["adadhp", "full", "hadamard_adapter", ...]``.
METHODS = list(strategy_classes())
#: The strategies that inject adapter layers (not full fine-tuning or the head alone).
ADAPTER_METHODS = [m for m in METHODS if m not in ("full", "head_only")]
