"""(IA)3: learned vectors that rescale keys, values and the FFN's inner activations.

Liu et al., 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning" (https://arxiv.org/abs/2205.05638); METHODS.md §4.

    output scaling (keys, values):     y = l ⊙ (W x + b)      (the bias is scaled too)
    input scaling (FFN second matrix): y = W (l ⊙ x) + b

All vectors start at 1. On t5-base with ``k, v, wo``: 129,024 parameters.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from hadamard_lit.adapters.architectures import architecture_of
from hadamard_lit.adapters.base import AdapterLayer, AdapterStrategy
from hadamard_lit.adapters.roles import self_and_cross
from hadamard_lit.adapters.scaled import ScaledLinearLayer, Vector
from hadamard_lit.adapters.targets import check_patterns, matches


class IA3Linear(ScaledLinearLayer):
    """One (IA)3 vector on the output (``scale_input=False``) or the input of a layer."""

    def __init__(self, base: nn.Module, scale_input: bool) -> None:
        vector = Vector("in_scale" if scale_input else "out_scale", 1.0)
        super().__init__(base, {"ia3_scale": vector}, scale_bias=not scale_input)
        self.scale_input = scale_input

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale_input={self.scale_input}"


class IA3(AdapterStrategy):
    """(IA)3 on keys, values and the FFN's second matrix.

    By role: the attention keys and values (self and cross; a fused qkv projection is
    scaled whole, as peft does for GPT-2, GPT-NeoX and Falcon) get output scaling, the FFN
    output projection input scaling.

    Args:
        target_modules: module-name patterns; ``None`` for the default roles.
        feedforward_modules: which of the targets get *input* scaling (the FFN's second
            matrix); the rest get output scaling. ``None`` with default targets: the layers
            playing the FFN-output role.
        modules_to_save: modules trained in full (the task head by default).
    """

    default_roles: ClassVar[tuple[str, ...]] = (*self_and_cross("key", "value", "qkv"), "ffn.out")
    #: The roles that get input scaling.
    feedforward_roles: ClassVar[tuple[str, ...]] = ("ffn.out",)

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
        if feedforward_modules:
            check_patterns("feedforward_modules", feedforward_modules)
        self.feedforward_modules = feedforward_modules

    def layer_options(self, model: nn.Module, targets: list[str]) -> dict[str, dict[str, Any]]:
        if self.feedforward_modules is not None:
            patterns = list(self.feedforward_modules)
            return {n: {"scale_input": any(matches(n, p) for p in patterns)} for n in targets}
        roles = architecture_of(model).modules_for(model, self.feedforward_roles)
        return {n: {"scale_input": n in roles} for n in targets}

    def make_layer(self, name: str, base: nn.Module, **options: Any) -> AdapterLayer:
        return IA3Linear(base, scale_input=bool(options.get("scale_input", False)))
