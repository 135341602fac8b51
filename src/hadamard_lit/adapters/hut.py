"""HUT: Hadamard Updated Transformation, a multiplicative low-rank update (arXiv 2409.13501).

The full text was not available; this is the stated form (METHODS.md §3), the same as
HiRA (ICLR 2025):

    W' = W ⊙ (1 + s · B A)        A: r x in (Kaiming-uniform), B: out x r (0), s = alpha / r

``W ⊙ (B A)`` is materialised once per forward, so its cost does not grow with the number
of tokens (unmerged LoRA's ``B (A x)`` does). Identity at init (``B = 0``); merges to
``W ← W ⊙ (1 + s B A)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hadamard_lit.adapters.base import AdapterLayer
from hadamard_lit.adapters.lora import LowRankLayer, LowRankStrategy


class HUTLinear(LowRankLayer):
    """``y = (W ⊙ (1 + s B A)) x + b``; with dropout, ``W x + b + (s W ⊙ B A) dropout(x)``."""

    adapter_parameter_names = ("hut_A", "hut_B")

    def _update(self, dtype: torch.dtype) -> Tensor:
        a, b = self.low_rank_pair(dtype)
        return b @ a

    def forward(self, x: Tensor) -> Tensor:
        w = self.linear_weight.to(x.dtype)
        if self.training and self.dropout_p > 0:
            # Dropout applies to the update's path only, as LoRA's does: the base layer
            # must see the undropped input.
            delta = self.scaling * w * self._update(x.dtype)
            return F.linear(x, w, self.bias) + F.linear(self.dropout(x), delta)
        # One weight-sized tensor per forward, whatever the number of tokens.
        return F.linear(
            x, torch.addcmul(w, w, self._update(x.dtype), value=self.scaling), self.bias
        )

    def merged_weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        w = self.linear_weight.float()
        return torch.addcmul(w, w, self._update(torch.float32), value=self.scaling), self.bias


class HUT(LowRankStrategy):
    """HUT on the attention query and value projections by default.

    Args:
        target_modules: module-name patterns; ``None`` for the family default.
        rank: the rank ``r`` of ``B A`` (> 0).
        alpha: the update is scaled by ``alpha / rank``.
        dropout: dropout on the update path's input (training only).
        modules_to_save: modules trained in full (the task head by default).
    """

    def make_layer(self, name: str, base: nn.Module, **options: Any) -> AdapterLayer:
        return HUTLinear(base, self.rank, self.alpha, self.dropout)
