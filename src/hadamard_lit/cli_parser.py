"""The CLI's argument parser: LightningCLI's, with errors a user can act on.

jsonargparse reports a bad value inside a ``class_path`` type as a tree of union
alternatives with the whole given namespace; :func:`concise_parser_error` cuts it to the
key and the problem, and :func:`class_path_hint` adds what a mistyped ``class_path``
meant (close names, and the adapter strategies).
"""

from __future__ import annotations

import difflib
import importlib
import re
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser


def class_path_hint(message: str) -> str | None:
    """For a parse error about a ``class_path`` that does not import: what would.

    Lists the adapter strategies for a bad ``model.init_args.adapter``, and the closest
    public names of the module the path points into.
    """
    bad = re.findall(r"class_path '([\w.]+)'", message)
    if not bad:
        return None
    lines = []
    failed = False  # whether a path does not import (else the error is about its options)
    for path in dict.fromkeys(bad):
        module_name, _, name = path.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            lines.append(f"{path!r}: no module {module_name!r} to import it from")
            failed = True
            continue
        if hasattr(module, name):
            continue  # this one imports: the error is about another
        failed = True
        public = [
            n for n in dir(module) if not n.startswith("_") and isinstance(getattr(module, n), type)
        ]
        close = difflib.get_close_matches(name, public, n=3, cutoff=0.5)
        if close:
            lines.append(
                f"{path!r}: did you mean {', '.join(f'{module_name}.{c}' for c in close)}?"
            )
    if failed and "adapter" in message:
        import hadamard_lit.adapters as adapters
        from hadamard_lit.adapters import AdapterStrategy
        from hadamard_lit.adapters import __all__ as names

        strategies = [
            f"hadamard_lit.adapters.{n}"
            for n in names
            if isinstance(getattr(adapters, n), type)
            and issubclass(getattr(adapters, n), AdapterStrategy)
            and getattr(adapters, n) is not AdapterStrategy
        ]
        lines.append(
            "adapter strategies: "
            + ", ".join(strategies)
            + " (or any importable AdapterStrategy subclass)"
        )
    return "\n".join(lines) if lines else None


#: Lines of jsonargparse's nested errors that say nothing about what is wrong.
_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes: .*|Errors:|"
    r"Expected a <class 'NoneType'>.*|Given value( type)?: .*)$"
)
_PARSER_KEY = re.compile(r'^Parser key "([\w.]+)":$')
_PROBLEM = re.compile(r"^Problem with given class_path '[\w.]+':$")
_SHORTENED = re.compile(r"^([\w.]+): (.*)$")


def concise_parser_error(message: str) -> str:
    """jsonargparse's error tree, down to what is wrong and where.

    A bad value inside a ``class_path`` type is reported as a tree of union alternatives
    (one of them always ``NoneType``) with the whole given namespace; this keeps the key
    (``model.init_args.adapter``), the innermost problem and the hints, once each.
    """
    lines, keys = [], []
    for raw in message.splitlines():
        line = raw.strip().removeprefix("- ").strip()
        if (key := _PARSER_KEY.match(line)) is not None:
            keys += [key.group(1)]
            continue
        nested = _SHORTENED.match(line)  # a nested parser's error, already shortened
        if nested is not None and _PROBLEM.match(nested.group(2)):
            keys += nested.group(1).split(".init_args.")
            line = nested.group(2)
        lines.append(line)
    if not keys:
        return message
    kept: list[str] = []
    for line in lines:
        if not line or _NOISE.match(line) or line in kept:
            continue
        kept.append(line)
    problems = [i for i, line in enumerate(kept) if _PROBLEM.match(line)]
    if len(problems) > 1:  # keep the innermost class_path's problem only
        kept = [line for i, line in enumerate(kept) if i not in problems[:-1]]
    return f"{'.init_args.'.join(keys)}: " + "\n  ".join(kept)


class HadamardArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors are short and say what a mistyped
    ``class_path`` meant."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        hint = class_path_hint(message)
        message = concise_parser_error(message)
        if hint and not all(line in message for line in hint.splitlines()):
            message = f"{message}\n{hint}"
        super().error(message, ex)
