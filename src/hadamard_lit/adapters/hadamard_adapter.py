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

from typing import ClassVar

import torch
from torch import Tensor, nn

from hadamard_lit.adapters.base import AdapterLayer, AdapterStrategy
from hadamard_lit.adapters.functional import scaled_linear
from hadamard_lit.adapters.targets import detect_family, find_targets, layer_index, num_layers


class HadamardAdapterLinear(AdapterLayer):
    """``y = w ⊙ (W x + b_O) + b`` on an attention output projection."""

    adapter_parameter_names = ("hadamard_weight", "hadamard_bias")

    def __init__(self, base: nn.Module) -> None:
        super().__init__(base)
        self.hadamard_weight = self.new_vector(self.out_features, 1.0)
        self.hadamard_bias = self.new_vector(self.out_features, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return scaled_linear(
            x,
            self.linear_weight,
            self.bias,
            out_scale=self.hadamard_weight,
            out_shift=self.hadamard_bias,
            scale_bias=True,
        )

    def merged_weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        w = self.hadamard_weight.float()
        weight = self.linear_weight.float() * w[:, None]
        if self.bias is not None:
            return weight, self.bias.float() * w + self.hadamard_bias.float()
        if bool((self.hadamard_bias != 0).any()):
            raise ValueError(
                "Cannot merge a Hadamard Adapter whose bias is non-zero into an output "
                "projection without a bias (T5, Llama): the merged model would need a bias "
                "its architecture does not load. Export the adapter state dict instead, or "
                "train with a model whose attention output projection has a bias."
            )
        return weight, None

    def reset_adapter(self) -> None:
        with torch.no_grad():
            self.hadamard_weight.fill_(1.0)
            self.hadamard_bias.zero_()


# Per family: the self-attention output projection, and how to name the normalisation that
# follows the attention sub-layer from it (post-LN BERT: its own LayerNorm; pre-LN T5,
# GPT-2, Llama: the next sub-layer's input norm).
_ATTENTION_OUTPUT = {
    "t5": r"re:(?:encoder|decoder)\.block\.\d+\.layer\.0\.SelfAttention\.o",
    "bert": r"re:.*\.attention\.output\.dense",
    "gpt2": r"re:.*\.h\.\d+\.attn\.c_proj",
    "llama": r"re:.*\.layers\.\d+\.self_attn\.o_proj",
}
_FOLLOWING_NORM = {
    "t5": ("layer.0.SelfAttention.o", "layer.1.layer_norm"),
    "bert": ("attention.output.dense", "attention.output.LayerNorm"),
    "gpt2": ("attn.c_proj", "ln_2"),
    "llama": ("self_attn.o_proj", "post_attention_layernorm"),
}


def _family(model: nn.Module) -> str:
    family = detect_family(model)
    return "t5" if family == "t5_gated" else family


class HadamardAdapter(AdapterStrategy):
    """Hadamard Adapter on every (or the chosen) self-attention output.

    Args:
        target_modules: patterns for the attention output projections; ``None`` for the
            family's self-attention output projection.
        layers: indices of the layers to adapt (``None``: all). Out-of-range indices are
            an error. For T5, index ``i`` adapts encoder and decoder block ``i``.
        train_norm: also train the normalisation that follows each adapted attention
            sub-layer (the paper does).
        modules_to_save: modules trained in full (the task head by default).
    """

    default_targets: ClassVar[dict[str, list[str]]] = {
        family: [pattern] for family, pattern in _ATTENTION_OUTPUT.items()
    }
    default_targets["t5_gated"] = default_targets["t5"]

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

    def select_targets(
        self, model: nn.Module, patterns: list[str], exclude: list[str]
    ) -> list[str]:
        names = find_targets(model, patterns, exclude)
        if self.layers is None:
            return names
        count = num_layers(model)
        bad = [i for i in self.layers if not 0 <= i < count]
        if bad:
            raise ValueError(
                f"HadamardAdapter layers {bad} out of range: {type(model).__name__} has "
                f"{count} layers (valid indices 0..{count - 1})"
            )
        return [n for n in names if layer_index(n) in set(self.layers)]

    def extra_trainable_modules(self, model: nn.Module, adapted: list[str]) -> list[str]:
        if not self.train_norm:
            return []
        old, new = _FOLLOWING_NORM[_family(model)]
        norms = [name.replace(old, new) for name in adapted if old in name]
        known = dict(model.named_modules())
        missing = [n for n in norms if n not in known]
        if missing or len(norms) != len(adapted):
            raise ValueError(
                f"Cannot find the normalisation after the adapted attention outputs "
                f"(looked for {missing[:3] or 'a match for ' + old}); pass train_norm=False "
                "with custom target_modules"
            )
        return norms

    def make_layer(self, name: str, base: nn.Module) -> AdapterLayer:
        return HadamardAdapterLinear(base)
