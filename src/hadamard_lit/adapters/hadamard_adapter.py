"""The Hadamard Adapter: an element-wise affine map on each self-attention output (CIKM 2023).

Chen et al., 2023, "Hadamard Adapter: An Extreme Parameter-Efficient Adapter Tuning Method
for Pre-trained Language Models"; METHODS.md §2. The full text was not available; this is
the form from the abstract:

    A' = w ⊙ A + b        w init 1, b init 0, broadcast over tokens

on the output of the self-attention sub-layer (the output projection's output, before the
residual add and the normalisation), in every layer or in a chosen subset (``layers``).
The normalisation that follows the attention sub-layer and the task head train with it:
on BERT-base 36,864 parameters (12 layers), 24,576 (8 layers), as the paper counts.
Merges into the output projection: ``W_O ← diag(w) W_O``, ``b_O ← w ⊙ b_O + b``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from torch import nn

from hadamard_lit.adapters.architectures import architecture_of
from hadamard_lit.adapters.base import AdapterLayer, AdapterStrategy
from hadamard_lit.adapters.scaled import ScaledLinearLayer, Vector

log = logging.getLogger(__name__)


class HadamardAdapterLinear(ScaledLinearLayer):
    """``y = w ⊙ (W x + b_O) + b`` on an attention output projection."""

    vectors: ClassVar[dict[str, Vector]] = {
        "hadamard_weight": Vector("out_scale", 1.0),
        "hadamard_bias": Vector("out_shift", 0.0),
    }
    scale_bias = True


class HadamardAdapter(AdapterStrategy):
    """Hadamard Adapter on every (or the chosen) self-attention output.

    By role: the self-attention output projection of every block, and the normalisation
    after the attention sub-layer (post-LN BERT: its own LayerNorm; pre-LN T5, GPT-2,
    Llama: the next sub-layer's input norm; see the architecture table). Architectures whose
    attention and FFN run in parallel off one norm (GPT-J, Phi, most Falcons) have none:
    there only the adapter and the head train, and the log says so.

    Args:
        target_modules: patterns for the attention output projections; ``None`` for the
            self-attention output projection of every block.
        layers: indices of the blocks to adapt (``None``: all). Out-of-range indices are
            an error. For encoder-decoders, index ``i`` adapts encoder and decoder block ``i``.
        train_norm: also train the normalisation that follows each adapted attention
            sub-layer (the paper does).
        modules_to_save: modules trained in full (the task head by default).
    """

    default_roles: ClassVar[tuple[str, ...]] = ("attention.output",)

    def __init__(
        self,
        target_modules: list[str] | None = None,
        layers: list[int] | None = None,
        train_norm: bool = True,
        modules_to_save: list[str] | None = None,
    ) -> None:
        super().__init__(target_modules, modules_to_save)
        if layers is not None and (not layers or any(not isinstance(i, int) for i in layers)):
            raise ValueError(f"layers must be a non-empty list of layer indices, got {layers!r}")
        self.layers = layers
        self.train_norm = train_norm

    def select_targets(self, model: nn.Module, exclude: list[str]) -> list[str]:
        names = super().select_targets(model, exclude)
        if self.layers is None:
            return names
        architecture = architecture_of(model)
        count = architecture.num_layers(model)
        bad = [i for i in self.layers if not 0 <= i < count]
        if bad:
            raise ValueError(
                f"HadamardAdapter layers {bad} out of range: {type(model).__name__} has "
                f"{count} layers (valid indices 0..{count - 1})"
            )
        wanted = set(self.layers)
        kept = []
        for name in names:
            block = architecture.block_of(model, name)
            if block is not None and block.index in wanted:
                kept.append(name)
        return kept

    def extra_trainable_modules(self, model: nn.Module, adapted: list[str]) -> list[str]:
        if not self.train_norm:
            return []
        architecture = architecture_of(model)
        norms = architecture.modules_for(model, ["norm.post_attention"], types=(nn.Module,))
        by_block: dict[str, str] = {}
        for norm in norms:
            block = architecture.block_of(model, norm)
            if block is not None:
                by_block.setdefault(block.name, norm)
        found: list[str] = []
        outside: list[str] = []
        for name in adapted:
            block = architecture.block_of(model, name)
            if block is None:
                outside.append(name)
            elif block.name in by_block:
                found.append(by_block[block.name])
        if outside:
            raise ValueError(
                f"Cannot find the normalisation after {outside[:3]}: they are outside the "
                f"transformer blocks of {architecture.name}; pass train_norm=False with "
                "these target_modules"
            )
        if not norms:
            log.warning(
                "HadamardAdapter on %s (%s): no normalisation follows the attention sub-layer "
                "(%s); only the adapters and the head train",
                type(model).__name__,
                architecture.name,
                architecture.notes or "none in the architecture table",
            )
        return list(dict.fromkeys(found))

    def make_layer(self, name: str, base: nn.Module, **options: Any) -> AdapterLayer:
        return HadamardAdapterLinear(base)
