"""AdaDHP's layer: the dual Hadamard product (ACL 2025; METHODS.md §1).

    W' = W ⊙ (r lᵀ) = diag(r) · W · diag(l)        y = r ⊙ (W (l ⊙ x)) + b

Two vectors per weight matrix, ``r`` (out, scales rows) and ``l`` (in, scales columns),
both initialised to 1; the bias is not scaled. ``in + out`` parameters per matrix, as
LoRA at rank 1. Computed on the activations with a fused autograd function
(:mod:`hadamard_lit.adapters.functional`). The adaptive parameter selection that prunes
whole matrices is the ``hadamard_lit.callbacks.AdaptiveSelection`` callback.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from hadamard_lit.adapters.base import AdapterLayer, AdapterStrategy
from hadamard_lit.adapters.roles import Architecture
from hadamard_lit.adapters.scaled import ScaledLinearLayer, Vector


class DualHadamardLinear(ScaledLinearLayer):
    """``y = r ⊙ (W (l ⊙ x)) + b`` with ``row_scale = r`` and ``col_scale = l``."""

    vectors: ClassVar[dict[str, Vector]] = {
        "row_scale": Vector("out_scale", 1.0),
        "col_scale": Vector("in_scale", 1.0),
    }


#: Every attention (self and cross) and FFN matrix, and a pretrained pooler: the authors'
#: choice for T5, BART/OPT and BERT/RoBERTa.
EVERY_MATRIX = ("attention.*", "cross_attention.*", "ffn.*", "pooler")
#: The attention query and value (GPT-2's fused c_attn holds both): the authors' Llama choice.
QUERY_VALUE = ("attention.query", "attention.value", "attention.qkv")


class AdaDHP(AdapterStrategy):
    """AdaDHP: two trainable scaling vectors per targeted weight matrix.

    Defaults are the authors' (METHODS.md §1), by role: every attention (self and cross)
    and FFN matrix of encoders and encoder-decoders (T5 ``q, k, v, o, wi, wo`` and the gated
    ``wi_0, wi_1``; BART; BERT/RoBERTa ``query, key, value, dense``) and of OPT, with a
    pretrained pooler (BERT's ``pooler.dense``: peft's suffix match, which the authors' code
    uses, includes it); the attention query and value of decoders (Llama ``q_proj, v_proj``;
    GPT-2's fused ``c_attn``). On t5-base: 192 matrices, 405,504 parameters. A task head is
    never adapted.

    Args:
        target_modules: module-name patterns; ``None`` for the defaults above.
        modules_to_save: modules trained in full (the task head by default).
    """

    #: The authors' per-family defaults where they differ from the kind's (OPT is a decoder).
    family_roles: ClassVar[dict[str, tuple[str, ...]]] = {"opt": EVERY_MATRIX}

    def roles_for(self, architecture: Architecture) -> tuple[str, ...]:
        if architecture.name in self.family_roles:
            return self.family_roles[architecture.name]
        return QUERY_VALUE if architecture.kind == "decoder" else EVERY_MATRIX

    def make_layer(self, name: str, base: nn.Module, **options: Any) -> AdapterLayer:
        return DualHadamardLinear(base)
