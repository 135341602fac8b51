"""Sweeps as a user meets them, without a cluster: every point checked before submission,
``--key value`` overrides for every point, honest statuses of runs a signal ended, and
``report`` on plain ``fit`` runs. (The SLURM side is tests/slurm/test_slurm.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hadamard_lit import submit
from hadamard_lit.report import build_table, find_results, report
from hadamard_lit.run_status import DIED, STOPPED, observe
from helpers.cli import bert_config, run
from helpers.paths import TESTS


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["hadamard_lit"])


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_with(tmp_path: Path, grid: dict[str, Any]) -> Path:
    return write_yaml(tmp_path / "sweep.yaml", {"name": "sweep", "grid": grid})


def submit_args(tmp_path: Path, config: Path, sweep: Path, *extra: str) -> list[str]:
    return ["--config", str(config), "--sweep", str(sweep), "--cluster", "local",
            "--output_dir", str(tmp_path / "runs"), *extra]  # fmt: skip


def test_a_typo_in_one_point_is_refused_before_anything_is_submitted(
    tmp_path: Path, shared_data: Path, minilm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_yaml(tmp_path / "run.yaml", bert_config(tmp_path, shared_data, minilm))
    ia4 = write_yaml(
        tmp_path / "ia4.yaml",
        {"model": {"init_args": {"adapter": {"class_path": "hadamard_lit.adapters.IA4"}}}},
    )
    lora = write_yaml(
        tmp_path / "lora.yaml",
        {"model": {"init_args": {"adapter": {"class_path": "hadamard_lit.adapters.LoRA"}}}},
    )
    sweep = sweep_with(
        tmp_path, {"task": ["sst2", "sst3"], "method": {"lora": str(lora), "ia4": str(ia4)}}
    )
    with pytest.raises(SystemExit) as refused:
        submit.main(submit_args(tmp_path, config, sweep))
    message = str(refused.value)
    assert message.startswith("error: 3 of 4 grid point(s) have a config that fit would refuse")
    assert "nothing was submitted" in message
    assert (
        "task=sst2,method=ia4:" in message and "did you mean hadamard_lit.adapters.IA3?" in message
    )
    assert "task=sst3,method=lora:" in message and "Unknown task 'sst3'" in message
    assert "task=sst2,method=lora" not in message
    assert not (tmp_path / "runs").exists(), "nothing written, nothing submitted"
    # An override no config accepts is refused the same way, for every point.
    sweep = sweep_with(tmp_path, {"task": ["sst2"]})
    with pytest.raises(SystemExit, match=r"unrecognized arguments: --trainer.max_stepz"):
        submit.main(submit_args(tmp_path, config, sweep, "--trainer.max_stepz", "3"))
    with pytest.raises(SystemExit, match=r"--data.init_args.task is also set by the sweep"):
        submit.main(submit_args(tmp_path, config, sweep, "--data.init_args.task", "rte"))


def test_overrides_reach_every_point_and_report_marks_the_failed_one(
    tmp_path: Path, shared_data: Path, minilm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_yaml(tmp_path / "run.yaml", bert_config(tmp_path, shared_data, minilm))
    # lr -1 parses (a float) and fails only when the optimizer is built: a runtime failure.
    sweep = sweep_with(tmp_path, {"model.init_args.optimizer.init_args.lr": [0.01, -1.0]})
    args = submit_args(tmp_path, config, sweep, "--trainer.max_steps", "3", "--wait")
    assert submit.main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "Invalid learning rate: -1.0" in out
    assert "log: " in out and "_log.err" in out, "the failed task's log is named"
    folder = tmp_path / "runs" / "sweep"
    assert out.rstrip().endswith(f"Sweep folder: {folder}")
    good = yaml.safe_load((folder / "lr=0.01" / "config.yaml").read_text())
    assert good["trainer"]["max_steps"] == 3
    assert json.loads((folder / "lr=0.01" / "results.json").read_text())["global_step"] == 3
    failed = json.loads((folder / "lr=-1.0" / "results.json").read_text())
    assert failed["status"] == "failed"
    assert failed["model.init_args.optimizer.init_args.lr"] == "-1.0", "labelled though it failed"
    markdown = (folder / "report.md").read_text()
    assert "| majority class | 0 |" in markdown
    assert "1 run(s) without results" in markdown and "Invalid learning rate" in markdown


def _launch(tmp_path: Path, config: Path, run_dir: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys; from hadamard_lit.launch import run; "
        f"run(['--config', {str(config)!r}], {str(run_dir)!r}, test=False)"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path)


def _wait_for_training(run_dir: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():  # the first epoch ended
        assert process.poll() is None, "the run ended before it trained"
        assert time.monotonic() < deadline, "the run did not start training"
        time.sleep(0.2)


@pytest.mark.parametrize(
    "how,status,says",
    [
        (signal.SIGUSR1, STOPPED, "killed by signal USR1 at step"),
        (signal.SIGTERM, STOPPED, "stopped by SIGTERM at step"),
        (signal.SIGKILL, DIED, "ended without writing a result"),
    ],
)
def test_a_run_ended_by_a_signal_never_claims_to_be_running(
    tmp_path: Path, shared_data: Path, minilm: str, how: signal.Signals, status: str, says: str
) -> None:
    slow = {"class_path": "helpers.slurm_jobs.SlowDown", "init_args": {"seconds": 0.5}}
    config = bert_config(tmp_path, shared_data, minilm, max_epochs=20, callbacks=[slow])
    path = write_yaml(tmp_path / "run.yaml", config)
    run_dir = tmp_path / "point"
    process = _launch(tmp_path, path, run_dir)
    _wait_for_training(run_dir, process)
    process.send_signal(how)
    process.wait(timeout=120)
    record = json.loads((run_dir / "results.json").read_text())
    seen = observe(record)  # what report and submit read
    assert seen["status"] == status, seen
    assert says in seen["error"]


def test_report_reads_plain_fit_runs(tmp_path: Path, shared_data: Path, minilm: str) -> None:
    root = tmp_path / "logs"
    fitted = run("fit", bert_config(root, shared_data, minilm), tmp_path)
    log_dir = Path(fitted.trainer.log_dir or "")
    # A validate run beside it (its own version_N, no training) is not a second run.
    run("validate", log_dir / "config.yaml", tmp_path, "--ckpt_path",
        str(log_dir / "checkpoints" / "last.ckpt"))  # fmt: skip
    found = find_results([root / "bert"])
    assert [Path(d) for d, _ in found] == [log_dir]
    table = build_table(found)
    assert table.methods == ["AdaDHP"] and table.tasks == ["sst2"]
    assert table.cells[("AdaDHP", "sst2")].scores[0] > 0
    assert 0 < table.trainable_percent["AdaDHP"] < 100
    assert 0 < table.majority["sst2"] < 100
    _, paths = report([root / "bert"])
    assert paths["plot"].stat().st_size > 10_000
