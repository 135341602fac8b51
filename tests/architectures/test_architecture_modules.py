"""hadamard_lit's LightningModules and the selection callback on every table architecture.

Each tiny model of :func:`hadamard_lit.testing.tiny_models` trains for two steps through
the module of its kind (``SequenceClassificationModule`` for encoders, ``CausalLMModule``
for decoders, ``Seq2SeqModule`` for encoder-decoders) with a real ``Trainer``; its
adapter-only checkpoint loads into a fresh module, and ``export_pretrained`` writes a
plain transformers folder with the same outputs. AdaptiveSelection runs 10 steps on one
encoder, one decoder and one encoder-decoder outside the original four families.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hadamard_lit.adapters import AdapterLayer, adapter_layers, adapter_state_dict
from hadamard_lit.callbacks import AdaptiveSelection
from hadamard_lit.testing import TinyModel
from helpers.modules import CASES, MODULES, fit, module_for

torch.set_num_threads(1)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_module_trains_checkpoints_and_exports(
    case: TinyModel, t5_tokenizer: str, tmp_path: Path
) -> None:
    module = module_for(case, t5_tokenizer)
    trainer = fit(module, case, steps=2, root=tmp_path)
    assert trainer.global_step == 2
    ckpt = tmp_path / "adapter.ckpt"
    trainer.save_checkpoint(ckpt)
    state = adapter_state_dict(module.model)

    loaded = MODULES[case.kind].load_from_checkpoint(ckpt)
    loaded.configure_model()
    again = adapter_state_dict(loaded.model)
    assert sorted(again) == sorted(state)
    assert all(torch.equal(again[k], state[k]) for k in state)

    inputs = {k: v for k, v in case.batch(seed=9).items() if k != "labels"}
    if case.kind == "encoder-decoder":
        inputs["decoder_input_ids"] = torch.zeros(3, 2, dtype=torch.long)
    loaded.eval()
    with torch.no_grad():
        expected = loaded.model(**inputs).logits
    path = loaded.export_pretrained(tmp_path / "export")
    plain = case.auto_class.from_pretrained(path).eval()
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
    with torch.no_grad():
        got = plain(**inputs).logits
    # ~1e-5 of the logits' scale: mT5's untied head gives logits in the tens.
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("name", ["deberta-v2", "qwen3", "bart"])
def test_selection_prunes_on_new_families(name: str, t5_tokenizer: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == name)
    selection = AdaptiveSelection(target=0.5, t_init=2, t_final=8, delta_t=2, plot=True)
    module = module_for(case, t5_tokenizer)
    fit(module, case, steps=10, root=tmp_path, callbacks=[selection])
    layers = adapter_layers(module.model)
    assert selection.done and len(selection.active_modules) == round(0.5 * len(layers) + 1e-9)
    for removed in selection.removed_modules:
        for value in layers[removed].adapter_parameters().values():
            assert bool((value == 1).all()) or bool((value == 0).all()), removed
    # The heat map's rows are the table's blocks, not a parse of the names.
    positions = selection.module_positions
    assert set(positions) == set(layers)
    assert {index for _, index, _ in positions.values()} == {0, 1}
    assert selection.plot_path is not None and selection.plot_path.stat().st_size > 0
