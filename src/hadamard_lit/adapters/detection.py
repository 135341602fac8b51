"""Roles for an architecture that is not in the table, read off its module names.

The repeated block is found as the table's own entries would name it (a layer list of
``_no_split_modules`` classes, else of identical layers). Each linear layer inside one
block is classified by its own name and its parent's (``self_attn.q_proj`` → query,
``mlp.down_proj`` → FFN output), from the vocabulary of the architectures in the table.
Detection succeeds only when every linear layer of the block gets exactly one role and
no role is claimed twice within one attention or FFN module; then one log line says what
was picked. Otherwise the error lists the block's linear layers and the
``target_modules`` to pass. A guess is never silent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from torch import nn

from hadamard_lit.adapters.roles import LINEAR_TYPES, Architecture, Kind

log = logging.getLogger(__name__)

_ATTENTION_PARENT = re.compile(r"attn|attention", re.I)
_CROSS_PARENT = re.compile(r"cross|encoder_attn|encdec", re.I)
_FFN_PARENT = re.compile(r"mlp|ffn|feed_?forward|densereludense|intermediate|^output$|fc", re.I)

#: Last name part → role, inside an attention module.
_ATTENTION_NAMES = {
    "query": ("q", "query", "q_proj", "q_lin", "query_proj", "wq"),
    "key": ("k", "key", "k_proj", "k_lin", "key_proj", "wk"),
    "value": ("v", "value", "v_proj", "v_lin", "value_proj", "wv"),
    "qkv": ("qkv", "qkv_proj", "c_attn", "wqkv", "query_key_value", "w_pack", "in_proj"),
    "output": ("o", "o_proj", "out_proj", "out_lin", "wo", "c_proj", "dense"),
}
#: Last name part → role, inside an FFN module (or directly in the block).
_FFN_NAMES = {
    "ffn.in": ("fc1", "wi", "c_fc", "fc_in", "lin1", "dense_h_to_4h", "gate_up_proj", "dense"),
    "ffn.gate": ("gate_proj", "wi_0", "w1"),
    "ffn.up": ("up_proj", "wi_1", "w3"),
    "ffn.out": ("fc2", "wo", "fc_out", "lin2", "dense_4h_to_h", "down_proj", "w2", "c_proj"),
}
_POST_ATTENTION_NORMS = (
    "post_attention_layernorm",
    "ln_2",
    "attention.output.LayerNorm",
    "sa_layer_norm",
    "self_attn_layer_norm",
    "mlp_norm",
    "ffn_norm",
    "post_attention_norm",
)


def find_blocks(model: nn.Module) -> list[str]:
    """Names of the layer lists that hold ``model``'s transformer blocks (outermost)."""
    no_split: set[str] = set()
    for module in model.modules():
        no_split.update(getattr(module, "_no_split_modules", None) or ())
    lists: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(name.startswith(outer + ".") for outer in lists):
            continue
        classes = {type(item) for item in module}
        has_linear = any(isinstance(m, LINEAR_TYPES) for m in module[0].modules())
        listed = bool(no_split & {c.__name__ for c in type(module[0]).__mro__})
        if has_linear and len(classes) == 1 and (listed or not no_split):
            lists.append(name)
    return lists


def classify(relative: str) -> str | None:
    """The role of a linear layer from its name relative to its block (None: unknown)."""
    parts = relative.split(".")
    last, parents = parts[-1].lower(), [p for p in parts[:-1] if not p.isdigit()]
    parent = ".".join(parents)
    if parent and _ATTENTION_PARENT.search(parent):
        kind = "cross_attention" if _CROSS_PARENT.search(parent) else "attention"
        # BERT-style "attention.output.dense" is the output; "attention.self.query" a query.
        for role, names in _ATTENTION_NAMES.items():
            if last in names:
                return f"{kind}.{role}"
        return None
    if not parent or _FFN_PARENT.search(parent) or parent in ("intermediate", "output"):
        if parent == "intermediate" and last == "dense":
            return "ffn.in"
        if parent == "output" and last == "dense":
            return "ffn.out"
        for role, names in _FFN_NAMES.items():
            if last in names and not (last == "dense" and parent != "intermediate"):
                return role
    return None


def _kind(model: nn.Module) -> Kind:
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return (
        "encoder"
        if getattr(config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        else "decoder"
    )


def _suggestion(names: Iterable[str]) -> str:
    shorts = sorted({n.rsplit(".", 1)[-1] for n in names})
    return "target_modules=[" + ", ".join(repr(s) for s in shorts) + "]"


def detect_architecture(model: nn.Module) -> Architecture:
    """An :class:`Architecture` for ``model`` from its module names (see the module docstring).

    Raises:
        ValueError: no blocks, or linear layers whose role the names do not tell.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    from hadamard_lit.adapters.architectures import supported_model_types

    known = f"The architecture table covers {supported_model_types()}."
    containers = find_blocks(model)
    if not containers:
        linear = [n for n, m in model.named_modules() if isinstance(m, LINEAR_TYPES)]
        raise ValueError(
            f"Cannot pick default target modules for {type(model).__name__} "
            f"(model_type={model_type!r}): it is not in hadamard_lit's architecture table and "
            f"has no repeated transformer block. Its linear layers: {linear[:20]}"
            f"{'...' if len(linear) > 20 else ''}. Pass target_modules, e.g. "
            f"{_suggestion(linear)}. {known}"
        )
    roles: dict[str, list[str]] = {}
    relative: list[str] = []
    unknown: list[str] = []
    clashes: list[str] = []
    norm: str | None = None
    for container in containers:
        first = model.get_submodule(f"{container}.0")
        names = [n for n, m in first.named_modules() if n and isinstance(m, LINEAR_TYPES)]
        relative += [n for n in names if n not in relative]
        claimed: dict[str, str] = {}
        for name in names:
            role = classify(name)
            if role is None:
                unknown.append(name)
            elif role in claimed:
                clashes.append(f"{claimed[role]} and {name} both look like {role}")
            else:
                claimed[role] = name
                if name not in roles.setdefault(role, []):
                    roles[role].append(name)
        inner = {n for n, m in first.named_modules() if n and not isinstance(m, LINEAR_TYPES)}
        norm = norm or next((n for n in _POST_ATTENTION_NORMS if n in inner), None)
    if unknown or clashes or not roles:
        why = (
            "; ".join(([f"no role for {sorted(set(unknown))}"] if unknown else []) + clashes)
            or "no linear layer in it"
        )
        raise ValueError(
            f"Cannot pick default target modules for {type(model).__name__} "
            f"(model_type={model_type!r}): it is not in hadamard_lit's architecture table, and "
            f"the names in its blocks ({', '.join(c + '.N' for c in containers)}) do not say "
            f"which layer is which ({why}). The linear layers of one block: {relative}. Pass "
            f"target_modules, e.g. {_suggestion(relative)} (dotted suffixes, or "
            f"'re:<regex>'), or add an entry to hadamard_lit/adapters/architectures.py. {known}"
        )
    patterns: dict[str, str | tuple[str, ...]] = {
        role: names[0] if len(names) == 1 else tuple(names) for role, names in roles.items()
    }
    if norm is not None:
        patterns["norm.post_attention"] = norm
    suffixes = tuple(c.rsplit(".", 1)[-1] if "." in c else c for c in containers)
    if len(set(suffixes)) < len(containers):
        suffixes = tuple(containers)
    architecture = Architecture(
        name=str(model_type or type(model).__name__),
        model_types=(str(model_type),),
        kind=_kind(model),
        blocks=suffixes,
        roles=patterns,
        head=("classifier", "score", "classification_head", "qa_outputs"),
        detected=True,
    )
    log.warning(
        "hadamard_lit: %s (model_type=%r) is not in the architecture table; roles detected "
        "from its blocks %s: %s",
        type(model).__name__,
        model_type,
        ", ".join(f"{c}.N" for c in containers),
        ", ".join(f"{role}={name}" for role, name in patterns.items()),
    )
    return architecture
