"""``export`` as users meet it: a peft folder that peft loads with our outputs, a model card
in every exported folder, the adapter alone beside the merged model, and runs that start
from an exported or peft adapter (``init_adapter_from``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hadamard_lit.adapters import IA3, AdaDHP, LoRA
from hadamard_lit.interop.peft_format import AdapterFormatError
from hadamard_lit.modules import SequenceClassificationModule
from helpers.cli import bert_config, run
from helpers.tiny import TINY_BERT

peft = pytest.importorskip("peft", reason="export --format peft needs peft: pip install peft")

SENTENCES = ["a gorgeous, witty film", "dull and lifeless"]


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["hadamard_lit"])


def fit(tmp_path: Path, shared_data: Path, minilm: str, adapter: str) -> Path:
    """A short fit of the tiny BERT with ``adapter``; its run folder."""
    config = bert_config(tmp_path, shared_data, minilm)
    config["model"]["init_args"]["adapter"] = {"class_path": f"hadamard_lit.adapters.{adapter}"}
    fitted = run("fit", config, tmp_path)
    return Path(fitted.trainer.log_dir or "")


def logits(module: SequenceClassificationModule, model: torch.nn.Module) -> torch.Tensor:
    batch = module.tokenizer(SENTENCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.eval()(**batch).logits


def trained(log_dir: Path) -> SequenceClassificationModule:
    module = SequenceClassificationModule.load_from_checkpoint(log_dir / "checkpoints/last.ckpt")
    return module.eval()


def export(log_dir: Path, tmp_path: Path, out: Path, *args: str) -> None:
    last = log_dir / "checkpoints" / "last.ckpt"
    run("export", log_dir / "config.yaml", tmp_path, "--ckpt_path", str(last),
        "--output_dir", str(out), *args)  # fmt: skip


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_peft_export_loads_in_peft_with_a_card_and_starts_a_run(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    log_dir = fit(tmp_path, shared_data, minilm, "LoRA")
    module = trained(log_dir)
    expected = logits(module, module.model)

    out = tmp_path / "lora-sst2"
    export(log_dir, tmp_path, out, "--format", "peft")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    # What a user writes: the base model, then peft's loader.
    base = module.load_backbone(num_labels=module.model.config.num_labels)
    loaded = peft.PeftModel.from_pretrained(base, str(out))
    torch.testing.assert_close(logits(module, loaded), expected, rtol=1e-5, atol=1e-5)

    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "peft" and "lora" in meta["tags"]
    assert "PeftModel.from_pretrained" in card and "num_labels=2" in card
    assert "Trainable parameters:" in card and "| rank | `8` |" in card
    assert "val/score" in card  # the run's metrics
    assert "## Training config" in card and "LoRA" in card

    # A new run from the peft folder starts where the adapter is.
    again = SequenceClassificationModule(
        backbone_config=TINY_BERT, tokenizer=minilm, adapter=LoRA(), task="sst2",
        init_adapter_from=str(out),
    )  # fmt: skip
    again.configure_model()
    torch.testing.assert_close(logits(again, again.model), expected, rtol=1e-5, atol=1e-5)
    recorded = again.hparams["adapter"]  # what its checkpoints will rebuild: the folder's LoRA
    assert recorded["class_path"].endswith("LoRA") and recorded["init_args"]["alpha"] == 8.0
    assert len(recorded["init_args"]["target_modules"]) == 4  # the tiny BERT's q, v x 2 layers
    # ... of the same method (refused before the backbone loads), with no option that
    # disagrees (refused when the folder's strategy is built on the backbone).
    for wrong, message in ((IA3(), "is a peft LoRA adapter but the run's adapter is IA3"),
                           (LoRA(rank=2), r"rank: run 2, folder 8")):  # fmt: skip
        with pytest.raises(AdapterFormatError, match=message):
            SequenceClassificationModule(
                backbone_config=TINY_BERT, tokenizer=minilm, adapter=wrong, task="sst2",
                init_adapter_from=str(out),
            ).configure_model()  # fmt: skip


def test_peft_export_of_adadhp_is_refused_and_writes_nothing(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    log_dir = fit(tmp_path, shared_data, minilm, "AdaDHP")
    out = tmp_path / "adadhp-peft"
    with pytest.raises(ValueError, match="AdaDHP has no peft equivalent.*export it merged"):
        export(log_dir, tmp_path, out, "--format", "peft")
    assert not out.exists()


def test_merged_export_has_a_card_and_the_adapter_alone_beside_it(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    log_dir = fit(tmp_path, shared_data, minilm, "AdaDHP")
    module = trained(log_dir)
    expected = logits(module, module.model)
    out = tmp_path / "merged"
    export(log_dir, tmp_path, out, "--with_adapter", "true")

    card = (out / "README.md").read_text()
    assert front_matter(card)["library_name"] == "transformers"
    assert "AdaDHP" in card and "AutoModelForSequenceClassification.from_pretrained" in card
    adapter = out / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == [
        "adapter_model.safetensors",
        "hadamard_lit_adapter.json",
    ]
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt")), "no pickles"
    described = json.loads((adapter / "hadamard_lit_adapter.json").read_text())
    assert described["strategy"]["class_path"] == "hadamard_lit.adapters.adadhp.AdaDHP"

    again = SequenceClassificationModule(
        backbone_config=TINY_BERT, tokenizer=minilm, task="sst2", init_adapter_from=str(adapter)
    )
    again.configure_model()
    torch.testing.assert_close(logits(again, again.model), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(AdapterFormatError, match="configure the same method and options"):
        SequenceClassificationModule(
            backbone_config=TINY_BERT, tokenizer=minilm, task="sst2",
            adapter=AdaDHP(target_modules=["query"]), init_adapter_from=str(adapter),
        )  # fmt: skip
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temp left"


def test_card_of_a_best_checkpoint_shows_that_checkpoints_validation(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    """Not the run's last logged values: the ones of the exported weights (from the
    checkpoint itself, so a run logged only to MLflow gets them too)."""
    import csv

    config = bert_config(tmp_path, shared_data, minilm, max_epochs=3)
    log_dir = Path(run("fit", config, tmp_path).trainer.log_dir or "")
    best = next((log_dir / "checkpoints").glob("best-*.ckpt"))
    saved = torch.load(best, map_location="cpu", weights_only=True)
    record = saved["hadamard_lit"]["validation"]
    rows = [r for r in csv.DictReader((log_dir / "metrics.csv").open()) if r.get("val/score")]
    at_best = next(r for r in rows if int(r["epoch"]) == saved["epoch"])  # one val per epoch
    assert record["step"] == saved["global_step"] < int(rows[-1]["step"]), "best is not last"
    assert record["metrics"]["val/score"] == pytest.approx(float(at_best["val/score"]))
    (log_dir / "metrics.csv").unlink()  # as for an MLflow-only run: only the checkpoint knows

    out = tmp_path / "best"
    run("export", log_dir / "config.yaml", tmp_path, "--ckpt_path", str(best),
        "--output_dir", str(out))  # fmt: skip
    card = (out / "README.md").read_text()
    assert f"Validation of these weights (`{best.name}`" in card
    assert f"at optimizer step {record['step']}" in card
    assert f"| val/score | {record['metrics']['val/score']:.4f} |" in card
    scores = front_matter(card)["model-index"][0]["results"][0]["metrics"]
    assert {"name": "val/score", "type": "val_score",
            "value": round(record["metrics"]["val/score"], 6)} in scores  # fmt: skip
