"""End-to-end runs of ``python -m hadamard_lit`` on real data with tiny backbones.

Each task shape runs ``fit``, then ``validate`` and ``test`` from the run's own saved
config and checkpoint, as a user would; plus resume, ``export`` and the entry point.
The CLI runs in-process (``HadamardCLI(args=...)``) except for ``--version``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from transformers import AutoModelForSequenceClassification

from hadamard_lit import __version__
from hadamard_lit.cli import HadamardCLI
from hadamard_lit.modules import SequenceClassificationModule
from helpers.cli import (
    bert_config,
    llama_config,
    metrics_rows,
    run,
    t5_config,
)
from helpers.paths import REPO


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when args= comes with pytest's own command line in sys.argv.
    monkeypatch.setattr(sys, "argv", ["hadamard_lit"])


def fit_validate_test(config: dict[str, Any], tmp_path: Path) -> dict[str, float]:
    """Fit, then validate and test the run's last checkpoint from its saved config."""
    fitted = run("fit", config, tmp_path)
    log_dir = Path(fitted.trainer.log_dir or "")
    assert (log_dir / "config.yaml").is_file(), "the resolved config is saved with the run"
    last = log_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert list((log_dir / "checkpoints").glob("best-*.ckpt")), "best checkpoint on val/score"
    rows = metrics_rows(log_dir)
    assert any(r.get("trainable_params") for r in rows)
    final_val = float(fitted.trainer.callback_metrics["val/score"])

    validated = run("validate", log_dir / "config.yaml", tmp_path, "--ckpt_path", str(last))
    # The adapter-only checkpoint restores the run exactly: same score as at the end of fit.
    assert float(validated.trainer.callback_metrics["val/score"]) == pytest.approx(final_val)
    tested = run("test", log_dir / "config.yaml", tmp_path, "--ckpt_path", str(last))
    score = float(tested.trainer.callback_metrics["test/score"])
    assert 0.0 <= score <= 1.0
    return {"val": final_val, "test": score}


def test_seq2seq_t5_end_to_end(tmp_path: Path, shared_data: Path, t5_tokenizer: str) -> None:
    fit_validate_test(t5_config(tmp_path, shared_data, t5_tokenizer), tmp_path)


def test_classification_bert_end_to_end(tmp_path: Path, shared_data: Path, minilm: str) -> None:
    fit_validate_test(bert_config(tmp_path, shared_data, minilm), tmp_path)
    run_dir = next((tmp_path / "bert").glob("version_0"))
    last = run_dir / "checkpoints" / "last.ckpt"
    predicted = run("predict", run_dir / "config.yaml", tmp_path, "--ckpt_path", str(last))
    assert predicted.trainer.predict_loop.predictions, "predict returns class ids"


def test_causal_lm_llama_end_to_end(
    tmp_path: Path, shared_data: Path, llama_tokenizer: str
) -> None:
    fit_validate_test(llama_config(tmp_path, shared_data, llama_tokenizer), tmp_path)


def test_regression_head_for_stsb(tmp_path: Path, shared_data: Path, minilm: str) -> None:
    config = bert_config(tmp_path, shared_data, minilm)
    config["data"]["init_args"].update(task="stsb", max_train_samples=32, max_eval_samples=32)
    fitted = run("fit", config, tmp_path)
    assert fitted.model.model.config.num_labels == 1, "STS-B is a one-output regression"
    metrics = fitted.trainer.callback_metrics
    assert {"val/pearson", "val/spearman", "val/average", "val/score"} <= set(metrics)
    assert float(metrics["val/score"]) == pytest.approx(float(metrics["val/average"]))


def _last_state(cli: HadamardCLI) -> dict[str, torch.Tensor]:
    path = Path(cli.trainer.log_dir or "") / "checkpoints" / "last.ckpt"
    return torch.load(path, weights_only=True)["state_dict"]


def _last_loss(cli: HadamardCLI) -> float:
    losses = [
        r["train/loss"]
        for r in metrics_rows(Path(cli.trainer.log_dir or ""))
        if r.get("train/loss")
    ]
    return float(losses[-1])


class StopAfterFirstEpoch(Callback):
    """Stands in for a preemption: the same run, stopped after its first epoch."""

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.should_stop = True


def test_resume_equals_continuous(tmp_path: Path, shared_data: Path, minilm: str) -> None:
    # Same config for all three (the linear schedule's length depends on max_epochs).
    continuous = run(
        "fit", bert_config(tmp_path / "a", shared_data, minilm, max_epochs=2), tmp_path
    )
    stop = [{"class_path": f"{__name__}.{StopAfterFirstEpoch.__name__}"}]
    first = run(
        "fit",
        bert_config(tmp_path / "b", shared_data, minilm, max_epochs=2, callbacks=stop),
        tmp_path,
    )
    stopped = Path(first.trainer.log_dir or "") / "checkpoints" / "last.ckpt"
    assert first.trainer.global_step == continuous.trainer.global_step // 2
    resumed = run(
        "fit",
        bert_config(tmp_path / "b", shared_data, minilm, max_epochs=2),
        tmp_path,
        "--ckpt_path",
        str(stopped),
    )
    assert resumed.trainer.global_step == continuous.trainer.global_step
    expected, got = _last_state(continuous), _last_state(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)
    assert _last_loss(resumed) == pytest.approx(_last_loss(continuous), abs=1e-6)


def test_export_merges_into_a_plain_model(tmp_path: Path, shared_data: Path, minilm: str) -> None:
    fitted = run("fit", bert_config(tmp_path, shared_data, minilm), tmp_path)
    log_dir = Path(fitted.trainer.log_dir or "")
    last = log_dir / "checkpoints" / "last.ckpt"
    module = SequenceClassificationModule.load_from_checkpoint(last)
    module.eval()
    batch = module.tokenizer(
        ["a gorgeous, witty film", "dull and lifeless"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        expected = module.model(**batch).logits

    out = tmp_path / "exported"
    args = ("--ckpt_path", str(last), "--output_dir", str(out))
    run("export", log_dir / "config.yaml", tmp_path, *args)
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert not any("row_scale" in name for name, _ in plain.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, expected, rtol=1e-5, atol=1e-5)

    with pytest.raises(FileExistsError, match="not empty"):
        run("export", log_dir / "config.yaml", tmp_path, *args)
    run("export", log_dir / "config.yaml", tmp_path, *args, "--overwrite", "true")
    assert (out / "config.json").is_file()


def test_task_comes_from_the_datamodule_and_must_agree(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    config = bert_config(tmp_path, shared_data, minilm)
    config["model"]["init_args"]["task"] = "rte"
    with pytest.raises(ValueError, match="built for task 'rte' but the datamodule serves 'sst2'"):
        run("fit", config, tmp_path)


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hadamard_lit", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == f"hadamard_lit {__version__}"
    with pytest.raises(SystemExit) as exited:
        HadamardCLI(args=["--help"])
    assert exited.value.code == 0
    assert "export" in capsys.readouterr().out


@pytest.mark.slow
def test_quickstart_minilm_learns_sst2(tmp_path: Path, minilm: str) -> None:
    """The real pretrained MiniLM + AdaDHP: the quickstart config cut to 30 steps of 16.

    Seeded, so deterministic on one machine: 71.3% here (~45 s on 2 cores).
    """
    config = REPO / "configs" / "quickstart.yaml"
    cli = run(
        "fit",
        config,
        tmp_path,
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.max_steps=30",
        "--trainer.val_check_interval=30",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.batch_size=16",
        "--data.init_args.max_length=32",
        "--model.init_args.optimizer.init_args.lr=3e-2",
        "--model.init_args.warmup_steps=3",
    )
    accuracy = float(cli.trainer.callback_metrics["val/accuracy"])
    # The 872-row SST-2 validation set is 50.9% positive: the majority-class baseline.
    assert accuracy > 0.509 + 0.15, accuracy
