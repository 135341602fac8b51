"""What a module *does* in a transformer, whatever the architecture calls it.

A **role** names a kind of layer inside a transformer block; strategies choose their default
targets by role (AdaDHP: every attention and FFN matrix; LoRA: query and value), and an
:class:`Architecture` says which module plays each role in one model family. So a method
never spells ``q_proj`` or ``SelfAttention.q``, and an architecture is one table entry
(:mod:`hadamard_lit.adapters.architectures`).

Roles inside a block (patterns relative to the block, ``*`` standing for one name part)::

    attention.query / .key / .value    separate self-attention projections
    attention.qkv                      a fused one (GPT-2 c_attn, Phi-3 qkv_proj, ModernBERT Wqkv)
    attention.output                   the self-attention output projection
    cross_attention.*                  the same four for encoder-decoder cross-attention
    ffn.in                             the FFN's input projection (or a fused gate+up one)
    ffn.gate / ffn.up                  a gated FFN's two input projections
    ffn.out                            the FFN's output projection
    norm.post_attention                the normalisation after the self-attention sub-layer

and outside the blocks: ``pooler`` (a pretrained linear layer between the blocks and the
head, BERT's ``pooler.dense``), ``blocks`` (the layer lists, for layer indices and FSDP2
units) and ``head`` (the task head, trained in full, never adapted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn
from transformers.pytorch_utils import Conv1D

#: The layer types a strategy can adapt.
LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D)

ATTENTION_ROLES = ("attention.query", "attention.key", "attention.value", "attention.qkv")
CROSS_ATTENTION_ROLES = tuple(r.replace("attention.", "cross_attention.") for r in ATTENTION_ROLES)
FFN_ROLES = ("ffn.in", "ffn.gate", "ffn.up", "ffn.out")
#: Every role a linear layer can play, in the order a table lists them.
LINEAR_ROLES = (
    *ATTENTION_ROLES,
    "attention.output",
    *CROSS_ATTENTION_ROLES,
    "cross_attention.output",
    *FFN_ROLES,
    "pooler",
)
NORM_ROLES = ("norm.post_attention",)
ROLES = (*LINEAR_ROLES, *NORM_ROLES)

Kind = Literal["encoder", "decoder", "encoder-decoder"]
#: A role's pattern, or patterns in order of preference (per block, the first that exists).
Pattern = str | tuple[str, ...]


def self_and_cross(*parts: str) -> tuple[str, ...]:
    """``attention.<part>`` and then ``cross_attention.<part>`` for each ``part``."""
    return tuple(f"{kind}.{part}" for kind in ("attention", "cross_attention") for part in parts)


def expand_roles(roles: Iterable[str]) -> list[str]:
    """``roles`` with ``attention.*``-style wildcards expanded, each once, in table order.

    Raises:
        ValueError: a name that is no role.
    """
    wanted: list[str] = []
    for role in roles:
        if role.endswith(".*"):
            found = [r for r in ROLES if r.startswith(role[:-1])]
        else:
            found = [role] if role in ROLES else []
        if not found:
            raise ValueError(f"Unknown role {role!r}; roles are {list(ROLES)}")
        wanted += [r for r in found if r not in wanted]
    return wanted


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(r"[^.]+".join(re.escape(part) for part in pattern.split("*")))


@dataclass(frozen=True)
class Block:
    """One transformer block: the list it is in (``model.layers``), its index, the module."""

    container: str
    index: int
    module: nn.Module

    @property
    def name(self) -> str:
        return f"{self.container}.{self.index}"

    @property
    def stack(self) -> str:
        """A short name of the container (``encoder``, ``decoder``, ``layers``)."""
        parts = self.container.split(".")
        named = [p for p in parts if p in ("encoder", "decoder")]
        return named[-1] if named else parts[-1]


@dataclass(frozen=True)
class Architecture:
    """Which module plays which role in one family of transformers models.

    Attributes:
        name: the entry's short name (``"llama"``), shown in logs and the README.
        model_types: the ``config.model_type`` values it covers.
        kind: ``encoder``, ``decoder`` or ``encoder-decoder``.
        blocks: suffixes of the names of the ``nn.ModuleList`` s that hold the blocks
            (``"layers"`` matches ``model.layers``; T5: ``encoder.block``, ``decoder.block``).
        roles: role → pattern relative to a block (``"self_attn.q_proj"``; ``*`` is one
            name part; a tuple lists alternatives in order of preference).
        pooler: dotted-name suffix of a pretrained linear layer after the blocks, or None.
        head: top-level module names of the task heads (``"score"``, ``"classifier"``).
        notes: what the defaults leave out and why, for the README and the log.
        config_variants: ``(condition, roles)`` pairs: role overrides for a model whose config
            has every field of ``condition`` at that value (OPT's post-LN variant).
        test_config: options for the tiny test model of this entry (``hadamard_lit.testing``).
        test_variants: more tiny test models: name → config options with ``model_type``.
        detected: built by :mod:`~hadamard_lit.adapters.detection`, not from the table.
    """

    name: str
    model_types: tuple[str, ...]
    kind: Kind
    blocks: tuple[str, ...]
    roles: Mapping[str, Pattern]
    pooler: str | None = None
    head: tuple[str, ...] = ()
    notes: str = ""
    config_variants: tuple[tuple[Mapping[str, Any], Mapping[str, Pattern]], ...] = ()
    test_config: Mapping[str, Any] = field(default_factory=dict)
    test_variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    detected: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.roles) - set(ROLES) - {"pooler"})
        if unknown:
            raise ValueError(f"Architecture {self.name!r}: unknown roles {unknown}")

    # -- blocks ---------------------------------------------------------------------------

    def find_blocks(self, model: nn.Module) -> list[Block]:
        """Every block of ``model``, container by container, in model order."""
        found: list[Block] = []
        for name, module in model.named_modules():
            if any(name.startswith(block.name + ".") for block in found):
                continue  # a list inside a block (T5's block.0.layer) is part of it
            if isinstance(module, nn.ModuleList) and any(
                name == s or name.endswith("." + s) for s in self.blocks
            ):
                found += [Block(name, i, item) for i, item in enumerate(module)]
        return found

    def block_of(self, model: nn.Module, module_name: str) -> Block | None:
        """The block ``module_name`` lies in (None: outside every block)."""
        for block in self.find_blocks(model):
            if module_name.startswith(block.name + "."):
                return block
        return None

    def num_layers(self, model: nn.Module) -> int:
        """Blocks per container (T5: the larger of encoder and decoder)."""
        counts: dict[str, int] = {}
        for block in self.find_blocks(model):
            counts[block.container] = counts.get(block.container, 0) + 1
        return max(counts.values(), default=0)

    # -- roles ----------------------------------------------------------------------------

    def patterns(self, config: Any = None) -> dict[str, Pattern]:
        """Role → pattern for a model with ``config`` (its ``config_variants`` applied)."""
        roles = dict(self.roles)
        for condition, overrides in self.config_variants:
            if config is not None and all(
                getattr(config, key, None) == value for key, value in condition.items()
            ):
                roles.update(overrides)
        return roles

    def modules_for(
        self,
        model: nn.Module,
        roles: Iterable[str],
        exclude: Sequence[str] = (),
        types: tuple[type[nn.Module], ...] = LINEAR_TYPES,
    ) -> dict[str, str]:
        """Module name → role, for every module of ``types`` playing one of ``roles``.

        In model order; modules at or under a name in ``exclude`` are left out.
        """
        wanted = expand_roles(roles)
        patterns = self.patterns(getattr(model, "config", None))
        found: dict[str, str] = {}
        for block in self.find_blocks(model):
            inside = dict(block.module.named_modules())
            for role in wanted:
                if role == "pooler" or role not in patterns:
                    continue
                for relative in _first_matching(patterns[role], inside, types):
                    found[f"{block.name}.{relative}"] = role
        if "pooler" in wanted and self.pooler is not None:
            for name, module in model.named_modules():
                if isinstance(module, types) and (
                    name == self.pooler or name.endswith("." + self.pooler)
                ):
                    found[name] = "pooler"
        order = {name: i for i, (name, _) in enumerate(model.named_modules())}
        kept = {
            n: r
            for n, r in found.items()
            if not any(n == e or n.startswith(e + ".") for e in exclude)
        }
        return dict(sorted(kept.items(), key=lambda item: order[item[0]]))

    def role_of(self, model: nn.Module, module_name: str) -> str | None:
        """The role ``module_name`` plays, if any (linear layers and norms)."""
        everything = (nn.Module,)
        return self.modules_for(model, ROLES, types=everything).get(module_name)

    def head_modules(self, model: nn.Module) -> list[str]:
        """The task-head modules ``model`` has (top level), in the table's order."""
        return [n for n in self.head if isinstance(getattr(model, n, None), nn.Module)]

    def module_names(self, roles: Iterable[str]) -> list[str]:
        """The ``target_modules`` suffixes that name ``roles`` in this architecture (docs).

        Each is the shortest dotted suffix of a role's pattern that no other role's pattern
        ends with (T5's Hadamard Adapter: ``SelfAttention.o``, not the cross-attention's
        ``o``; AdaDHP on BERT: ``dense``, which every ``dense`` it adapts shares).
        """
        wanted = expand_roles(roles)
        options = {role: _options(self.pooler if role == "pooler" else self.roles.get(role))
                   for role in ROLES}  # fmt: skip
        others = [o for role, opts in options.items() if role not in wanted for o in opts]
        names: list[str] = []
        for role in wanted:
            for option in options[role]:
                parts = option.split(".")
                for k in range(1, len(parts) + 1):
                    suffix = ".".join(parts[-k:])
                    if not any(o == suffix or o.endswith("." + suffix) for o in others):
                        break
                if suffix not in names:
                    names.append(suffix)
        return names


def _options(pattern: Pattern | None) -> tuple[str, ...]:
    if pattern is None:
        return ()
    return (pattern,) if isinstance(pattern, str) else tuple(pattern)


def _first_matching(
    pattern: Pattern, modules: Mapping[str, nn.Module], types: tuple[type[nn.Module], ...]
) -> list[str]:
    """Names in ``modules`` matching the first of ``pattern``'s alternatives that matches any."""
    for option in (pattern,) if isinstance(pattern, str) else pattern:
        regex = _compile(option)
        hits = [n for n, m in modules.items() if n and isinstance(m, types) and regex.fullmatch(n)]
        if hits:
            return hits
    return []
