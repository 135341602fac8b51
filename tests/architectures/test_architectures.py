"""Every architecture in the table x every method, on tiny models built from configs.

Parametrised from :data:`hadamard_lit.adapters.ARCHITECTURES` (through
:func:`hadamard_lit.testing.tiny_models`), so a new table entry is tested here without
editing this file: defaults apply, identity at init, one optimizer step changes the
output, merged equals unmerged, the adapter state dict loads into a fresh model, and the
merged model round-trips through ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from hadamard_lit.adapters import (
    ARCHITECTURES,
    IA3,
    AdaDHP,
    AdapterLayer,
    HadamardAdapter,
    LoRA,
    adapter_state_dict,
    architecture_of,
    get_adapter_record,
    load_adapter_state_dict,
)
from hadamard_lit.adapters.detection import detect_architecture
from hadamard_lit.adapters.roles import LINEAR_ROLES, LINEAR_TYPES
from hadamard_lit.parallel.fsdp2 import transformer_blocks
from hadamard_lit.testing import TinyModel, tiny_models
from helpers.methods import ADAPTER_METHODS, METHODS, make
from helpers.paths import REPO

torch.set_num_threads(1)

CASES = tiny_models()


def logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def test_the_package_methods_are_found() -> None:
    # Found in hadamard_lit/adapters (helpers.methods): a new method file joins the matrix.
    assert {"adadhp", "hadamard_adapter", "hut", "lora", "ia3", "full", "head_only"} <= set(METHODS)


def test_the_table_covers_what_users_run() -> None:
    names = {case.name for case in CASES}
    assert names >= {
        "t5", "mt5", "umt5", "t5-v1_1", "bart", "mbart", "bert", "roberta", "xlm-roberta",
        "distilbert", "albert", "electra", "deberta-v2", "modernbert", "gpt2", "gpt_neox",
        "gptj", "opt", "falcon", "phi", "phi3", "llama", "mistral", "mixtral", "qwen2",
        "qwen3", "gemma", "gemma2", "gemma3_text", "olmo2", "granite", "stablelm",
    }  # fmt: skip


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_method_on_architecture(case: TinyModel, method: str, tmp_path: Path) -> None:
    model = case.build()
    inputs = case.batch(seed=7)
    if method == "head_only" and case.kind != "encoder":
        with pytest.raises(ValueError, match="no task head"):
            make(method).apply(model)
        return
    frozen = logits(model, inputs)
    adapted = make(method).apply(model)
    if method in ADAPTER_METHODS:
        assert adapted, "the defaults adapted nothing"
        assert all(isinstance(model.get_submodule(n), AdapterLayer) for n in adapted)
    torch.testing.assert_close(logits(model, inputs), frozen, atol=1e-5, rtol=1e-5)

    model.train()
    trained_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained_params, lr=1e-2)
    model(**case.batch()).loss.backward()
    assert not any(p.grad is not None for p in model.parameters() if not p.requires_grad)
    optimizer.step()
    model.eval()
    trained = logits(model, inputs)
    assert not torch.allclose(trained, frozen), "one optimizer step changed nothing"

    state = adapter_state_dict(model)
    fresh = case.build()
    make(method).apply(fresh)
    load_adapter_state_dict(fresh, state)
    torch.testing.assert_close(logits(fresh, inputs), trained, atol=0, rtol=0)

    strategy = get_adapter_record(model).strategy
    biasless = [
        n for n in adapted if isinstance(model.get_submodule(n), AdapterLayer)
        and model.get_submodule(n).bias is None
    ]  # fmt: skip
    if method == "hadamard_adapter" and biasless:
        # Its bias cannot fold into an attention output projection that has none.
        with pytest.raises(ValueError, match="without a bias"):
            strategy.merge(model)
        torch.testing.assert_close(logits(model, inputs), trained, atol=0, rtol=0)
        return
    strategy.merge(model)
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())
    merged = logits(model, inputs)
    torch.testing.assert_close(merged, trained, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path / "merged")
    reloaded = case.auto_class.from_pretrained(tmp_path / "merged").eval()
    assert type(reloaded) is type(model)
    torch.testing.assert_close(logits(reloaded, inputs), merged, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_blocks_roles_and_head(case: TinyModel) -> None:
    model = case.build()
    architecture = architecture_of(model)
    assert architecture is case.architecture
    blocks = architecture.find_blocks(model)
    stacks = 2 if case.kind == "encoder-decoder" else 1
    # ALBERT shares one layer among all of them: its list has one block.
    assert len(blocks) == (1 if case.name == "albert" else 2 * stacks)
    # FSDP2 units are exactly these blocks.
    assert [id(b) for b in transformer_blocks(model)] == [id(b.module) for b in blocks]
    roles = architecture.modules_for(model, LINEAR_ROLES)
    # Every linear layer inside a block plays a role: none is left out by the table.
    inside = [
        n for n, m in model.named_modules()
        if isinstance(m, LINEAR_TYPES) and architecture.block_of(model, n) is not None
    ]  # fmt: skip
    assert sorted(inside) == sorted(n for n in roles if roles[n] != "pooler")
    from transformers import AutoModelForSequenceClassification
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as CLASSIFIERS,
    )

    if case.model_type in CLASSIFIERS:  # Granite has no sequence-classification model
        classifier = case.build(auto_class=AutoModelForSequenceClassification)
        assert architecture.head_modules(classifier), f"{case.name}: head not in the table"


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: a.name)
def test_detection_agrees_with_the_table_where_it_can_tell(architecture) -> None:
    case = next(c for c in CASES if c.architecture is architecture)
    model = case.build()
    try:
        detected = detect_architecture(model)
    except ValueError as err:
        assert "target_modules" in str(err)  # ALBERT's bare "ffn": it says so and stops
        return
    table = architecture.modules_for(model, LINEAR_ROLES)
    found = detected.modules_for(model, LINEAR_ROLES)
    assert found == {n: r for n, r in table.items() if r != "pooler"}


def test_an_architecture_outside_the_table_is_detected_and_logged(caplog) -> None:
    from transformers import AutoModelForCausalLM

    from hadamard_lit.testing import tiny_config

    model = AutoModelForCausalLM.from_config(
        tiny_config("gpt_neo", attention_types=[[["global"], 2]])
    )
    with caplog.at_level(logging.WARNING):
        names = AdaDHP().apply(model)
    assert sorted(names) == [
        f"transformer.h.{i}.attn.attention.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")
    ]
    (line,) = [
        r.getMessage() for r in caplog.records if "not in the architecture table" in r.getMessage()
    ]
    assert "roles detected from its blocks transformer.h.N" in line
    assert "attention.query=attn.attention.q_proj" in line and "ffn.out=mlp.c_proj" in line


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mixer = nn.Linear(8, 8)
        self.proj_a = nn.Linear(8, 8)


class _Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Block(), _Block()])


def test_unclear_names_are_an_error_that_lists_them_and_the_fix() -> None:
    model = _Unknown()
    with pytest.raises(ValueError) as err:
        LoRA().apply(model)
    message = str(err.value)
    assert "not in hadamard_lit's architecture table" in message
    assert "['mixer', 'proj_a']" in message  # the linear layers of one block
    assert "target_modules=['mixer', 'proj_a']" in message
    assert get_adapter_record(model, required=False) is None
    assert len(LoRA(target_modules=["mixer"]).apply(model)) == 2


def test_mixtral_says_what_is_adapted(caplog) -> None:
    case = next(c for c in CASES if c.name == "mixtral")
    with caplog.at_level(logging.WARNING):
        names = IA3().apply(case.build())
    assert all(n.endswith(("k_proj", "v_proj")) for n in names)
    assert any("nothing plays ['ffn.out']" in r.getMessage() and "experts" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_hadamard_adapter_without_a_norm_after_attention_says_so(caplog) -> None:
    case = next(c for c in CASES if c.name == "gptj")
    model = case.build()
    with caplog.at_level(logging.WARNING):
        HadamardAdapter().apply(model)
    trained = get_adapter_record(model).trained_parameters
    assert all("hadamard" in n for n in trained)
    assert any("no normalisation follows" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("name", "norm"), [("t5", "layer.1.layer_norm"), ("mbart", None), ("opt", None)]
)
def test_the_norm_after_attention(name: str, norm: str | None) -> None:
    case = next(c for c in CASES if c.name == name)
    model = case.build()
    HadamardAdapter(modules_to_save=[]).apply(model)
    norms = sorted({n.rsplit(".", 1)[0] for n in get_adapter_record(model).trained_parameters
                    if "hadamard" not in n})  # fmt: skip
    if name == "t5":
        assert all(n.endswith(norm) for n in norms) and len(norms) == 4
    elif name == "mbart":  # pre-LN: the FFN's norm (encoder), the cross-attention's (decoder)
        assert norms == sorted(
            [f"model.encoder.layers.{i}.final_layer_norm" for i in (0, 1)]
            + [f"model.decoder.layers.{i}.encoder_attn_layer_norm" for i in (0, 1)]
        )
    else:  # OPT: pre-LN by default, post-LN (its own norm) when do_layer_norm_before=False
        assert all(n.endswith("final_layer_norm") for n in norms)
        post = TinyModel("opt", case.architecture, "opt", {"do_layer_norm_before": False}).build()
        HadamardAdapter(modules_to_save=[]).apply(post)
        trained = get_adapter_record(post).trained_parameters
        assert any("self_attn_layer_norm" in n for n in trained)


def test_the_readme_table_is_generated_from_the_table() -> None:
    from hadamard_lit.adapters import support

    readme = (REPO / "README.md").read_text()
    assert support.readme_block(readme) == support.markdown(), (
        "README's architecture table is stale: python -m hadamard_lit.adapters.support "
        "--readme README.md"
    )


def test_bad_target_patterns_name_the_option() -> None:
    with pytest.raises(ValueError, match=r"target_modules pattern 're:query\[\(' is not a valid"):
        AdaDHP(target_modules=["re:query[("])
    with pytest.raises(ValueError, match="feedforward_modules pattern 're:\\(' is not a valid"):
        IA3(target_modules=["k"], feedforward_modules=["re:("])
