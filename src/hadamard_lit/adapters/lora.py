"""LoRA: an additive low-rank update, the baseline every PEFT method is compared with.

Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models"
(https://arxiv.org/abs/2106.09685); METHODS.md §4.

    y = W x + b + s · B (A dropout(x))        A: r x in (Kaiming-uniform), B: out x r (0), s = alpha / r
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hadamard_lit.adapters.base import AdapterLayer, AdapterStrategy
from hadamard_lit.adapters.roles import self_and_cross


def check_low_rank_options(rank: int, alpha: float, dropout: float) -> None:
    """Shared validation for LoRA and HUT options."""
    if not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def init_low_rank_pair(layer: AdapterLayer, rank: int) -> tuple[nn.Parameter, nn.Parameter]:
    """``A`` Kaiming-uniform (as ``nn.Linear``) and ``B`` zero, on the base weight's device/dtype."""
    device, dtype = layer.weight.device, layer.weight.dtype
    a = nn.Parameter(torch.empty(rank, layer.in_features, device=device, dtype=dtype))
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    b = nn.Parameter(torch.zeros(layer.out_features, rank, device=device, dtype=dtype))
    return a, b


class LowRankLayer(AdapterLayer):
    """What LoRA's and HUT's layers share: ``A`` (r x in, Kaiming-uniform) and ``B``
    (out x r, zero) under the names in ``adapter_parameter_names``, the scale ``alpha / r``,
    and dropout on the update path's input (training only)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float) -> None:
        super().__init__(base)
        self.rank = rank
        self.scaling = alpha / rank
        self.dropout_p = dropout
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        a_name, b_name = self.adapter_parameter_names
        a, b = init_low_rank_pair(self, rank)
        setattr(self, a_name, a)
        setattr(self, b_name, b)

    def low_rank_pair(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(A, B)`` in ``dtype``."""
        a, b = self.adapter_parameters().values()
        return a.to(dtype), b.to(dtype)

    def reset_adapter(self) -> None:
        with torch.no_grad():  # B = 0: the update vanishes
            getattr(self, self.adapter_parameter_names[1]).zero_()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scaling={self.scaling}"


class LoRALinear(LowRankLayer):
    """``y = W x + b + s · B (A dropout(x))``."""

    adapter_parameter_names = ("lora_A", "lora_B")

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.low_rank_pair(x.dtype)
        y = F.linear(x, self.linear_weight, self.bias)
        return y + self.scaling * F.linear(F.linear(self.dropout(x), a), b)

    def merged_weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        a, b = self.low_rank_pair(torch.float32)
        return self.linear_weight.float() + self.scaling * (b @ a), self.bias


class LowRankStrategy(AdapterStrategy):
    """What LoRA and HUT share: a rank-``r`` pair ``B A`` per target, scaled by ``alpha / r``.

    Args:
        target_modules: module-name patterns; ``None`` for the family default (the
            attention query and value projections).
        rank: the rank ``r`` of ``B A`` (> 0).
        alpha: the scale numerator: the update is multiplied by ``alpha / rank``.
        dropout: dropout on the update path's input (training only).
        modules_to_save: modules trained in full (the task head by default).
    """

    #: Query and value projections, self- and cross-attention (fused qkv where fused).
    default_roles: ClassVar[tuple[str, ...]] = self_and_cross("query", "value", "qkv")

    def __init__(
        self,
        target_modules: list[str] | None = None,
        rank: int = 8,
        alpha: float = 8.0,
        dropout: float = 0.0,
        modules_to_save: list[str] | None = None,
    ) -> None:
        super().__init__(target_modules, modules_to_save)
        check_low_rank_options(rank, alpha, dropout)
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout


class LoRA(LowRankStrategy):
    """LoRA on the attention query and value projections by default.

    Args:
        target_modules: module-name patterns; ``None`` for the family default.
        rank: the rank ``r`` of ``B A`` (> 0).
        alpha: the scale numerator: the update is multiplied by ``alpha / rank``.
        dropout: dropout on the LoRA path's input.
        modules_to_save: modules trained in full (the task head by default).
    """

    def make_layer(self, name: str, base: nn.Module, **options: Any) -> AdapterLayer:
        return LoRALinear(base, self.rank, self.alpha, self.dropout)
