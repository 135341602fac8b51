"""The job function: one training run in its own folder, callable from anywhere.

:func:`run` is what every array task of ``python -m hadamard_lit submit`` executes, and
what a user's own submitit or sbatch script can call::

    from hadamard_lit.launch import run
    results = run(["--config", "configs/t5_glue.yaml", "--data.init_args.task=rte"], "runs/rte")

A run folder belongs to one config: called again with the same config, ``run`` resumes
an unfinished run from ``checkpoints/last.ckpt`` and returns a finished one's results
without training; with another config it refuses (``RunFolderInUse``) and writes nothing.

It writes, in order: ``config.yaml`` (the resolved config, before anything trains),
checkpoints under ``checkpoints/`` (``last.ckpt`` is what a requeued job resumes from),
the logger's files, and ``results.json`` (status, metrics, the best checkpoint and its validation
score, trainable parameters) written atomically at the end — a crashed run leaves ``status: failed`` with the error.

:class:`TrainingJob` wraps :func:`run` as a ``submitit.helpers.Checkpointable``: on
SLURM's time-limit or preemption signal, submitit calls its ``checkpoint()``, which asks
for the same call again; the requeued call finds ``checkpoints/last.ckpt`` and resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit

from hadamard_lit.job_signals import (
    ending,
    note_requeue,
    recording_signals,
    sigterm_waits_for_usr2,
    usr1_requeues_like_usr2,
)
from hadamard_lit.run_status import COMPLETED, RUNNING, where_it_runs

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def completed(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished run's results."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("status") == "completed"
    except json.JSONDecodeError:
        return False


def _as_args(config: str | Path | Sequence[str] | dict[str, Any], run_dir: Path) -> list[str]:
    if isinstance(config, (str, Path)):
        return ["--config", str(config)]
    if isinstance(config, dict):
        import yaml

        source = run_dir / "input_config.yaml"
        source.write_text(yaml.safe_dump(config, sort_keys=False))
        return ["--config", str(source)]
    return [str(a) for a in config]


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def run(
    config: str | Path | Sequence[str] | dict[str, Any],
    run_dir: str | Path,
    test: bool = True,
    distributed: dict[str, int] | None = None,
    labels: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit (resuming from ``run_dir/checkpoints/last.ckpt`` if present), then test.

    Args:
        config: a run config file, a config dict, or CLI arguments
            (``["--config", "a.yaml", "--data.init_args.task=rte"]``).
        run_dir: the run's own folder; created if needed.
        test: also run ``trainer.test`` on the best checkpoint after fitting.
        distributed: ``{"devices": n, "num_nodes": m}`` for multi-process jobs (SLURM
            starts the processes; Lightning's SLURM environment finds its rank).
        labels: names recorded in ``results.json`` for the report, e.g. a sweep point's
            ``{"task": "rte", "method": "lora", "seed": 0}`` (default: read from the config).

    Returns:
        The content of ``results.json``.
    """
    from hadamard_lit.cli import PARSER_KWARGS, HadamardCLI, release_process_groups

    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus:  # torch would otherwise start a thread per core of the node, not of the task
        import torch

        torch.set_num_threads(int(cpus))
    args = [*_as_args(config, run_dir), f"--trainer.default_root_dir={run_dir}"]
    if distributed:
        args += [
            f"--trainer.devices={distributed['devices']}",
            f"--trainer.num_nodes={distributed['num_nodes']}",
        ]
    # The labels first: a run that fails before its config is read is still reported by them.
    results: dict[str, Any] = {
        "run_dir": str(run_dir), "status": RUNNING, **(labels or {}), **where_it_runs(),
    }  # fmt: skip
    if labels:  # which keys are the point's axes (the report's rows: method and the others)
        results["labels"] = dict(labels)
    rank_zero = int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0"))) == 0
    # Until the folder is known to be this run's, nothing is written there, except into a
    # fresh folder: a run that fails before training still says why in results.json.
    owns_folder = _is_fresh(run_dir)
    cli = None
    with recording_signals():
        try:
            # The job's own sys.argv (submitit's entry point) is not for the CLI. A bad
            # option raises (not argparse's SystemExit), so submitit records the failure
            # at once instead of waiting for the scheduler to say the job ended.
            argv, sys.argv = sys.argv, sys.argv[:1]
            try:
                cli = HadamardCLI(
                    args=args, run=False, parser_kwargs={**PARSER_KWARGS, "exit_on_error": False}
                )
            finally:
                sys.argv = argv
            resolved = cli.parser.dump(cli.config, skip_none=False)
            finished = _claim(run_dir, resolved)
            if finished is not None:  # this very run completed before: nothing to do again
                release_process_groups()
                return finished
            owns_folder = True
            if rank_zero:
                (run_dir / CONFIG_FILE).write_text(resolved)
                _write_json_atomic(run_dir / RESULTS_FILE, results)
            results.update({**_describe(cli), **(labels or {})})
            results.update(_fit_and_test(cli, run_dir, test))
            release_process_groups()
            return results
        except BaseException as error:
            step = cli.trainer.global_step if cli is not None else None
            results.update(ending(error, step))
            raise
        finally:
            if rank_zero and owns_folder:
                _write_json_atomic(run_dir / RESULTS_FILE, results)


def _fit_and_test(cli: Any, run_dir: Path, test: bool) -> dict[str, Any]:
    """Fit in ``run_dir`` (resuming its ``last.ckpt``), test the best checkpoint: the results."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from hadamard_lit.adapters import (
        count_parameters,
        count_trainable_parameters,
        get_adapter_record,
    )
    from hadamard_lit.metrics import TEST_SCORE, VAL_SCORE
    from hadamard_lit.parallel.strategies import leave_requeueing_to_the_caller

    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    leave_requeueing_to_the_caller(trainer)  # submitit's TrainingJob requeues
    trainer.loggers = [_in_run_dir(logger, run_dir) for logger in trainer.loggers]
    # Fixed, not per logger version: a requeued job must find the last checkpoint.
    for callback in trainer.checkpoint_callbacks:
        assert isinstance(callback, ModelCheckpoint)
        callback.dirpath = str(run_dir / CHECKPOINT_DIR)
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
    metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    best_score = getattr(trainer.checkpoint_callback, "best_model_score", None)
    if test:
        for row in trainer.test(model, datamodule=datamodule, ckpt_path=best):
            metrics.update({k: _scalar(v) for k, v in row.items()})
    adapted = next(m for m in model.modules() if get_adapter_record(m, required=False) is not None)
    return {
        "status": COMPLETED,
        "best_checkpoint": {
            "path": best,
            "monitor": getattr(trainer.checkpoint_callback, "monitor", None),
            "score": None if best_score is None else _scalar(best_score),
        },
        "metrics": metrics,
        "headline": TEST_SCORE if test else VAL_SCORE,
        "trainable_params": count_trainable_parameters(adapted),
        "total_params": count_parameters(adapted),
        "global_step": trainer.global_step,
        "world_size": trainer.world_size,
    }


def _claim(run_dir: Path, resolved: str) -> dict[str, Any] | None:
    """Check that ``run_dir`` is free for this config, or holds this very run.

    Returns:
        The results of the run if it already completed with this config (a finished point
        is never trained again, relabelled or overwritten), else ``None``.

    Raises:
        RunFolderInUse: the folder holds a run made with another config.
    """
    import yaml

    from hadamard_lit.resume import RunFolderInUse, differences, folder_in_use, records_in

    previous = run_dir / CONFIG_FILE
    if not previous.is_file():
        records = records_in(run_dir)
        if records and not _is_fresh(run_dir):
            raise RunFolderInUse(folder_in_use(run_dir, records, ["(no config.yaml)"], _HINT))
        return None
    diffs = differences(yaml.safe_load(previous.read_text()), yaml.safe_load(resolved))
    if diffs:
        raise RunFolderInUse(folder_in_use(run_dir, records_in(run_dir), diffs, _HINT))
    if completed(run_dir):
        return json.loads((run_dir / RESULTS_FILE).read_text())
    _check_not_running_elsewhere(run_dir)
    return None


def _check_not_running_elsewhere(run_dir: Path) -> None:
    """Refuse a folder that another live process is training in (its own requeued job,
    the same SLURM job id, may go on)."""
    from hadamard_lit.resume import RunFolderInUse
    from hadamard_lit.run_status import observe, slurm_job_id

    try:
        previous = json.loads((run_dir / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return
    if observe(previous).get("status") != RUNNING:
        return
    job, pid = previous.get("slurm_job_id"), previous.get("pid")
    if (job and job == slurm_job_id()) or (not job and pid == os.getpid()):
        return
    where = f"SLURM job {job}" if job else f"process {pid} on {previous.get('host')}"
    raise RunFolderInUse(
        f"{run_dir} is being trained by another run right now ({where}); two runs in one "
        "folder would overwrite each other's checkpoints. Wait for it, or cancel it first"
    )


_HINT = "run the same config again to resume it"


def _is_fresh(run_dir: Path) -> bool:
    """No run's records in ``run_dir``, or only the results of one that failed before it
    wrote its config (a bad option: nothing trained, nothing to keep)."""
    from hadamard_lit.resume import records_in

    records = records_in(run_dir)
    if records == ["results.json"]:
        with contextlib.suppress(ValueError):
            return json.loads((run_dir / RESULTS_FILE).read_text()).get("status") == "failed"
    return not records


def _in_run_dir(logger: Any, run_dir: Path) -> Any:
    """The same file logger writing under ``run_dir`` (a requeued attempt adds a version)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if isinstance(logger, (CSVLogger, TensorBoardLogger)):
        return type(logger)(save_dir=str(run_dir), name=logger.name or "logs")
    return logger


def _describe(cli: Any) -> dict[str, Any]:
    """Task, method and seed of a run, for the report."""
    config = cli.config
    data_args = (config.get("data") or {}).get("init_args") or {}
    adapter = ((config.get("model") or {}).get("init_args") or {}).get("adapter") or {}
    class_path = (
        adapter.get("class_path", "")
        if isinstance(adapter, dict)
        else getattr(adapter, "class_path", "")
    )
    return {
        "task": data_args.get("task") or data_args.get("dataset"),
        "method": str(class_path).rsplit(".", 1)[-1] or None,
        "seed": config.get("seed_everything"),
    }


class TrainingJob(submitit.helpers.Checkpointable):
    """:func:`run` as a submitit job that requeues itself on timeout or preemption.

    submitit's requeue signal is USR2; USR1 (Lightning's) requeues the same way. The run's
    ``results.json`` reads ``requeued`` until the job runs again (:mod:`job_signals`).

    Args:
        distributed: passed to :func:`run` for multi-process tasks.
    """

    def __init__(self, distributed: dict[str, int] | None = None) -> None:
        self.distributed = distributed

    def __call__(
        self, args: Sequence[str], run_dir: str, labels: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        with usr1_requeues_like_usr2(), sigterm_waits_for_usr2():
            return run(list(args), run_dir, distributed=self.distributed, labels=labels)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """submitit's requeue hook (on its signal): the same call again, which resumes."""
        note_requeue()
        return super().checkpoint(*args, **kwargs)
