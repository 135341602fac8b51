"""peft as the oracle: our LoRA, (IA)3 and HUT compute what peft's LoRA, IA3 and HiRA do,
and adapters cross between the two unchanged (hadamard_lit.interop.peft_format).

For equal weights, on tiny models of four families (T5, BERT, GPT-2 with its Conv1D and
fused qkv, Llama): the same outputs and the same gradients; ours -> peft folder ->
``PeftModel.from_pretrained`` gives our outputs; peft's ``save_pretrained`` folder ->
``load_peft_adapter`` gives peft's outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hadamard_lit.adapters import HUT, IA3, AdaDHP, HadamardAdapter, LoRA
from hadamard_lit.adapters.base import AdapterStrategy
from hadamard_lit.interop.peft_format import (
    peft_config,
    peft_layout,
    peft_tensors,
    save_peft_adapter,
)
from hadamard_lit.interop.peft_import import load_peft_adapter, strategy_from_peft
from hadamard_lit.testing import TinyModel, tiny_models

peft = pytest.importorskip("peft", reason="peft is the oracle: pip install 'hadamard-lit[peft]'")

#: DistilBERT: peft also trains its ``pre_classifier`` ("classifier" is a plain suffix there).
FAMILIES = ("t5", "bert", "distilbert", "gpt2", "llama")
TINY = {m.name: m for m in tiny_models() if m.name in FAMILIES}
#: alpha != rank: the scale must travel (HiRA has none, so it is folded into B).
METHODS = {
    "lora": lambda: LoRA(rank=4, alpha=12.0),
    "ia3": lambda: IA3(),
    "hut": lambda: HUT(rank=4, alpha=8.0),
}


def randomise(model: nn.Module, seed: int = 3) -> None:
    """Move every trained tensor away from the identity init, reproducibly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                base = 1.0 if name.endswith(("ia3_scale", "ia3_l")) else 0.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))


def ours(tiny: TinyModel, method: str) -> tuple[nn.Module, AdapterStrategy]:
    if method == "hut" and not hasattr(peft, "HiraConfig"):
        pytest.skip(f"peft {peft.__version__} has no HiRA (HiraConfig): install a newer peft")
    model = tiny.build(seed=0)
    strategy = METHODS[method]()
    strategy.apply(model)
    randomise(model)
    return model, strategy


def outputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def assert_not_the_base_model(tiny: TinyModel, model: nn.Module, batch: dict) -> None:
    """The adapter changes the outputs (so that equal outputs say something)."""
    assert (outputs(model, batch) - outputs(tiny.build(seed=0), batch)).abs().max() > 1e-3


def peft_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    """peft's trained parameters' gradients under the names its saved files use."""
    found = {}
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is not None:
            key = name.replace(".modules_to_save.default", "").replace(".default", "")
            found[key] = p.grad
    return found


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_same_outputs_and_gradients_as_peft_for_equal_weights(family: str, method: str) -> None:
    tiny = TINY[family]
    model, _ = ours(tiny, method)
    config = peft_config(model)
    config.inference_mode = False  # an exported config is for inference: here it trains
    reference = peft.get_peft_model(tiny.build(seed=0), config)
    loaded = peft.set_peft_model_state_dict(reference, peft_tensors(model))
    assert not loaded.unexpected_keys, loaded.unexpected_keys
    batch = tiny.batch()
    assert_not_the_base_model(tiny, model, batch)
    torch.testing.assert_close(outputs(model, batch), outputs(reference, batch))

    model(**batch).loss.backward()
    reference(**batch).loss.backward()
    theirs = peft_grads(reference)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    as_peft = peft_layout(model, grads, gradients=True)
    assert set(as_peft) == set(theirs), set(as_peft) ^ set(theirs)
    for name, grad in as_peft.items():
        torch.testing.assert_close(grad, theirs[name], msg=name)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_ours_to_peft_folder_loads_in_peft_with_our_outputs(
    family: str, method: str, tmp_path: Path
) -> None:
    tiny = TINY[family]
    model, _ = ours(tiny, method)
    folder = save_peft_adapter(model, tmp_path / "adapter", base_model_name_or_path="tiny")
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    loaded = peft.PeftModel.from_pretrained(tiny.build(seed=0), str(folder))
    batch = tiny.batch()
    assert_not_the_base_model(tiny, model, batch)
    torch.testing.assert_close(outputs(loaded, batch), outputs(model, batch))


def peft_adapter(tiny: TinyModel, method: str) -> nn.Module:
    """A peft model of ``method`` with random (non-identity) adapter weights."""
    base = tiny.build(seed=0)
    ours_model, _ = ours(tiny, method)  # only to get the same targets
    config = peft_config(ours_model)
    config.inference_mode = False  # trainable, so that randomise reaches the adapter
    model = peft.get_peft_model(base, config)
    randomise(model, seed=5)
    return model


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_peft_folder_loads_as_ours_with_peft_outputs(
    family: str, method: str, tmp_path: Path
) -> None:
    tiny = TINY[family]
    reference = peft_adapter(tiny, method)
    reference.save_pretrained(str(tmp_path / "peft"))
    model = tiny.build(seed=0)
    strategy = load_peft_adapter(model, tmp_path / "peft")
    assert type(strategy) is type(METHODS[method]())
    batch = tiny.batch()
    assert_not_the_base_model(tiny, reference, batch)
    torch.testing.assert_close(outputs(model, batch), outputs(reference, batch))
    # and it trains on: the loaded tensors are the trainable ones
    model(**batch).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_rslora_and_regex_targets_load_exactly(tmp_path: Path) -> None:
    tiny = TINY["bert"]
    config = peft.LoraConfig(r=4, lora_alpha=8, use_rslora=True, init_lora_weights=False,
                             target_modules=r".*\.(query|value)", task_type="SEQ_CLS")  # fmt: skip
    reference = peft.get_peft_model(tiny.build(seed=0), config)
    reference.save_pretrained(str(tmp_path / "peft"))
    model = tiny.build(seed=0)
    strategy = load_peft_adapter(model, tmp_path / "peft")
    # What is adapted is read from the folder's tensors: exact names, whatever the pattern.
    assert strategy.target_modules == [
        f"bert.encoder.layer.{i}.attention.self.{p}" for i in (0, 1) for p in ("query", "value")
    ]
    batch = tiny.batch()
    torch.testing.assert_close(outputs(model, batch), outputs(reference, batch))


@pytest.mark.parametrize("strategy", [AdaDHP(), HadamardAdapter()], ids=lambda s: s.name)
def test_methods_without_peft_equivalent_say_so_and_write_nothing(
    strategy: AdapterStrategy, tmp_path: Path
) -> None:
    model = TINY["bert"].build()
    strategy.apply(model)
    with pytest.raises(ValueError, match="no peft equivalent.*export it merged"):
        save_peft_adapter(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"use_dora": True}, "use_dora"),
        ({"peft_type": "LOHA"}, "no hadamard_lit equivalent"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights"),
        ({"r": "4"}, r"r='4', expected the rank as an integer >= 1"),
    ],
)
def test_peft_folders_we_cannot_compute_exactly_are_refused(
    change: dict, message: str, tmp_path: Path
) -> None:
    import json

    tiny = TINY["bert"]
    peft_adapter(tiny, "lora").save_pretrained(str(tmp_path))
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ValueError, match=message):
        strategy_from_peft(tmp_path)


def test_a_folder_without_safetensors_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match=r"no adapter_model\.safetensors.*pickled"):
        strategy_from_peft(tmp_path)


#: Configs as peft users write them: suffix targets, peft's own task-type heads.
NATIVE = {
    "lora": lambda: peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_lin", "v_lin"],
                                    task_type="SEQ_CLS", init_lora_weights=False),
    "ia3": lambda: peft.IA3Config(target_modules=["k_lin", "v_lin", "lin2"],
                                  feedforward_modules=["lin2"], task_type="SEQ_CLS"),
    "hut": lambda: peft.HiraConfig(r=4, target_modules=["q_lin", "v_lin"], task_type="SEQ_CLS"),
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(NATIVE))
def test_a_peft_native_folder_crosses_both_ways(method: str, tmp_path: Path) -> None:
    """DistilBERT as peft sets it up: ``classifier`` and ``score`` added to the modules to
    save, which by plain suffix also selects ``pre_classifier``."""
    if method == "hut" and not hasattr(peft, "HiraConfig"):
        pytest.skip(f"peft {peft.__version__} has no HiRA (HiraConfig): install a newer peft")
    tiny = TINY["distilbert"]
    reference = peft.get_peft_model(tiny.build(seed=0), NATIVE[method]())
    randomise(reference, seed=7)
    reference.save_pretrained(str(tmp_path / "peft"))
    model = tiny.build(seed=0)
    strategy = load_peft_adapter(model, tmp_path / "peft")
    assert sorted(strategy.modules_to_save or []) == ["classifier", "pre_classifier"]
    batch = tiny.batch()
    assert_not_the_base_model(tiny, reference, batch)
    torch.testing.assert_close(outputs(model, batch), outputs(reference, batch))
    # ... and back: our export loads in peft with the same outputs.
    folder = save_peft_adapter(model, tmp_path / "back")
    again = peft.PeftModel.from_pretrained(tiny.build(seed=0), str(folder))
    torch.testing.assert_close(outputs(again, batch), outputs(reference, batch))
