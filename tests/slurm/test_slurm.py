"""Sweeps as job arrays on a real one-node SLURM cluster (slurm/local_cluster.sh), through
submitit; with the ``local`` executor where SLURM is not installed.

The cluster is started here if it is not already up (and stopped again afterwards);
`.ci/run` installs the Debian packages. Every job is a real process running a tiny T5 on
real RTE/SST-2 rows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from hadamard_lit import submit
from hadamard_lit.launch import RESULTS_FILE, TrainingJob
from hadamard_lit.report import report
from helpers.paths import REPO, SHARED_DATA, T5_TOKENIZER, TESTS
from helpers.tiny import TINY_T5

SCRIPT = REPO / "slurm" / "local_cluster.sh"

pytestmark = pytest.mark.slurm


def _slurm_env() -> dict[str, str]:
    out = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    # "export SLURM_CONF=... PATH=DIR/bin:$PATH"
    conf, path = out.split()[1:3]
    return {"SLURM_CONF": conf.split("=", 1)[1], "SACCT_DIR": path.split("=", 1)[1].split(":")[0]}


def _slurm_up(env: dict[str, str]) -> bool:
    result = subprocess.run(
        ["sinfo", "-h", "-o", "%T"],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_CONF": env["SLURM_CONF"]},
    )
    return result.returncode == 0 and result.stdout.strip() in {"idle", "mixed", "allocated"}


@pytest.fixture(scope="module")
def cluster() -> Any:
    """``"slurm"`` on a running cluster, or ``"local"`` where SLURM is not installed."""
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])
    )
    if not all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged")):
        yield "local"
        return
    env = _slurm_env()
    started = False
    if not _slurm_up(env):
        if os.geteuid() != 0:
            pytest.skip("SLURM is installed but not running, and starting it needs root")
        subprocess.run([str(SCRIPT), "start"], check=True, timeout=120)
        started = True
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    os.environ["PATH"] = env["SACCT_DIR"] + os.pathsep + os.environ["PATH"]
    yield "slurm"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if started:
        subprocess.run([str(SCRIPT), "stop"], check=False)


def slurm_only(cluster: str) -> None:
    if cluster != "slurm":
        pytest.skip(
            "needs SLURM (slurmctld, slurmd, sbatch, munge: slurm/local_cluster.sh install)"
        )


def run_config(
    tmp_path: Path, *, epochs: int = 1, slow: float | None = None, **trainer: Any
) -> Path:
    callbacks = (
        [{"class_path": "helpers.slurm_jobs.SlowDown", "init_args": {"seconds": slow}}]
        if slow
        else []
    )
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": epochs,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
            "callbacks": callbacks,
            **trainer,
        },
        "model": {
            "class_path": "hadamard_lit.modules.Seq2SeqModule",
            "init_args": {
                "backbone_config": TINY_T5,
                "tokenizer": str(T5_TOKENIZER),
                "adapter": {"class_path": "hadamard_lit.adapters.AdaDHP"},
                "optimizer": {
                    "class_path": "torch.optim.AdamW",
                    "init_args": {"lr": 0.03, "weight_decay": 0.0},
                },
                "warmup_steps": 2,
                "max_new_tokens": 4,
            },
        },
        "data": {
            "class_path": "hadamard_lit.data.NLUDataModule",
            "init_args": {
                "task": "rte",
                "shape": "text_to_text",
                "data_dir": str(SHARED_DATA),
                "max_length": 64,
                "batch_size": 16,
                "max_train_samples": 64,
                "max_eval_samples": 16,
            },
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def method_config(tmp_path: Path, name: str, adapter: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": {"init_args": {"adapter": adapter}}}))
    return path


def sweep_file(tmp_path: Path, grid: dict[str, Any], name: str = "sweep") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "grid": grid}, sort_keys=False))
    return path


def submit_args(cluster: str, tmp_path: Path, config: Path, sweep: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(config),
        "--sweep",
        str(sweep),
        "--cluster",
        cluster,
        "--output_dir",
        str(tmp_path / "runs"),
        "--cpus_per_task",
        "1",
        "--time",
        "15",
        "--mem_gb",
        "4",
        *extra,
    ]


def test_sweep_of_four_runs_is_one_array_and_reports(cluster: str, tmp_path: Path, capsys) -> None:
    lora = method_config(
        tmp_path, "lora", {"class_path": "hadamard_lit.adapters.LoRA", "init_args": {"rank": 2}}
    )
    adadhp = method_config(tmp_path, "adadhp", {"class_path": "hadamard_lit.adapters.AdaDHP"})
    sweep = sweep_file(
        tmp_path, {"task": ["rte", "sst2"], "method": {"adadhp": str(adadhp), "lora": str(lora)}}
    )
    # --trainer.max_steps: an override for every point, as fit takes it (1 epoch is 4 steps).
    args = submit_args(cluster, tmp_path, run_config(tmp_path), sweep, "--trainer.max_steps", "3")

    assert submit.main([*args, "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "4 grid points (every config checked)" in dry
    assert dry.count("--trainer.max_steps 3") == 4
    if cluster == "slurm":
        assert "#SBATCH --array=0-3%4" in dry and "#SBATCH --cpus-per-task=1" in dry

    assert submit.main([*args, "--wait"]) == 0
    out = capsys.readouterr().out
    assert "Submitted 4 task(s) as job array" in out
    sweep_dir = tmp_path / "runs" / "sweep"
    manifest = json.loads((sweep_dir / "submitted.json").read_text())
    run_dirs = [Path(r["run_dir"]) for r in manifest["runs"]]
    assert len(set(run_dirs)) == 4
    if cluster == "slurm":
        assert {r["job_id"].split("_")[0] for r in manifest["runs"]} == {manifest["array_job_id"]}
    for run_dir in run_dirs:
        results = json.loads((run_dir / RESULTS_FILE).read_text())
        assert results["status"] == "completed", results.get("error")
        assert results["global_step"] == 3
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["trainer"]["max_steps"] == 3
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    table, paths = report([sweep_dir])
    assert set(table.methods) == {"adadhp", "lora"} and set(table.tasks) == {"rte", "sst2"}
    assert paths["markdown"].read_text().startswith("| method | trainable % | ")

    # Submitting the same sweep again must not clobber finished runs.
    with pytest.raises(SystemExit, match="already finished"):
        submit.main(args)


def test_failed_task_is_reported_at_once_with_its_error_and_log(
    cluster: str, tmp_path: Path, capsys
) -> None:
    # lr -1 passes the submit-time check (a float) and fails in the job, building AdamW.
    sweep = sweep_file(tmp_path, {"model.init_args.optimizer.init_args.lr": [0.03, -1.0]})
    # The good task trains only once the bad one has failed, whenever SLURM starts each.
    wait = {
        "class_path": "helpers.slurm_jobs.WaitForFailure",
        "init_args": {"results": str(tmp_path / "runs" / "sweep" / "lr=-1.0" / RESULTS_FILE)},
    }
    config = run_config(tmp_path, callbacks=[wait])
    started = time.monotonic()
    code = submit.main([*submit_args(cluster, tmp_path, config, sweep), "--wait"])
    assert code == 1
    assert time.monotonic() - started < 300
    out = capsys.readouterr().out
    failed_line = next(line for line in out.splitlines() if "FAILED" in line)
    assert "lr=-1.0" in failed_line
    assert "Invalid learning rate: -1.0" in out
    log = next(line.split("log: ", 1)[1] for line in out.splitlines() if "log: " in line)
    assert Path(log).is_file() and "Invalid learning rate" in Path(log).read_text()
    # Said as soon as it happened, not after the good task (or an accounting poll).
    assert out.index(failed_line) < out.index("completed lr=0.03")
    summary = json.loads((tmp_path / "runs" / "sweep" / "summary.json").read_text())
    states = {Path(r["run_dir"]).name: r for r in summary}
    assert states["lr=0.03"]["state"] == "COMPLETED"
    assert states["lr=-1.0"]["state"] == "FAILED"
    assert "Invalid learning rate" in states["lr=-1.0"]["error"]
    failed = json.loads((tmp_path / "runs" / "sweep" / "lr=-1.0" / RESULTS_FILE).read_text())
    assert failed["status"] == "failed" and "Invalid learning rate" in failed["error"]


def test_job_that_dies_without_a_result_does_not_hang_the_client(
    cluster: str, tmp_path: Path
) -> None:
    slurm_only(cluster)
    import submitit

    from helpers import slurm_jobs

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=1)
    job = executor.submit(slurm_jobs.die_without_a_result)
    started = time.monotonic()
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()
    assert time.monotonic() - started < 120


def _final_adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "state_dict"
    ]


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _slurm_state(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T|%r"], capture_output=True, text=True
    ).stdout.strip()


def _wait_until_held(job_id: str, timeout: float = 120) -> None:
    """SLURM holds a requeued job pending for a while (reason BeginTime)."""
    _wait_for(lambda: _slurm_state(job_id).startswith("PENDING"), timeout, f"{job_id} pending")


def _start_now(job_id: str) -> None:
    """Start a held, requeued job now instead of in ~2 minutes."""
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=False)


def _preempt(job: Any) -> None:
    """Preempt as SLURM does: SIGTERM (submitit bypasses it), then USR2 (checkpoint, requeue).

    submitit's ``job._interrupt()`` sends both at once, and slurmd may deliver them in either
    order: a SIGTERM that lands after USR2 kills the ``scontrol requeue`` child process.
    Waiting for the bypass makes the order the one a real preemption has.
    """
    subprocess.run(["scancel", job.job_id, "--signal", "SIGTERM"], check=True)
    log = Path(str(job.paths.stdout))
    _wait_for(
        lambda: log.is_file() and "Bypassing signal SIGTERM" in log.read_text(), 60, "SIGTERM"
    )
    subprocess.run(["scancel", job.job_id, "--signal", "USR2"], check=True)


def test_preempted_task_is_requeued_and_resumes_to_the_same_weights(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slurm_only(cluster)
    import submitit

    config = run_config(tmp_path, epochs=6, slow=0.3)
    # A busy CI machine may take a while between the SIGTERM and the USR2 (see _preempt).
    monkeypatch.setenv("HADAMARD_LIT_PREEMPTION_GRACE_S", "60")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j", cluster="slurm")
    executor.update_parameters(timeout_min=15, cpus_per_task=1, mem_gb=4, slurm_signal_delay_s=30)
    args = ["--config", str(config)]
    interrupted_dir, straight_dir = tmp_path / "interrupted", tmp_path / "straight"
    interrupted = executor.submit(TrainingJob(), args, str(interrupted_dir))
    straight = executor.submit(TrainingJob(), args, str(straight_dir))

    # Once the first epoch's checkpoint exists, preempt the way submitit's own tests do.
    _wait_for(
        lambda: (interrupted_dir / "checkpoints" / "last.ckpt").is_file(), 240, "a checkpoint"
    )
    assert (
        not (interrupted_dir / RESULTS_FILE).is_file()
        or json.loads((interrupted_dir / RESULTS_FILE).read_text())["status"] == "running"
    )
    _preempt(interrupted)
    _wait_until_held(interrupted.job_id)
    # SLURM holds the job as soon as `scontrol requeue` returns; the exiting attempt writes
    # its record a moment later.
    _wait_for(
        lambda: json.loads((interrupted_dir / RESULTS_FILE).read_text())["status"] != "running",
        30,
        "the record of the interrupted attempt",
    )
    held = json.loads((interrupted_dir / RESULTS_FILE).read_text())
    assert held["status"] == "requeued", held  # not "failed" while SLURM holds it
    _start_now(interrupted.job_id)

    interrupted.result()
    straight.result()
    log = Path(str(interrupted.paths.stdout)).read_text()
    assert "Requeued job" in log, log[-2000:]
    attempts = sorted(p.name for p in (interrupted_dir / "lightning_logs").iterdir())
    assert len(attempts) == 2, attempts  # the first attempt and the requeued one
    results = json.loads((interrupted_dir / RESULTS_FILE).read_text())
    assert results["status"] == "completed" and results["global_step"] == 6 * 4
    got, want = _final_adapter(interrupted_dir), _final_adapter(straight_dir)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)


def test_requeued_and_usr1_tasks_read_requeued_while_held_and_completed_after(
    cluster: str, tmp_path: Path
) -> None:
    """``scontrol requeue`` (SIGTERM, then SLURM requeues) and USR1 (Lightning's signal,
    which submit handles as submitit's USR2): neither may read ``failed`` or ``running``
    while SLURM holds the task, and both complete once it runs again."""
    slurm_only(cluster)
    import submitit

    from hadamard_lit.report import find_results

    config = run_config(tmp_path, epochs=4, slow=0.3)
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j", cluster="slurm")
    executor.update_parameters(timeout_min=15, cpus_per_task=1, mem_gb=4)
    dirs = {"requeue": tmp_path / "requeue", "usr1": tmp_path / "usr1"}
    jobs = {
        name: executor.submit(TrainingJob(), ["--config", str(config)], str(folder))
        for name, folder in dirs.items()
    }
    for folder in dirs.values():
        _wait_for(lambda f=folder: (f / "checkpoints" / "last.ckpt").is_file(), 240, "a checkpoint")
    subprocess.run(["scontrol", "requeue", jobs["requeue"].job_id], check=True)
    subprocess.run(["scancel", "--signal=USR1", jobs["usr1"].job_id], check=True)
    for name, job in jobs.items():
        _wait_until_held(job.job_id)
        _wait_for(
            lambda f=dirs[name]: json.loads((f / RESULTS_FILE).read_text())["status"] != "running",
            30,
            "the record of the interrupted attempt",
        )
        held = json.loads((dirs[name] / RESULTS_FILE).read_text())
        assert held["status"] == "requeued", (name, held)
        assert "resumes from checkpoints/last.ckpt" in held["error"]
    assert (
        "requeued by SLURM (SIGTERM"
        in json.loads((dirs["requeue"] / RESULTS_FILE).read_text())["error"]
    )
    usr1 = json.loads((dirs["usr1"] / RESULTS_FILE).read_text())["error"]
    assert usr1.startswith("requeued by signal USR1 at step"), usr1
    # What report sees meanwhile: not finished, not failed.
    statuses = {Path(d).name: r["status"] for d, r in find_results(list(dirs.values()))}
    assert statuses == {"requeue": "requeued", "usr1": "requeued"}
    for job in jobs.values():
        _start_now(job.job_id)
    for name, job in jobs.items():
        job.result()
        done = json.loads((dirs[name] / RESULTS_FILE).read_text())
        assert done["status"] == "completed" and done["global_step"] == 4 * 4, (name, done)


def _node_cpus() -> int:
    out = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout
    return max((int(n) for n in out.split() if n.isdigit()), default=0)


@pytest.mark.timeout(420)
def test_two_process_ddp_job(cluster: str, tmp_path: Path, capsys) -> None:
    slurm_only(cluster)
    if _node_cpus() < 2:
        pytest.skip(f"needs a SLURM node with 2 CPUs; this cluster's has {_node_cpus()}")
    config = run_config(tmp_path, strategy="ddp")
    sweep = sweep_file(tmp_path, {"seed": [0]}, name="ddp")
    code = submit.main(
        [*submit_args(cluster, tmp_path, config, sweep), "--tasks_per_node", "2", "--wait"]
    )
    assert code == 0
    assert "one grid point: SLURM runs it as a plain job, not an array" in capsys.readouterr().out
    results = json.loads((tmp_path / "runs" / "ddp" / "seed=0" / RESULTS_FILE).read_text())
    assert results["status"] == "completed"
    assert results["world_size"] == 2
