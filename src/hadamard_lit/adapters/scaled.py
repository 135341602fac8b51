"""Adapter layers made of vectors on a linear layer's input and output (the Hadamard family).

    y = r ⊙ (W (l ⊙ x) [+ b]) [+ b] + c

AdaDHP (``l`` and ``r``), (IA)3 (``l`` or ``r``) and the Hadamard Adapter (``r`` and ``c``)
are this one layer with other vectors: a subclass (or a method's ``make_layer``) names each
vector and its place, and forward, merge and reset follow. The computation is the fused
:func:`~hadamard_lit.adapters.functional.scaled_linear`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from hadamard_lit.adapters.base import AdapterLayer
from hadamard_lit.adapters.functional import scaled_linear

Place = Literal["in_scale", "out_scale", "out_shift"]


@dataclass(frozen=True)
class Vector:
    """One adapter vector: where it acts (``in_scale``: ``l``, ``out_scale``: ``r``,
    ``out_shift``: ``c``) and its value at init and after a reset (the identity)."""

    place: Place
    identity: float


class ScaledLinearLayer(AdapterLayer):
    """A frozen linear layer with adapter vectors, by local name (``vectors``).

    Args:
        base: the ``nn.Linear`` / ``Conv1D`` adapted.
        vectors: local parameter name → :class:`Vector`; the class's ``vectors`` if None.
        scale_bias: whether the output scale also scales the layer's bias ((IA)3, the
            Hadamard Adapter) or not (AdaDHP).
    """

    vectors: ClassVar[dict[str, Vector]] = {}
    scale_bias: bool = False

    def __init__(
        self,
        base: nn.Module,
        vectors: dict[str, Vector] | None = None,
        scale_bias: bool | None = None,
    ) -> None:
        super().__init__(base)
        self.layout = dict(vectors if vectors is not None else type(self).vectors)
        if scale_bias is not None:
            self.scale_bias = scale_bias
        self.adapter_parameter_names = tuple(self.layout)
        for name, vector in self.layout.items():
            size = self.in_features if vector.place == "in_scale" else self.out_features
            setattr(self, name, self.new_vector(size, vector.identity))

    def _by_place(self) -> dict[str, Tensor]:
        return {vector.place: getattr(self, name) for name, vector in self.layout.items()}

    def forward(self, x: Tensor) -> Tensor:
        return scaled_linear(
            x, self.linear_weight, self.bias, scale_bias=self.scale_bias, **self._by_place()
        )

    def merged_weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        places = self._by_place()
        scale_in, scale_out, shift = (places.get(p) for p in ("in_scale", "out_scale", "out_shift"))
        weight = self.linear_weight.float()
        if scale_out is not None:
            weight = weight * scale_out.float()[:, None]
        if scale_in is not None:
            weight = weight * scale_in.float()[None, :]
        bias: Tensor | None = self.bias
        if bias is not None and self.scale_bias and scale_out is not None:
            bias = bias.float() * scale_out.float()
        if shift is not None:
            if bias is None and bool((shift != 0).any()):
                raise ValueError(
                    f"Cannot merge {type(self).__name__}'s non-zero output shift into a layer "
                    "without a bias (T5, Llama attention outputs): the merged model would need "
                    "a bias its architecture does not load. Export the adapter state dict "
                    "instead, or train with a model whose layer has a bias."
                )
            bias = None if bias is None else bias.float() + shift.float()
        return weight, bias

    def reset_adapter(self) -> None:
        with torch.no_grad():
            for name, vector in self.layout.items():
                getattr(self, name).fill_(vector.identity)
