"""A linear layer with element-wise scales on its input and output, as one autograd node.

    y = r ⊙ (W (l ⊙ x) [+ b]) [+ b] + c

AdaDHP (``l`` and ``r``), (IA)3 (``l`` or ``r``) and the Hadamard Adapter (``r`` and ``c``)
are all this one computation with different tensors present. Written with plain autograd,
every adapted layer would save ``l ⊙ x`` *and* ``W (l ⊙ x)`` for its backward (two new
activation-sized tensors per layer: 1.39x the frozen backbone's peak memory on MiniLM).
This function saves only

* ``x`` itself, when ``l`` needs a gradient (the layer input; no new tensor, and often
  shared by several layers, e.g. q/k/v), and
* its own output ``y``, when ``r`` needs a gradient: ``W (l ⊙ x)`` is recovered in the
  backward as ``(y - c - b) / r``. The next operation usually saves ``y`` anyway
  (attention saves q/k/v, GELU saves its input), so this is often free too.

Recovery is exact up to rounding where ``|r|`` is not tiny. Where some ``|r|`` is below
``RECOVERY_MIN_SCALE`` (a sign of divergence, never seen in normal training) the backward
recomputes ``W (l ⊙ x)`` from ``x`` instead, and in half precision with an unscaled bias
(where ``y - b`` would cancel digits) it saves the pre-scale output outright.

No weight-sized tensor is created in forward or backward: the frozen ``W`` gets no
gradient GEMM, which is what makes an activation-side method cheap.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

#: Below this magnitude, an output scale is not used to recover ``W (l ⊙ x)`` from ``y``.
RECOVERY_MIN_SCALE = 1e-2


def _compute_dtype(x: Tensor) -> torch.dtype:
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _as(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


class _ScaledLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        in_scale: Tensor | None,
        out_scale: Tensor | None,
        out_shift: Tensor | None,
        scale_bias: bool,
    ) -> Tensor:
        dtype = _compute_dtype(x)
        out_features, in_features = weight.shape
        x2 = x.reshape(-1, in_features)
        w = weight.to(dtype)
        b, l, r, c = (_as(t, dtype) for t in (bias, in_scale, out_scale, out_shift))  # noqa: E741
        with torch.autocast(x.device.type, enabled=False):
            xc = x2.to(dtype)
            pre = (xc * l if l is not None else xc) @ w.t()
            if b is not None and scale_bias:
                pre = pre + b
            y = pre * r if r is not None else pre
            if b is not None and not scale_bias:
                y = y + b
            if c is not None:
                y = y + c

        # Decide what the backward will need (see the module docstring).
        need_l = in_scale is not None and ctx.needs_input_grad[3]
        need_r = out_scale is not None and ctx.needs_input_grad[4]
        save_pre = (
            need_r and b is not None and not scale_bias and dtype in (torch.float16, torch.bfloat16)
        )
        ctx.scale_bias = scale_bias
        ctx.dtype = dtype
        ctx.save_pre = save_pre
        ctx.x_shape = x.shape
        ctx.x_dtype = x.dtype
        out = y.view(*x.shape[:-1], out_features)
        saved_x = x if (need_l or need_r or ctx.needs_input_grad[1]) else None
        # Saving the returned tensor itself (not an intermediate) keeps autograd's check
        # that nothing modified it in place before the backward.
        saved_y = pre if save_pre else (out if need_r else None)
        ctx.save_for_backward(saved_x, saved_y, weight, bias, in_scale, out_scale, out_shift)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, y, weight, bias, in_scale, out_scale, out_shift = ctx.saved_tensors
        dtype = ctx.dtype
        out_features, in_features = weight.shape
        need_x, need_w, need_b, need_l, need_r, need_c, _ = ctx.needs_input_grad
        w = weight.to(dtype)
        b, l, r, c = (_as(t, dtype) for t in (bias, in_scale, out_scale, out_shift))  # noqa: E741
        g = grad_out.reshape(-1, out_features).to(dtype)
        xc = None if x is None else x.reshape(-1, in_features).to(dtype)

        grad_x = grad_w = grad_b = grad_l = grad_r = grad_c = None
        if need_c:
            grad_c = g.sum(0, dtype=torch.float32).to(out_shift.dtype)
        if need_b and not ctx.scale_bias:
            grad_b = g.sum(0, dtype=torch.float32).to(bias.dtype)
        if r is not None:
            if need_r:
                pre = _recover_pre_activation(ctx, y, x, w, b, l, r, c)
                grad_r = (g * pre).sum(0, dtype=torch.float32).to(out_scale.dtype)
            g = g * r
        if need_b and ctx.scale_bias:
            grad_b = g.sum(0, dtype=torch.float32).to(bias.dtype)
        if need_w:
            assert xc is not None
            xl = xc * l if l is not None else xc
            grad_w = (g.t() @ xl).to(weight.dtype)
        if need_x or need_l:
            gx = g @ w
            if need_l:
                assert xc is not None
                grad_l = (gx * xc).sum(0, dtype=torch.float32).to(in_scale.dtype)
            if need_x:
                grad_x = (gx * l if l is not None else gx).to(ctx.x_dtype).reshape(ctx.x_shape)
        return grad_x, grad_w, grad_b, grad_l, grad_r, grad_c, None


def _recover_pre_activation(
    ctx: Any,
    y: Tensor,
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    l: Tensor | None,  # noqa: E741 - the paper's name for the input-side vector
    r: Tensor,
    c: Tensor | None,
) -> Tensor:
    """``W (l ⊙ x)`` (plus ``b`` when the bias is scaled), from what the forward saved."""
    if ctx.save_pre:
        return y.to(ctx.dtype)
    if bool((r.abs() < RECOVERY_MIN_SCALE).any()):
        xc = x.reshape(-1, w.shape[1]).to(ctx.dtype)
        pre = (xc * l if l is not None else xc) @ w.t()
        return pre + b if (b is not None and ctx.scale_bias) else pre
    y = y.reshape(-1, r.shape[0]).to(ctx.dtype)
    if c is not None:
        y = y - c
    if b is not None and not ctx.scale_bias:
        y = y - b
    return y / r


def scaled_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    in_scale: Tensor | None = None,
    out_scale: Tensor | None = None,
    out_shift: Tensor | None = None,
    scale_bias: bool = False,
) -> Tensor:
    """``out_scale ⊙ (weight @ (in_scale ⊙ x) [+ bias]) [+ bias] + out_shift``.

    Args:
        x: input, ``(..., in)``.
        weight: ``(out, in)`` (a transposed view is fine, e.g. GPT-2's ``Conv1D``).
        bias: ``(out,)`` or None.
        in_scale: ``l``, ``(in,)`` or None.
        out_scale: ``r``, ``(out,)`` or None.
        out_shift: ``c``, ``(out,)`` or None, added last.
        scale_bias: whether ``out_scale`` also scales the bias ((IA)3, Hadamard Adapter)
            or not (AdaDHP).
    """
    return _ScaledLinear.apply(x, weight, bias, in_scale, out_scale, out_shift, scale_bias)
