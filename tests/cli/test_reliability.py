"""No silent wrong result on divergence, resume, re-runs and prediction (the CLI's paths).

Each test stands for a way a real run went wrong: a loss that turns NaN, a job killed in
the middle of an epoch, a resume asked to train longer or with a new learning rate, a
second run into a finished run's folder, predictions on unlabelled rows, and mistyped
options. Tiny BERT on real SST-2 rows (``helpers.cli.bert_config``: 96 rows, 6 batches an
epoch), in-process CLI runs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from hadamard_lit.callbacks import TrainingDiverged
from hadamard_lit.cli import ConfigValueError
from hadamard_lit.cli import main as cli_main
from hadamard_lit.launch import run as launch_run
from hadamard_lit.resume import ResumeMismatch, RunFolderInUse
from helpers.cli import bert_config, metrics_rows, run


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["hadamard_lit"])


def with_selection(config: dict[str, Any], **settings: Any) -> dict[str, Any]:
    selection = {"target": 0.5, "t_init": 1, "t_final": 10, "delta_t": 2, "plot": False}
    config["trainer"].setdefault("callbacks", []).append(
        {
            "class_path": "hadamard_lit.callbacks.AdaptiveSelection",
            "init_args": {**selection, **settings},
        }
    )
    return config


def adapter_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


# -- 1. divergence ----------------------------------------------------------------------------


def test_a_nan_loss_stops_the_run_and_nothing_nan_is_saved(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    config = bert_config(tmp_path, shared_data, minilm, max_epochs=2,
                         callbacks=[{"class_path": "helpers.faults.PoisonAtStep", "init_args": {"step": 8}}],
                         val_check_interval=3, check_val_every_n_epoch=None)  # fmt: skip
    config["last_checkpoint"] = {"every_n_train_steps": 2}
    with pytest.raises(TrainingDiverged) as err:
        run("fit", config, tmp_path)
    message = str(err.value)
    assert "diverged at optimizer step 9" in message and "the loss is nan" in message
    last = tmp_path / "bert" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"Last good checkpoint: {last}" in message
    saved = sorted((tmp_path / "bert" / "version_0" / "checkpoints").glob("*.ckpt"))
    assert saved, "the run saved checkpoints before it diverged"
    for ckpt in saved:  # best and last: every one is finite, none from step 8 on
        state = torch.load(ckpt, weights_only=True)
        assert state["global_step"] <= 8
        assert all(bool(torch.isfinite(v).all()) for v in state["state_dict"].values()), ckpt


def test_the_cli_says_diverged_plainly(tmp_path: Path, shared_data: Path, minilm: str) -> None:
    config = bert_config(tmp_path, shared_data, minilm,
                         callbacks=[{"class_path": "helpers.faults.PoisonAtStep", "init_args": {"step": 2}}])  # fmt: skip
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exited:
        cli_main(["fit", "--config", str(path)])
    assert str(exited.value).startswith("error: Training diverged at optimizer step 3")
    assert "none (none was saved yet)" in str(exited.value)


def test_export_refuses_a_checkpoint_with_nan(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    fitted = run("fit", bert_config(tmp_path, shared_data, minilm), tmp_path)
    log_dir = Path(fitted.trainer.log_dir or "")
    last = log_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    name = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][name].view(-1)[0] = math.nan
    poisoned = tmp_path / "poisoned.ckpt"
    torch.save(checkpoint, poisoned)
    out = tmp_path / "exported"
    with pytest.raises(
        ValueError, match=r"Refusing to export .*poisoned.ckpt: 1 of its tensors hold NaN"
    ):
        run(
            "export",
            log_dir / "config.yaml",
            tmp_path,
            "--ckpt_path",
            str(poisoned),
            "--output_dir",
            str(out),
        )
    assert not out.exists()
    # From the command line: one error line, no traceback.
    command = ["export", "--config", str(log_dir / "config.yaml"), "--ckpt_path", str(poisoned),
               "--output_dir", str(out)]  # fmt: skip
    with pytest.raises(SystemExit, match=r"^error: Refusing to export .*poisoned.ckpt"):
        cli_main(command)
    assert not out.exists()


def test_a_nan_score_or_loss_never_becomes_best() -> None:
    from lightning.pytorch import Trainer

    from hadamard_lit.callbacks import SelectionAwareCheckpoint

    trainer = Trainer(logger=False, enable_checkpointing=False)
    callback = SelectionAwareCheckpoint(monitor="val/score", mode="max")
    callback._selection = None
    assert not callback.check_monitor_top_k(trainer, torch.tensor(math.nan))
    trainer.callback_metrics.update({"val/loss": torch.tensor(math.nan)})
    assert not callback.check_monitor_top_k(trainer, torch.tensor(0.5)), "NaN logits' argmax"
    trainer.callback_metrics.update({"val/loss": torch.tensor(0.7)})
    assert callback.check_monitor_top_k(trainer, torch.tensor(0.5))


def test_selection_removes_nothing_by_stale_scores_after_nan_gradients() -> None:
    from hadamard_lit.adapters import AdaDHP
    from hadamard_lit.callbacks import AdaptiveSelection
    from helpers.tiny import batch, build

    model = build("bert")
    AdaDHP().apply(model)
    selection = AdaptiveSelection(target=4, t_init=0, t_final=2, delta_t=1)
    selection.attach(model)
    model(**batch("bert")).loss.backward()
    next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = math.nan
    with pytest.raises(TrainingDiverged, match="not finite at step 1.*no module is removed"):
        selection.update(1)
    assert selection.removed_modules == {}


# -- 2. mid-epoch resume ------------------------------------------------------------------------


def test_a_job_killed_mid_epoch_resumes_to_the_same_weights(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    """Bit for bit: dropout on, selection removing matrices after the resume point."""

    def config(root: Path, *callbacks: dict[str, Any]) -> dict[str, Any]:
        c = bert_config(root, shared_data, minilm, max_epochs=2, callbacks=list(callbacks))
        c = with_selection(c, t_init=6, t_final=11, delta_t=1)  # removals at steps 7, 8, 9
        c["model"]["init_args"]["backbone_config"] = {
            **c["model"]["init_args"]["backbone_config"], "hidden_dropout_prob": 0.1,
        }  # fmt: skip
        c["last_checkpoint"] = {"every_n_train_steps": 2}
        return c

    continuous = run("fit", config(tmp_path / "a"), tmp_path)
    # Killed as step 9 begins: the last checkpoint is step 8, batch 2 of epoch 1 (of 6).
    killed = config(
        tmp_path / "b", {"class_path": "helpers.faults.CrashAtStep", "init_args": {"step": 9}}
    )
    with pytest.raises(Exception, match="killed at step 9"):
        run("fit", killed, tmp_path)
    last = tmp_path / "b" / "bert" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 8
    resumed = run("fit", config(tmp_path / "b"), tmp_path, "--ckpt_path", str(last))
    assert resumed.trainer.global_step == continuous.trainer.global_step == 12

    def final(cli: Any) -> dict[str, torch.Tensor]:
        return adapter_state(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt")

    expected, got = final(continuous), final(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    removed = next(cb for cb in continuous.trainer.callbacks if hasattr(cb, "removed_modules"))
    again = next(cb for cb in resumed.trainer.callbacks if hasattr(cb, "removed_modules"))
    assert removed.removed_modules == again.removed_modules
    assert max(again.removed_modules.values()) > 8, "selection removed matrices after the resume"


# -- 3. resume to train longer, or with other options ---------------------------------------------


def test_resume_refuses_what_it_would_silently_ignore(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    first = run("fit", bert_config(tmp_path, shared_data, minilm), tmp_path)  # 6 steps, linear
    last = str(Path(first.trainer.log_dir or "") / "checkpoints" / "last.ckpt")
    longer = bert_config(tmp_path / "longer", shared_data, minilm, max_epochs=2)
    with pytest.raises(
        ResumeMismatch, match=r"reaches learning rate 0 at step 6; this fit runs to step 12"
    ):
        run("fit", longer, tmp_path, "--ckpt_path", last)
    # The issue's own command: a longer max_steps next to --ckpt_path.
    by_steps = bert_config(tmp_path / "steps", shared_data, minilm, max_epochs=-1)
    with pytest.raises(ResumeMismatch, match=r"at step 6; this fit runs to step 12"):
        run("fit", by_steps, tmp_path, "--trainer.max_steps", "12", "--ckpt_path", last)
    new_lr = bert_config(tmp_path / "lr", shared_data, minilm)
    new_lr["model"]["init_args"]["optimizer"]["init_args"]["lr"] = 0.1
    with pytest.raises(
        ResumeMismatch, match=r"model.optimizer.init_args.lr: 0.01 -> 0.1.*init_adapter_from"
    ):
        run("fit", new_lr, tmp_path, "--ckpt_path", last)
    # The way to train longer: a new run that starts from this adapter.
    longer["model"]["init_args"]["init_adapter_from"] = last
    started = run("fit", longer, tmp_path)
    assert started.trainer.global_step == 12


def test_a_fit_that_ends_before_its_first_validation_leaves_a_last_checkpoint(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    # Validation every 5 steps, as the quickstart's every 75: a 3-step fit ended with none,
    # and ModelCheckpoint then saves only after validations, so it left no checkpoint.
    config = bert_config(
        tmp_path, shared_data, minilm, max_steps=3, val_check_interval=5,
        check_val_every_n_epoch=None,
    )  # fmt: skip
    fitted = run("fit", config, tmp_path)
    log_dir = Path(fitted.trainer.log_dir or "")
    last = log_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3
    validated = run("validate", log_dir / "config.yaml", tmp_path, "--ckpt_path", str(last))
    assert "val/accuracy" in validated.trainer.callback_metrics


# -- 4. re-runs into a run folder ---------------------------------------------------------------


def test_a_finished_point_is_never_retrained_relabelled_or_overwritten(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    run_dir = tmp_path / "point"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(bert_config(tmp_path / "logs", shared_data, minilm)))
    first = launch_run(config, run_dir, test=False)
    assert first["status"] == "completed"
    files = {name: (run_dir / name).read_text() for name in ("results.json", "config.yaml")}
    again = launch_run(config, run_dir, test=False)  # the same config: nothing to do
    assert again == first
    for method in ("hadamard_lit.adapters.LoRA", "hadamard_lit.adapters.IA3"):
        other = ["--config", str(config), f"--model.init_args.adapter.class_path={method}"]
        with pytest.raises(
            RunFolderInUse, match=r"another config \(model.init_args.adapter.class_path"
        ):
            launch_run(other, run_dir, test=False)
        assert {name: (run_dir / name).read_text() for name in files} == files


# -- 5. a fixed log version ---------------------------------------------------------------------


def test_a_second_run_into_a_fixed_version_is_refused(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    config = bert_config(tmp_path, shared_data, minilm)
    config["trainer"]["logger"]["init_args"]["version"] = "fixed"
    first = run("fit", config, tmp_path)
    folder = Path(first.trainer.log_dir or "")
    before = {p.name: p.read_bytes() for p in folder.glob("*.*")}
    other = json.loads(json.dumps(config))
    other["model"]["init_args"]["optimizer"]["init_args"]["lr"] = 0.05
    with pytest.raises(
        RunFolderInUse,
        match=r"holds a run's records \(config.yaml, metrics.csv, hparams.yaml, checkpoints\)",
    ):
        run("fit", other, tmp_path)
    with pytest.raises(RunFolderInUse, match="the same config, not resumed"):
        run("fit", config, tmp_path)
    assert {p.name: p.read_bytes() for p in folder.glob("*.*")} == before
    # Resuming it is allowed; its first metrics are kept beside the new ones.
    resumed = run("fit", config, tmp_path, "--ckpt_path", str(folder / "checkpoints" / "last.ckpt"))
    assert Path(resumed.trainer.log_dir or "") == folder
    assert (folder / "metrics.before_resume.csv").read_bytes() == before["metrics.csv"]
    assert metrics_rows(folder) is not None


# -- 6. prediction ------------------------------------------------------------------------------


def test_predict_writes_labels_with_ids_on_unlabelled_rows(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    fitted = run("fit", bert_config(tmp_path, shared_data, minilm), tmp_path)
    log_dir = Path(fitted.trainer.log_dir or "")
    args = ("--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"),
            "--data.init_args.predict_split", "test", "--data.init_args.max_eval_samples", "40")  # fmt: skip
    predicted = run("predict", log_dir / "config.yaml", tmp_path, *args)
    path = Path(predicted.trainer.log_dir or "") / "predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    raw = [
        json.loads(line) for line in (shared_data / "glue/sst2/test.jsonl").read_text().splitlines()
    ][:40]
    assert all(r["label"] == -1 for r in raw), "GLUE's test split is unlabelled"
    assert [r["row_id"] for r in rows] == [r["idx"] for r in raw]
    assert {r["prediction"] for r in rows} <= {"negative", "positive"}
    assert all(r["prediction"] == ("positive" if r["label_id"] else "negative") for r in rows)


# -- 7. error texts -----------------------------------------------------------------------------


def test_errors_name_what_is_wrong(tmp_path: Path, shared_data: Path, minilm: str, capsys) -> None:
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump(bert_config(tmp_path, shared_data, minilm)))
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(config), "--model.init_args.adapter.class_path",
                  "hadamard_lit.adapters.IA4", "--print_config"])  # fmt: skip
    err = capsys.readouterr().err
    assert "did you mean hadamard_lit.adapters.IA3?" in err
    assert "adapter strategies: hadamard_lit.adapters.HUT, hadamard_lit.adapters.IA3" in err

    from hadamard_lit.modules import SequenceClassificationModule

    with pytest.raises(FileNotFoundError, match=r"model folder '/no/such/model' does not exist"):
        SequenceClassificationModule(model_name_or_path="/no/such/model", num_labels=2)
    # Through the CLI: the module's own error, not jsonargparse's wrapper around the config.
    with pytest.raises(ConfigValueError, match=r"^model folder '/no/such/model' does not exist"):
        run("validate", config, tmp_path, "--model.init_args.backbone_config", "null",
            "--model.init_args.model_name_or_path", "/no/such/model")  # fmt: skip
    # A nested class's error (the adapter's) too, and the command prints it as one line.
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli_main(["validate", "--config", str(config),
                  "--model.init_args.adapter.init_args.target_modules", '["re:query[("]'])  # fmt: skip
    assert str(exited.value).startswith(
        "error: target_modules pattern 're:query[(' is not a valid regular expression"
    )
    assert "Union subtypes" not in str(exited.value) + capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^Unknown task 'sst3'; valid tasks: boolq, cb, cola"):
        run("validate", config, tmp_path, "--data.init_args.task", "sst3")

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(
        ValueError, match=rf"checkpoint '{empty}' is empty \(0 bytes\): it was cut off"
    ):
        run("validate", config, tmp_path, "--ckpt_path", str(empty))


def test_validate_does_not_alarm_about_the_new_head(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    # The pretrained MiniLM through from_pretrained: only that path prints load reports.
    config = bert_config(tmp_path, shared_data, minilm, max_steps=2)
    del config["model"]["init_args"]["backbone_config"]
    config["model"]["init_args"]["model_name_or_path"] = minilm
    fitted = run("fit", config, tmp_path)
    log_dir = Path(fitted.trainer.log_dir or "")
    # In a fresh process, as a user runs it: transformers' log handler keeps the stderr of
    # the process that imported it, which no in-process capture sees.
    validate = [sys.executable, "-m", "hadamard_lit", "validate", "--config",
                str(log_dir / "config.yaml"), "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt")]  # fmt: skip
    done = subprocess.run(validate, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    assert "val/accuracy" in printed  # validate ran and printed its metrics
    for alarm in ("LOAD REPORT", "MISSING", "newly initialized", "were not sharded"):
        assert alarm not in printed, alarm
