"""Every method × every supported family on tiny models: train a step, save/load the
adapter state dict into a fresh model, merge and round-trip through save_pretrained."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

from hadamard_lit.adapters import (
    AdaDHP,
    AdapterLayer,
    HadamardAdapter,
    HeadOnly,
    adapter_state_dict,
    count_trainable_parameters,
    get_adapter_record,
    load_adapter_state_dict,
)
from helpers.methods import METHODS as ALL_METHODS
from helpers.methods import make
from helpers.tiny import BUILDERS, batch, build, output

#: Every method that trains something on any family (HeadOnly needs a head: its own tests).
METHODS = [m for m in ALL_METHODS if m != "head_only"]
AUTO = {
    "t5": AutoModelForSeq2SeqLM,
    "t5_v1_1": AutoModelForSeq2SeqLM,
    "bert": AutoModelForSequenceClassification,
    "roberta": AutoModelForSequenceClassification,
    "gpt2": AutoModelForCausalLM,
    "llama": AutoModelForCausalLM,
}
# Attention output projections without a bias cannot take a Hadamard Adapter's bias.
NO_ATTENTION_OUTPUT_BIAS = {"t5", "t5_v1_1", "llama"}


def one_step(model: torch.nn.Module, family: str) -> None:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch(family)).loss.backward()
    frozen_with_grad = [
        n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None
    ]
    assert frozen_with_grad == []
    opt.step()
    opt.zero_grad()
    model.eval()


@pytest.mark.parametrize("family", list(BUILDERS))
@pytest.mark.parametrize("method", METHODS)
def test_method_on_family(method: str, family: str, tmp_path) -> None:
    model = build(family)
    inputs = batch(family, seed=7)
    frozen = output(model, family, inputs)
    adapted = make(method).apply(model)
    assert adapted, "nothing was adapted"
    torch.testing.assert_close(output(model, family, inputs), frozen, atol=1e-5, rtol=1e-5)

    one_step(model, family)
    trained = output(model, family, inputs)
    assert not torch.allclose(trained, frozen), "one step changed nothing"

    # Adapter state dict → a freshly built model with the same strategy → same outputs.
    state = adapter_state_dict(model)
    assert set(state) == set(get_adapter_record(model).trained_parameters)
    fresh = build(family)
    make(method).apply(fresh)
    load_adapter_state_dict(fresh, state)
    torch.testing.assert_close(output(fresh, family, inputs), trained, atol=0, rtol=0)
    if method != "full":
        assert sum(t.numel() for t in state.values()) < 0.5 * sum(
            p.numel() for p in model.parameters()
        )

    strategy = get_adapter_record(model).strategy
    if method == "hadamard_adapter" and family in NO_ATTENTION_OUTPUT_BIAS:
        with pytest.raises(ValueError, match="without a bias"):
            strategy.merge(model)
        assert get_adapter_record(model) is not None
        torch.testing.assert_close(output(model, family, inputs), trained, atol=0, rtol=0)
        return
    strategy.merge(model)
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())
    merged = output(model, family, inputs)
    torch.testing.assert_close(merged, trained, atol=1e-5, rtol=1e-5)

    model.save_pretrained(tmp_path / "merged")
    reloaded = AUTO[family].from_pretrained(tmp_path / "merged").eval()
    assert type(reloaded) is type(model)
    torch.testing.assert_close(output(reloaded, family, inputs), merged, atol=1e-6, rtol=1e-6)


def test_hadamard_adapter_merges_bias_free_projection_while_its_bias_is_zero(tmp_path) -> None:
    model = build("t5")
    strategy = HadamardAdapter()
    strategy.apply(model)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, AdapterLayer):
                layer.hadamard_weight.uniform_(0.5, 1.5)
    inputs = batch("t5", seed=7)
    before = output(model, "t5", inputs)
    strategy.merge(model)
    torch.testing.assert_close(output(model, "t5", inputs), before, atol=1e-5, rtol=1e-5)


def test_modules_to_save_default_is_the_classification_head() -> None:
    model = build("bert")
    AdaDHP().apply(model)
    record = get_adapter_record(model)
    assert record.modules_to_save == ["classifier"]
    assert all(p.requires_grad for p in model.classifier.parameters())
    assert not any(n.startswith("classifier") for n in record.adapted)

    none_saved = build("bert")
    AdaDHP(modules_to_save=[]).apply(none_saved)
    assert not any(p.requires_grad for p in none_saved.classifier.parameters())


def test_hadamard_adapter_trains_the_norm_after_attention() -> None:
    model = build("bert")
    HadamardAdapter(modules_to_save=[]).apply(model)
    trained = get_adapter_record(model).trained_parameters
    assert "bert.encoder.layer.0.attention.output.LayerNorm.weight" in trained
    assert "bert.encoder.layer.0.output.LayerNorm.weight" not in trained
    # 2 layers x (adapter w, b + LayerNorm weight, bias) x 32
    assert count_trainable_parameters(model) == 2 * 4 * 32

    gpt2 = build("gpt2")
    HadamardAdapter().apply(gpt2)
    assert "transformer.h.1.ln_2.weight" in get_adapter_record(gpt2).trained_parameters


def test_t5_v1_1_defaults_target_the_gated_ffn() -> None:
    model = build("t5_v1_1")
    names = AdaDHP().apply(model)
    assert any(n.endswith("DenseReluDense.wi_0") for n in names)
    assert any(n.endswith("DenseReluDense.wi_1") for n in names)
    assert any(n.endswith("DenseReluDense.wo") for n in names)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_head_only_trains_the_head_and_nothing_else(family: str, tmp_path) -> None:
    model = build(family)
    inputs = batch(family, seed=7)
    frozen = output(model, family, inputs)
    assert HeadOnly().apply(model) == []
    record = get_adapter_record(model)
    assert record.trained_parameters and all(
        n.startswith("classifier.") for n in record.trained_parameters
    )
    assert count_trainable_parameters(model) == sum(
        p.numel() for p in model.classifier.parameters()
    )
    one_step(model, family)
    trained = output(model, family, inputs)
    assert not torch.allclose(trained, frozen)
    fresh = build(family)
    HeadOnly().apply(fresh)
    load_adapter_state_dict(fresh, adapter_state_dict(model))
    torch.testing.assert_close(output(fresh, family, inputs), trained, atol=0, rtol=0)
    get_adapter_record(model).strategy.merge(model)
    model.save_pretrained(tmp_path / "merged")
    reloaded = AUTO[family].from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(output(reloaded, family, inputs), trained, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_head_only_without_a_head_is_an_error(family: str) -> None:
    model = build(family)
    with pytest.raises(ValueError, match="no task head on .*modules_to_save"):
        HeadOnly().apply(model)
    assert get_adapter_record(model, required=False) is None
    assert all(p.requires_grad for p in model.parameters()), "a failed apply froze the model"
