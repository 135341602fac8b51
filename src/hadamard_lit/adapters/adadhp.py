"""AdaDHP's layer: the dual Hadamard product (ACL 2025; METHODS.md §1).

    W' = W ⊙ (r lᵀ) = diag(r) · W · diag(l)        y = r ⊙ (W (l ⊙ x)) + b

Two vectors per weight matrix, ``r`` (out, scales rows) and ``l`` (in, scales columns),
both initialised to 1; the bias is not scaled. ``in + out`` parameters per matrix, as
LoRA at rank 1. Computed on the activations with a fused autograd function
(:mod:`hadamard_lit.adapters.functional`). The adaptive parameter selection that prunes
whole matrices is the ``hadamard_lit.callbacks.AdaptiveSelection`` callback.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from hadamard_lit.adapters.base import AdapterLayer, AdapterStrategy
from hadamard_lit.adapters.functional import scaled_linear


class DualHadamardLinear(AdapterLayer):
    """``y = r ⊙ (W (l ⊙ x)) + b`` with ``row_scale = r`` and ``col_scale = l``."""

    adapter_parameter_names = ("row_scale", "col_scale")

    def __init__(self, base: nn.Module) -> None:
        super().__init__(base)
        self.row_scale = self.new_vector(self.out_features, 1.0)
        self.col_scale = self.new_vector(self.in_features, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return scaled_linear(
            x, self.linear_weight, self.bias, in_scale=self.col_scale, out_scale=self.row_scale
        )

    def merged_weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        w = (
            self.linear_weight.float()
            * self.row_scale.float()[:, None]
            * self.col_scale.float()[None, :]
        )
        return w, self.bias

    def reset_adapter(self) -> None:
        with torch.no_grad():
            self.row_scale.fill_(1.0)
            self.col_scale.fill_(1.0)


class AdaDHP(AdapterStrategy):
    """AdaDHP: two trainable scaling vectors per targeted weight matrix.

    Defaults are the authors': every T5 attention (self and cross) and FFN matrix,
    BERT/RoBERTa ``query, key, value, dense``, GPT-2 ``c_attn``, Llama ``q_proj, v_proj``.
    On t5-base: 192 matrices, 405,504 parameters. ``dense`` is a name suffix, matched as
    peft matches it (the authors' code is peft's): the attention-output, intermediate and
    output ``dense`` of every layer, and the pooler's ``dense`` where the model has a pooler
    (a 6-layer BERT with a pooler: 37 matrices). A task head is never adapted.

    Args:
        target_modules: module-name patterns; ``None`` for the family default.
        modules_to_save: modules trained in full (the task head by default).
    """

    default_targets: ClassVar[dict[str, list[str]]] = {
        "t5": ["q", "k", "v", "o", "wi", "wo"],
        "t5_gated": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"],
        "bert": ["query", "key", "value", "dense"],
        "gpt2": ["c_attn"],
        "llama": ["q_proj", "v_proj"],
    }

    def make_layer(self, name: str, base: nn.Module) -> AdapterLayer:
        return DualHadamardLinear(base)
