"""The paper's check figures on full-size configs (meta device, no weights), and the
errors bad input must produce."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, T5Config, T5ForConditionalGeneration

from hadamard_lit.adapters import (
    HUT,
    IA3,
    AdaDHP,
    HadamardAdapter,
    LoRA,
    adapter_state_dict,
    count_parameters,
    count_trainable_parameters,
    load_adapter_state_dict,
)
from helpers.tiny import build

T5_BASE = dict(
    d_model=768,
    d_ff=3072,
    d_kv=64,
    num_layers=12,
    num_heads=12,
    vocab_size=32128,
    feed_forward_proj="relu",
    decoder_start_token_id=0,
    pad_token_id=0,
)
ADADHP_T5_TARGETS = ["q", "k", "v", "o", "wi", "wo"]


def t5_base() -> T5ForConditionalGeneration:
    with torch.device("meta"):
        return T5ForConditionalGeneration(T5Config(**T5_BASE))


def bert_base() -> BertModel:
    with torch.device("meta"):
        return BertModel(BertConfig())  # bert-base-uncased's shape


def test_adadhp_on_t5_base() -> None:
    model = t5_base()
    names = AdaDHP().apply(model)
    trainable, backbone = count_trainable_parameters(model), count_parameters(model) - 405_504
    print(
        f"AdaDHP t5-base: {len(names)} matrices, {trainable:,} parameters, "
        f"{100 * trainable / backbone:.2f}% of {backbone / 1e6:.1f}M"
    )
    assert len(names) == 192
    assert trainable == 405_504


@pytest.mark.parametrize("layers,expected", [(None, 36_864), (list(range(8)), 24_576)])
def test_hadamard_adapter_on_bert_base(layers, expected) -> None:
    model = bert_base()
    backbone = count_parameters(model)
    names = HadamardAdapter(layers=layers).apply(model)
    trainable = count_trainable_parameters(model)
    print(
        f"Hadamard Adapter bert-base, {len(names)} layers: {trainable:,} parameters "
        f"= {100 * trainable / backbone:.4f}% of {backbone / 1e6:.1f}M"
    )
    assert trainable == expected


def test_ia3_on_t5_base() -> None:
    model = t5_base()
    IA3().apply(model)
    print(f"(IA)3 t5-base k,v,wo: {count_trainable_parameters(model):,} parameters")
    assert count_trainable_parameters(model) == 129_024


def test_lora_rank_1_on_adadhp_targets() -> None:
    model = t5_base()
    LoRA(target_modules=ADADHP_T5_TARGETS, rank=1).apply(model)
    print(f"LoRA r=1 on AdaDHP's t5-base targets: {count_trainable_parameters(model):,}")
    assert count_trainable_parameters(model) == 405_504


# -- bad input -----------------------------------------------------------------------------


def test_pattern_that_matches_nothing() -> None:
    with pytest.raises(
        ValueError, match=r"pattern 'query' selects nothing.*\['k', 'lm_head', 'o', 'q'"
    ):
        AdaDHP(target_modules=["q", "query"]).apply(build("t5"))


def test_pattern_that_matches_only_non_linear_modules() -> None:
    with pytest.raises(ValueError, match="none is an nn.Linear or Conv1D"):
        AdaDHP(target_modules=["SelfAttention"]).apply(build("t5"))


def test_failed_apply_changes_nothing() -> None:
    model = build("t5")
    with pytest.raises(ValueError):
        AdaDHP(target_modules=["q", "nope"]).apply(model)
    assert all(p.requires_grad for p in model.parameters())
    AdaDHP().apply(model)  # still a clean model


@pytest.mark.parametrize("cls", [LoRA, HUT])
@pytest.mark.parametrize("rank", [0, -2])
def test_bad_rank(cls, rank) -> None:
    with pytest.raises(ValueError, match=f"rank must be a positive integer, got {rank}"):
        cls(rank=rank)


@pytest.mark.parametrize("cls", [LoRA, HUT])
def test_bad_dropout_and_alpha(cls) -> None:
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        cls(dropout=1.5)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        cls(alpha=0)


def test_layers_out_of_range() -> None:
    with pytest.raises(
        ValueError, match=r"layers \[2, -1\] out of range.*2 layers \(valid indices 0..1\)"
    ):
        HadamardAdapter(layers=[0, 2, -1]).apply(build("bert"))


def test_applying_twice() -> None:
    model = build("bert")
    AdaDHP().apply(model)
    with pytest.raises(ValueError, match="already has AdaDHP applied"):
        LoRA().apply(model)
    with pytest.raises(ValueError, match="already has AdaDHP applied"):
        AdaDHP().apply(model)


def test_unknown_family_needs_explicit_targets() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="model_type=None.*Pass target_modules"):
        AdaDHP().apply(model)
    assert AdaDHP(target_modules=["0"]).apply(model) == ["0"]


def test_empty_target_list() -> None:
    with pytest.raises(ValueError, match="target_modules is empty"):
        AdaDHP(target_modules=[])


def test_missing_module_to_save() -> None:
    with pytest.raises(ValueError, match=r"modules_to_save names \['head'\]"):
        AdaDHP(modules_to_save=["head"]).apply(build("bert"))


def test_ia3_explicit_targets_need_feedforward_modules() -> None:
    with pytest.raises(ValueError, match="needs feedforward_modules"):
        IA3(target_modules=["k"])


def test_state_dict_from_another_strategy_is_refused() -> None:
    source = build("t5")
    LoRA().apply(source)
    target = build("t5")
    AdaDHP().apply(target)
    with pytest.raises(ValueError, match="does not fit AdaDHP.*missing.*unexpected"):
        load_adapter_state_dict(target, adapter_state_dict(source))


def test_state_dict_shape_mismatch_is_refused() -> None:
    source = build("t5")
    LoRA(rank=2).apply(source)
    target = build("t5")
    LoRA(rank=3).apply(target)
    with pytest.raises(ValueError, match="shapes differ"):
        load_adapter_state_dict(target, adapter_state_dict(source))


def test_functions_need_an_applied_strategy() -> None:
    with pytest.raises(ValueError, match="no adapter strategy applied"):
        adapter_state_dict(build("t5"))
    with pytest.raises(ValueError, match="no adapter strategy applied"):
        AdaDHP().merge(build("t5"))
