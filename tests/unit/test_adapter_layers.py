"""Each adapter layer on a bare nn.Linear / Conv1D: identity at init, merge equals unmerged
after training, gradients reach only the adapter tensors, and the fused autograd function
matches plain autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from hadamard_lit.adapters import (
    HUT,
    IA3,
    AdaDHP,
    AdapterLayer,
    HadamardAdapter,
    LoRA,
    adapter_layers,
    adapter_state_dict,
)
from hadamard_lit.adapters.functional import scaled_linear

IN, OUT = 12, 10


def strategies() -> dict[str, object]:
    return {
        "adadhp": AdaDHP(target_modules=["0"]),
        "ia3_out": IA3(target_modules=["0"], feedforward_modules=[]),
        "ia3_in": IA3(target_modules=["0"], feedforward_modules=["0"]),
        "hadamard_adapter": HadamardAdapter(target_modules=["0"], train_norm=False),
        "lora": LoRA(target_modules=["0"], rank=3, alpha=6.0),
        "hut": HUT(target_modules=["0"], rank=3, alpha=6.0),
    }


def bare(kind: str, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    layer = Conv1D(OUT, IN) if kind == "conv1d" else nn.Linear(IN, OUT, bias=bias)
    if kind == "conv1d":
        nn.init.normal_(layer.bias)  # Conv1D starts with a zero bias: make it count
    return nn.Sequential(layer)


LAYERS = [("linear", True), ("linear", False), ("conv1d", True)]


def train_a_little(model: nn.Module, steps: int = 4) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.05, weight_decay=0.01)
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x = torch.randn(5, 4, IN, generator=g)
        loss = (model(x) - torch.randn(5, 4, OUT, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("kind,bias", LAYERS)
@pytest.mark.parametrize("method", list(strategies()))
def test_identity_at_init(method: str, kind: str, bias: bool) -> None:
    model = bare(kind, bias)
    x = torch.randn(3, 5, IN)
    expected = model(x)
    strategies()[method].apply(model)
    assert isinstance(model[0], AdapterLayer)
    torch.testing.assert_close(model(x), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind,bias", LAYERS)
@pytest.mark.parametrize("method", list(strategies()))
def test_merged_equals_unmerged_after_training(method: str, kind: str, bias: bool) -> None:
    model = bare(kind, bias)
    strategy = strategies()[method]
    strategy.apply(model)
    before = {k: v.clone() for k, v in adapter_state_dict(model).items()}
    train_a_little(model)
    after = adapter_state_dict(model)
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed nothing"

    x = torch.randn(3, 5, IN)
    unmerged = model(x)
    if method == "hadamard_adapter" and not bias:
        with pytest.raises(ValueError, match="without a bias"):
            strategy.merge(model)
        assert isinstance(model[0], AdapterLayer), "a failed merge must leave the model as it was"
        return
    strategy.merge(model)
    assert type(model[0]) is (Conv1D if kind == "conv1d" else nn.Linear)
    torch.testing.assert_close(model(x), unmerged, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,bias", LAYERS)
@pytest.mark.parametrize("method", list(strategies()))
def test_gradients_reach_only_adapter_tensors(method: str, kind: str, bias: bool) -> None:
    model = bare(kind, bias)
    strategies()[method].apply(model)
    layer = model[0]
    model(torch.randn(2, 3, IN)).pow(2).sum().backward()
    assert layer.weight.grad is None
    assert layer.bias is None or layer.bias.grad is None
    for name, param in layer.adapter_parameters().items():
        assert param.grad is not None, name
        # A low-rank A gets a zero gradient while B is zero; every other tensor must move.
        if not name.endswith("_A"):
            assert param.grad.abs().sum() > 0, name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"0.{n}" for n in layer.adapter_parameter_names}


@pytest.mark.parametrize("method", list(strategies()))
def test_adapter_tensors_follow_base_dtype_and_device(method: str) -> None:
    model = bare("linear").to(torch.bfloat16)
    strategies()[method].apply(model)
    for param in model[0].adapter_parameters().values():
        assert param.dtype == torch.bfloat16
        assert param.device == model[0].weight.device


# -- the fused autograd function ---------------------------------------------------------


def reference(x, w, b, l, r, c, scale_bias):  # noqa: E741
    xs = x * l if l is not None else x
    y = xs @ w.t()
    if b is not None and scale_bias:
        y = y + b
    if r is not None:
        y = y * r
    if b is not None and not scale_bias:
        y = y + b
    if c is not None:
        y = y + c
    return y


CASES = {
    "adadhp": dict(l=True, r=True, c=False, scale_bias=False),
    "ia3_out": dict(l=False, r=True, c=False, scale_bias=True),
    "ia3_in": dict(l=True, r=False, c=False, scale_bias=False),
    "hadamard": dict(l=False, r=True, c=True, scale_bias=True),
}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_scaled_linear_gradcheck(case: str, bias: bool) -> None:
    opts = CASES[case]
    g = torch.Generator().manual_seed(0)
    d = dict(dtype=torch.float64)
    x = torch.randn(2, 3, IN, generator=g, **d).requires_grad_()
    w = torch.randn(OUT, IN, generator=g, **d).requires_grad_()
    b = torch.randn(OUT, generator=g, **d).requires_grad_() if bias else None
    l = (torch.rand(IN, generator=g, **d) + 0.5).requires_grad_() if opts["l"] else None  # noqa: E741
    r = (torch.rand(OUT, generator=g, **d) + 0.5).requires_grad_() if opts["r"] else None
    c = torch.randn(OUT, generator=g, **d).requires_grad_() if opts["c"] else None
    inputs = (x, w, b, l, r, c, opts["scale_bias"])
    assert torch.autograd.gradcheck(scaled_linear, inputs)


def test_scaled_linear_recomputes_when_an_output_scale_is_tiny() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, IN, generator=g, requires_grad=True)
    w = torch.randn(OUT, IN, generator=g)
    b = torch.randn(OUT, generator=g)
    l = torch.rand(IN, generator=g).add(0.5).requires_grad_()  # noqa: E741
    r = torch.rand(OUT, generator=g).add(0.5)
    r[3] = 0.0  # y - b carries no information about W(l ⊙ x) here
    r.requires_grad_()
    grads = torch.autograd.grad(scaled_linear(x, w, b, l, r).sum(), (x, l, r))
    expected = torch.autograd.grad(reference(x, w, b, l, r, None, False).sum(), (x, l, r))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_scaled_linear_in_bfloat16_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    bf = dict(dtype=torch.bfloat16)
    x = torch.randn(8, IN, generator=g).to(**bf).requires_grad_()
    w = torch.randn(OUT, IN, generator=g).to(**bf)
    b = torch.randn(OUT, generator=g).to(**bf)
    l = torch.rand(IN, generator=g).add(0.5).to(**bf).requires_grad_()  # noqa: E741
    r = torch.rand(OUT, generator=g).add(0.5).to(**bf).requires_grad_()
    grads = torch.autograd.grad(scaled_linear(x, w, b, l, r).float().sum(), (x, l, r))
    ref = [t.detach().double().requires_grad_() for t in (x, l, r)]
    expected = torch.autograd.grad(
        reference(ref[0], w.double(), b.double(), ref[1], ref[2], None, False).sum(), ref
    )
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got.double(), want, atol=0.1, rtol=0.05)


def test_scaled_linear_under_autocast_returns_autocast_dtype() -> None:
    lin = nn.Sequential(nn.Linear(IN, OUT))
    AdaDHP(target_modules=["0"]).apply(lin)
    x = torch.randn(2, IN, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    assert lin[0].row_scale.grad.dtype == torch.float32


@pytest.mark.parametrize("method", ["adadhp", "ia3_in", "ia3_out", "hadamard_adapter"])
def test_activation_side_methods_save_no_new_weight_or_input_copies(method: str) -> None:
    """AdaDHP, (IA)3 and the Hadamard Adapter keep only the layer's input, its output and
    the parameters for backward: no weight-sized tensor, no ``l ⊙ x`` copy."""
    model = bare("linear")
    strategies()[method].apply(model)
    layer = model[0]
    x = torch.randn(6, IN, requires_grad=True)
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    allowed = {x.data_ptr(), y.data_ptr()} | {p.data_ptr() for p in layer.parameters()}
    extra = [tuple(t.shape) for t in saved if t.data_ptr() not in allowed]
    assert extra == [], f"{method} saved new tensors for backward: {extra}"
    assert adapter_layers(model) == {"0": layer}
