"""Which modules a strategy adapts: model-family detection and module-name patterns.

A pattern is either a dotted-name suffix (``"q"`` matches ``encoder.block.0.layer.0.
SelfAttention.q`` but not ``...SelfAttention.qq``), or a regular expression over the whole
module name when written ``"re:<regex>"``. Families are detected from ``model.config``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn
from transformers.pytorch_utils import Conv1D

#: The layer types a strategy can adapt.
LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D)

#: Supported families, keyed by the name used in strategies' default tables.
FAMILY_MODEL_TYPES: dict[str, tuple[str, ...]] = {
    "t5": ("t5", "mt5", "umt5"),
    "bert": ("bert", "roberta", "xlm-roberta", "camembert"),
    "gpt2": ("gpt2",),
    "llama": ("llama", "mistral", "qwen2", "qwen3"),
}

#: Names a transformers task head goes by, adapted never, trained by default.
HEAD_NAMES = ("classifier", "score", "classification_head", "qa_outputs")

_LAYER_INDEX = re.compile(r"(?:^|\.)(?:block|layer|layers|h)\.(\d+)(?:\.|$)")


def detect_family(model: nn.Module) -> str:
    """The family of ``model`` (``t5``, ``t5_gated``, ``bert``, ``gpt2`` or ``llama``).

    T5 v1.1 / mT5 (gated FFN with ``wi_0``/``wi_1``) is ``t5_gated``.

    Raises:
        ValueError: the model has no config or its ``model_type`` is not supported.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    for family, model_types in FAMILY_MODEL_TYPES.items():
        if model_type in model_types:
            if family == "t5" and getattr(config, "is_gated_act", False):
                return "t5_gated"
            return family
    supported = sorted(t for types in FAMILY_MODEL_TYPES.values() for t in types)
    raise ValueError(
        f"Cannot pick default target modules for model_type={model_type!r}: supported model "
        f"types are {supported}. Pass `target_modules` explicitly to adapt any other model."
    )


def num_layers(model: nn.Module) -> int:
    """The number of transformer layers per stack (T5: the larger of encoder and decoder)."""
    config = model.config
    counts = [
        getattr(config, name, None)
        for name in ("num_hidden_layers", "num_layers", "n_layer", "num_decoder_layers")
    ]
    found = [int(c) for c in counts if isinstance(c, int)]
    if not found:
        raise ValueError(f"Cannot tell the number of layers of {type(model).__name__}")
    return max(found)


def layer_index(module_name: str) -> int | None:
    """The transformer-layer index in a module name (``encoder.block.3.layer.0.x`` → 3)."""
    match = _LAYER_INDEX.search(module_name)
    return int(match.group(1)) if match else None


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
    """The task head of a transformers ``*For...Classification`` model, if any."""
    return [name for name in HEAD_NAMES if isinstance(getattr(model, name, None), nn.Module)]
