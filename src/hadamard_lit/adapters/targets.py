"""The ``target_modules`` a user writes: module-name patterns, and the default task head.

A pattern is either a dotted-name suffix (``"q"`` matches ``encoder.block.0.layer.0.
SelfAttention.q`` but not ``...SelfAttention.qq``), or a regular expression over the whole
module name when written ``"re:<regex>"``. Defaults come from roles instead
(:mod:`hadamard_lit.adapters.roles`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from hadamard_lit.adapters.roles import LINEAR_TYPES

#: Names a transformers task head goes by, for models outside the architecture table.
HEAD_NAMES = ("classifier", "score", "classification_head", "qa_outputs")


def check_patterns(option: str, patterns: Iterable[str]) -> None:
    """Refuse a ``re:`` pattern that is not a valid regular expression, naming ``option``.

    Raises:
        ValueError: with the option, the pattern and the regex error.
    """
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"{option} holds {pattern!r}: patterns are strings")
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as err:
                raise ValueError(
                    f"{option} pattern {pattern!r} is not a valid regular expression: {err} "
                    "(write 're:<regex>', e.g. 're:.*\\.(query|value)', or a dotted suffix "
                    "such as 'query')"
                ) from None


def matches(name: str, pattern: str) -> bool:
    """Whether ``name`` matches ``pattern`` (dotted suffix, or ``re:`` full-match regex)."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return name == pattern or name.endswith("." + pattern)


def _is_inside(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def find_targets(model: nn.Module, patterns: list[str], exclude: Iterable[str] = ()) -> list[str]:
    """Names of the linear layers of ``model`` that ``patterns`` select, in model order.

    Modules at or under a name in ``exclude`` (e.g. the task head) are never selected.

    Raises:
        ValueError: a pattern selects no linear layer (with examples of valid names).
    """
    if not patterns:
        raise ValueError("target_modules is empty: name at least one module pattern")
    exclude = list(exclude)
    linear_names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, LINEAR_TYPES) and not _is_inside(name, exclude)
    ]
    selected: list[str] = []
    for pattern in patterns:
        hits = [n for n in linear_names if matches(n, pattern)]
        if not hits:
            other = [n for n, _ in model.named_modules() if n and matches(n, pattern)]
            why = (
                f"it matches {len(other)} module(s) but none is an nn.Linear or Conv1D "
                f"(e.g. {other[0]!r})"
                if other
                else "it matches no module name"
            )
            examples = sorted({n.rsplit(".", 1)[-1] for n in linear_names})[:20]
            raise ValueError(
                f"target_modules pattern {pattern!r} selects nothing in "
                f"{type(model).__name__}: {why}. Linear layers in this model end with "
                f"{examples}; use a dotted suffix or 're:<regex>'."
            )
        selected.extend(hits)
    order = {n: i for i, n in enumerate(linear_names)}
    return sorted(set(selected), key=order.__getitem__)


def default_modules_to_save(model: nn.Module) -> list[str]:
    """The task head of a transformers ``*For...Classification`` model, if any.

    The architecture table's ``head`` for its families (DistilBERT: ``pre_classifier`` and
    ``classifier``), else the usual names (``classifier``, ``score``, ...).
    """
    from hadamard_lit.adapters.architectures import get_architecture

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    architecture = get_architecture(str(model_type))
    if architecture is not None:
        return architecture.head_modules(model)
    return [name for name in HEAD_NAMES if isinstance(getattr(model, name, None), nn.Module)]
