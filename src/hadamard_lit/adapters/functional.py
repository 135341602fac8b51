"""A linear layer with element-wise scales on its input and output, as one autograd node.

    y = r ⊙ (W (l ⊙ x) [+ b]) [+ b] + c

AdaDHP (``l`` and ``r``), (IA)3 (``l`` or ``r``) and the Hadamard Adapter (``r`` and ``c``)
are all this one computation with different tensors present. Written with plain autograd,
every adapted layer would save ``l ⊙ x`` *and* ``W (l ⊙ x)`` for its backward (two new
activation-sized tensors per layer: 1.39x the frozen floor's peak memory on MiniLM, as
METHODS.md measured it).
This function saves only

* ``x`` itself, when ``l`` needs a gradient (the layer input; no new tensor, and often
  shared by several layers, e.g. q/k/v), and
* its own output ``y``, when ``r`` needs a gradient: ``Σₜ g ⊙ W (l ⊙ x)`` is recovered in
  the backward as ``(Σₜ g ⊙ y − s ⊙ Σₜ g) / r`` with ``s`` the unscaled shift (bias and/or
  ``c``). The next operation often saves ``y`` anyway (GELU saves its input, eager
  attention its q/k/v), so this is often free too.

Recovery is exact up to rounding where ``|r|`` is not tiny. Where some ``|r|`` is below
``RECOVERY_MIN_SCALE`` at forward time (a sign of divergence, never seen in normal
training), or in half precision with an unscaled bias (where ``y − b`` would cancel
digits), the forward saves the pre-scale output ``W (l ⊙ x) [+ b]`` instead of ``y``.

Speed: in the forward the scales act on the activations; no weight-sized tensor is
formed, so nothing weight-sized can live from the forward to the backward, and the frozen
``W`` gets no gradient GEMM. What the scales add per token is element-wise: two passes in
the forward (``l ⊙ x``, then scale and shift fused in one ``addcmul``), and in the
backward the reductions ``Σₜ g ⊙ y`` and ``Σₜ (∂L/∂(l ⊙ x)) ⊙ x`` (in row blocks that stay
in cache). The backward's ``g ⊙ r`` and ``⊙ l`` are folded into a short-lived copy of
``W`` when that copy is the smaller tensor (training batches), saving two passes.
Measured per layer (MiniLM shapes, 2048 tokens, one thread), forward + backward cost
1.10-1.19x a frozen linear layer's; the remaining gap is those four memory-bound passes.
Folding the forward's scales into ``W`` too would save about 2.5% of a MiniLM step more.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

#: Below this magnitude, a scale is not divided out of a saved tensor or a gradient.
RECOVERY_MIN_SCALE = 1e-2


def _compute_dtype(x: Tensor) -> tuple[torch.dtype, bool]:
    """The dtype to compute in, and whether autocast is on (and must be paused)."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type), True
    return x.dtype, False


def _as(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def _has_tiny(scale: Tensor) -> bool:
    # One scalar read back per adapted layer and step: on a GPU a host sync (a short stall
    # of the launch queue), the price of never dividing by a near-zero scale.
    return bool(scale.abs().min() < RECOVERY_MIN_SCALE)


def _scaled_weight(w: Tensor, l: Tensor | None, r: Tensor | None) -> Tensor:  # noqa: E741
    """``diag(r) w diag(l)`` (either may be None): a new tensor unless both are None."""
    if l is not None:
        w = w * l
        return w if r is None else w.mul_(r[:, None])
    return w if r is None else w * r[:, None]


#: Rows of ``a ⊙ b`` formed at a time by :func:`_dot_over_tokens`: about this many elements,
#: so the product is summed while it is still in cache (on a 1 MiB-L2 CPU it nearly halves
#: the time of the reduction over a (2048, 1536) activation).
_REDUCTION_CHUNK = 1 << 18


def _dot_over_tokens(a: Tensor, b: Tensor, sum_a: bool = False) -> tuple[Tensor, Tensor | None]:
    """``Σₜ a ⊙ b`` (and ``Σₜ a`` if asked) over the rows of two ``(tokens, features)`` tensors.

    Accumulates in float32 (or wider). On CPU, done in row blocks so the product never
    makes a round trip through main memory: this is all the per-token work the scales
    add. Elsewhere in one piece: a loop of small kernels would be bound by launch latency.
    """
    acc = torch.promote_types(a.dtype, torch.float32)
    rows, cols = a.shape
    step = max(1, _REDUCTION_CHUNK // max(cols, 1))
    if rows <= 2 * step or a.device.type != "cpu":
        return (a * b).sum(0, dtype=acc), (a.sum(0, dtype=acc) if sum_a else None)
    dot = torch.zeros(cols, dtype=acc, device=a.device)
    total = torch.zeros(cols, dtype=acc, device=a.device) if sum_a else None
    buffer = torch.empty(step, cols, dtype=torch.promote_types(a.dtype, b.dtype), device=a.device)
    for start in range(0, rows, step):
        a_rows, b_rows = a[start : start + step], b[start : start + step]
        product = torch.mul(a_rows, b_rows, out=buffer[: a_rows.shape[0]])
        dot.add_(product.sum(0, dtype=acc))
        if total is not None:
            total.add_(a_rows.sum(0, dtype=acc))
    return dot, total


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
        dtype, autocast = _compute_dtype(x)
        w = weight.to(dtype)
        b, l, r, c = (_as(t, dtype) for t in (bias, in_scale, out_scale, out_shift))  # noqa: E741

        need_l = in_scale is not None and ctx.needs_input_grad[3]
        need_r = out_scale is not None and ctx.needs_input_grad[4]
        # Save W (l ⊙ x) [+ b] itself where y cannot give it back accurately (see above).
        keep_pre = need_r and (
            (b is not None and not scale_bias and dtype in (torch.float16, torch.bfloat16))
            or _has_tiny(r)  # type: ignore[arg-type]
        )
        with torch.autocast(x.device.type, enabled=False) if autocast else nullcontext():
            # On x's own shape: an output reshaped here would be a view made inside a custom
            # Function, which autograd forbids the caller to modify in place (Falcon's
            # parallel block adds into its FFN output).
            xc = x.to(dtype)
            xs = xc * l if l is not None else xc
            pre = None
            if r is None:
                y = F.linear(xs, w, _add(b, c))
            else:
                pre = F.linear(xs, w, b if scale_bias else None)
                shift = _add(None if scale_bias else b, c)
                # One pass, in place unless pre is what the backward keeps.
                if shift is None:
                    y = pre * r if keep_pre else pre.mul_(r)
                else:
                    y = torch.addcmul(shift, pre, r, out=None if keep_pre else pre)

        ctx.scale_bias = scale_bias
        ctx.dtype = dtype
        ctx.keep_pre = keep_pre
        ctx.x_shape = x.shape
        ctx.x_dtype = x.dtype
        out = y
        saved_x = x if (need_l or ctx.needs_input_grad[1]) else None
        # Saving the returned tensor itself (not an intermediate) keeps autograd's check
        # that nothing modified it in place before the backward.
        saved_y = pre if keep_pre else (out if need_r else None)
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
        # y = r ⊙ pre + s, with s the part of the output that r does not scale.
        shift = None if r is None else _add(None if ctx.scale_bias else b, c)
        recover_with_shift = need_r and not ctx.keep_pre and shift is not None
        g_sum = gy = None
        if need_r:
            saved = y.reshape(-1, out_features)
            saved = saved if ctx.keep_pre else saved.to(dtype)
            gy, g_sum = _dot_over_tokens(g, saved, sum_a=recover_with_shift)
        if g_sum is None and (need_c or need_b):
            g_sum = g.sum(0, dtype=torch.promote_types(g.dtype, torch.float32))
        if need_c:
            assert g_sum is not None
            grad_c = g_sum.to(out_shift.dtype)
        if need_b:
            assert g_sum is not None
            grad_b = (g_sum * r if (ctx.scale_bias and r is not None) else g_sum).to(bias.dtype)
        if need_r:
            assert gy is not None and r is not None
            if recover_with_shift:
                assert shift is not None and g_sum is not None
                gy = gy - shift * g_sum
            grad_r = (gy if ctx.keep_pre else gy / r).to(out_scale.dtype)
        if need_w:
            assert xc is not None
            gr = g * r if r is not None else g
            xl = xc * l if l is not None else xc
            grad_w = (gr.t() @ xl).to(weight.dtype)
        if need_x or need_l:
            # ∂L/∂x = ((g ⊙ r) W) ⊙ l. In the backward (not the forward: nothing weight-sized
            # may live from one to the other) a scale is folded into a temporary copy of W
            # where that copy is smaller than the activation it would otherwise scale, which
            # saves a pass over the activations per scale. l is divided back out of the sum
            # for its gradient, so it is folded only where it has no tiny entries.
            tokens = g.shape[0]
            l_on_w = l is not None and out_features < tokens and not (need_l and _has_tiny(l))
            r_on_w = r is not None and in_features < tokens
            gs = g * r if (r is not None and not r_on_w) else g
            gx = gs @ _scaled_weight(w, l if l_on_w else None, r if r_on_w else None)
            if need_l:
                assert xc is not None and l is not None
                grad_l = _dot_over_tokens(gx, xc)[0]
                grad_l = (grad_l / l if l_on_w else grad_l).to(in_scale.dtype)
            if need_x:
                gx = gx.mul_(l) if (l is not None and not l_on_w) else gx  # gx is ours
                grad_x = gx.to(ctx.x_dtype).reshape(ctx.x_shape)
        return grad_x, grad_w, grad_b, grad_l, grad_r, grad_c, None


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
