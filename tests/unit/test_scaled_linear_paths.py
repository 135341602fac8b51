"""The fused ``scaled_linear`` on training-size inputs: row-blocked reductions, tiny
scales (saved pre-activation instead of recovery), and a weight that trains."""

from __future__ import annotations

import pytest
import torch

from hadamard_lit.adapters import functional
from hadamard_lit.adapters.functional import scaled_linear

IN, OUT = 12, 10

CASES = {
    "adadhp": dict(l=True, r=True, c=False, scale_bias=False),
    "ia3_out": dict(l=False, r=True, c=False, scale_bias=True),
    "ia3_in": dict(l=True, r=False, c=False, scale_bias=False),
    "hadamard": dict(l=False, r=True, c=True, scale_bias=True),
    "everything": dict(l=True, r=True, c=True, scale_bias=False),
}


def inputs(case: str, bias: bool, tokens: int, tiny: bool) -> tuple:
    opts = CASES[case]
    g = torch.Generator().manual_seed(0)
    d = dict(dtype=torch.float64)
    x = torch.randn(2, tokens, IN, generator=g, **d).requires_grad_()
    w = torch.randn(OUT, IN, generator=g, **d)
    b = torch.randn(OUT, generator=g, **d).requires_grad_() if bias else None
    l = torch.rand(IN, generator=g, **d) + 0.5 if opts["l"] else None  # noqa: E741
    r = torch.rand(OUT, generator=g, **d) + 0.5 if opts["r"] else None
    if tiny:  # an input scale at 0 cannot be divided out; an output scale near 0 neither
        if l is not None:
            l[2] = 0.0
        if r is not None:
            r[3] = 1e-3
    l = None if l is None else l.requires_grad_()  # noqa: E741
    r = None if r is None else r.requires_grad_()
    c = torch.randn(OUT, generator=g, **d).requires_grad_() if opts["c"] else None
    return x, w, b, l, r, c, opts["scale_bias"]


@pytest.mark.parametrize("tiny", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck_with_blocked_reductions(
    case: str, bias: bool, tiny: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2 x 16 tokens in 3-row blocks: the sums over tokens take several blocks.
    monkeypatch.setattr(functional, "_REDUCTION_CHUNK", 3 * OUT)
    assert torch.autograd.gradcheck(scaled_linear, inputs(case, bias, 16, tiny))


def test_weight_gradient_when_the_weight_trains() -> None:
    x, w, *rest = inputs("everything", True, 16, False)
    assert torch.autograd.gradcheck(scaled_linear, (x, w.requires_grad_(), *rest))


def test_blocked_reduction_matches_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(functional, "_REDUCTION_CHUNK", 64)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1000, 30, generator=g, dtype=torch.float64)
    b = torch.randn(1000, 30, generator=g, dtype=torch.float64)
    dot, total = functional._dot_over_tokens(a, b, sum_a=True)
    torch.testing.assert_close(dot, (a * b).sum(0))
    torch.testing.assert_close(total, a.sum(0))
