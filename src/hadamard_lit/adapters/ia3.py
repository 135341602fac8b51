"""(IA)3: learned vectors that rescale keys, values and the FFN's inner activations.

Liu et al., 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning" (https://arxiv.org/abs/2205.05638); METHODS.md §4.

    output scaling (keys, values):     y = l ⊙ (W x + b)      (the bias is scaled too)
    input scaling (FFN second matrix): y = W (l ⊙ x) + b

All vectors start at 1. On t5-base with ``k, v, wo``: 129,024 parameters.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from hadamard_lit.adapters.base import AdapterLayer, AdapterStrategy
from hadamard_lit.adapters.functional import scaled_linear
from hadamard_lit.adapters.targets import detect_family, matches


class IA3Linear(AdapterLayer):
    """One (IA)3 vector on the output (``scale_input=False``) or the input of a layer."""

    adapter_parameter_names = ("ia3_scale",)

    def __init__(self, base: nn.Module, scale_input: bool) -> None:
        super().__init__(base)
        self.scale_input = scale_input
        self.ia3_scale = self.new_vector(
            self.in_features if scale_input else self.out_features, 1.0
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.scale_input:
            return scaled_linear(x, self.linear_weight, self.bias, in_scale=self.ia3_scale)
        return scaled_linear(
            x, self.linear_weight, self.bias, out_scale=self.ia3_scale, scale_bias=True
        )

    def merged_weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        scale = self.ia3_scale.float()
        if self.scale_input:
            return self.linear_weight.float() * scale[None, :], self.bias
        bias = None if self.bias is None else self.bias.float() * scale
        return self.linear_weight.float() * scale[:, None], bias

    def reset_adapter(self) -> None:
        with torch.no_grad():
            self.ia3_scale.fill_(1.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale_input={self.scale_input}"


class IA3(AdapterStrategy):
    """(IA)3 on keys, values and the FFN's second matrix.

    Args:
        target_modules: module-name patterns; ``None`` for the family default.
        feedforward_modules: which of the targets get *input* scaling (the FFN's second
            matrix); the rest get output scaling. ``None`` for the family default.
        modules_to_save: modules trained in full (the task head by default).
    """

    default_targets: ClassVar[dict[str, list[str]]] = {
        "t5": ["k", "v", "wo"],
        "t5_gated": ["k", "v", "wo"],
        "bert": ["key", "value", r"re:.*\.layer\.\d+\.output\.dense"],
        "gpt2": ["c_attn", "mlp.c_proj"],
        "llama": ["k_proj", "v_proj", "down_proj"],
    }
    default_feedforward: ClassVar[dict[str, list[str]]] = {
        "t5": ["wo"],
        "t5_gated": ["wo"],
        "bert": [r"re:.*\.layer\.\d+\.output\.dense"],
        "gpt2": ["mlp.c_proj"],
        "llama": ["down_proj"],
    }

    def __init__(
        self,
        target_modules: list[str] | None = None,
        feedforward_modules: list[str] | None = None,
        modules_to_save: list[str] | None = None,
    ) -> None:
        super().__init__(target_modules, modules_to_save)
        if target_modules is not None and feedforward_modules is None:
            raise ValueError(
                "IA3 with explicit target_modules needs feedforward_modules too (which of "
                "them get input scaling; [] for none)"
            )
        self.feedforward_modules = feedforward_modules
        self._feedforward: list[str] = []

    def apply(self, model: nn.Module) -> list[str]:
        if self.feedforward_modules is not None:
            self._feedforward = list(self.feedforward_modules)
        else:
            self._feedforward = list(self.default_feedforward[detect_family(model)])
        return super().apply(model)

    def make_layer(self, name: str, base: nn.Module) -> AdapterLayer:
        return IA3Linear(base, scale_input=any(matches(name, p) for p in self._feedforward))
