"""Check run configs without running them (``submit`` checks every grid point this way
before it submits anything, so a typo never reaches the queue).

A config passes when ``fit``'s parser accepts it (every key, type and ``class_path``) and
its cheap parts build: the datamodule (task, split protocol, data folder: nothing is
read) and the adapter strategy, and a local model folder exists. No backbone is loaded:
checking a hundred points takes seconds.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from jsonargparse import ArgumentError, Namespace

from hadamard_lit.backbones import resolve_model_path
from hadamard_lit.cli import PARSER_KWARGS, HadamardCLI


class ConfigError(ValueError):
    """A run config that ``fit`` would refuse."""


def _class(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _init_args(namespace: Any) -> dict[str, Any]:
    args = namespace.get("init_args") or {}
    return args.as_dict() if isinstance(args, Namespace) else dict(args)


def check_parts(config: Namespace) -> None:
    """Build the cheap parts of a parsed ``fit`` config; raise what they raise."""
    model = config.get("model")
    if model is not None:
        init = _init_args(model)
        adapter = init.get("adapter")
        if isinstance(adapter, dict) and adapter.get("class_path"):
            _class(adapter["class_path"])(**(adapter.get("init_args") or {}))
        source = init.get("model_name_or_path")
        if isinstance(source, str):
            resolve_model_path(source)
    data = config.get("data")
    if data is not None and data.get("class_path"):
        # The tokenizer is the model's (linked at instantiation); a name stands in for it,
        # loaded only on first use, which this never reaches.
        _class(data["class_path"])(**{**_init_args(data), "tokenizer": "unused"})


class _ParseOnly(HadamardCLI):
    """The CLI up to its parsed config; :func:`check_parts` instead of instantiating."""

    def instantiate_classes(self) -> None:
        check_parts(self.config)

    def _set_seed(self) -> None:  # a check must not reseed the caller's process
        pass


class ConfigChecker:
    """``fit``'s parser, built once, for checking many argument lists."""

    def __init__(self) -> None:
        self._cli: _ParseOnly | None = None

    def check(self, args: Sequence[str]) -> None:
        """Raise :class:`ConfigError` (the parser's or the part's message) if ``fit ARGS``
        would be refused."""
        try:
            if self._cli is None:
                kwargs = {**PARSER_KWARGS, "exit_on_error": False}
                self._cli = _ParseOnly(args=list(args), run=False, parser_kwargs=kwargs)
            else:
                check_parts(self._cli.parser.parse_args(list(args)))
        except Exception as error:  # the message is what the user needs; say it plainly
            raise ConfigError(_message(error)) from error


def _message(error: BaseException) -> str:
    """What is wrong, said once (the parser's errors are already short: cli.py)."""
    if isinstance(error, ArgumentError):
        return str(error)
    text = str(error).strip()
    return text if isinstance(error, ValueError | KeyError) else f"{type(error).__name__}: {text}"
