"""What a resumed or repeated run must agree with, so that no result is silently wrong.

* A run folder (a logger's version folder, a job's ``run_dir``) that holds another run's
  records (``config.yaml``, ``metrics.csv``, checkpoints) is never written over:
  :func:`check_run_folder` (the CLI asks it before every run) refuses it, unless this is
  that run resumed with the same config.
* ``fit --ckpt_path`` resumes a run exactly as it was set up: the optimizer state and the
  learning-rate schedule come from the checkpoint. An option given next to it that would
  not take effect (a new learning rate), or a longer fit whose linear schedule already
  ended, is an error that says how to continue instead (:func:`check_resume`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from typing_extensions import override

#: Files and folders that show a run wrote into a folder.
RECORDS = ("config.yaml", "metrics.csv", "hparams.yaml", "checkpoints", "results.json")
#: Config keys a resumed run may change: where it resumes from, and only evaluation.
RESUMABLE_CONFIG_KEYS = {"ckpt_path"}
#: Module options that only shape evaluation or loading, never the training that resumes.
EVALUATION_ONLY = {"max_new_tokens", "answer_format", "task", "tokenizer", "_instantiator"}
#: Datamodule options a resumed fit may change.
DATA_EVALUATION_ONLY = {
    "eval_batch_size",
    "max_eval_samples",
    "num_workers",
    "predict_split",
    "data_dir",
    "fallback_data_dir",
    "tokenizer",
}


class RunFolderInUse(RuntimeError):
    """A run would write where another run's records are."""


class ResumeMismatch(ValueError):
    """``fit --ckpt_path`` with options that the resumed run cannot honour."""


def differences(old: Any, new: Any, prefix: str = "", ignore: Iterable[str] = ()) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (``ignore``: last parts)."""
    skip = set(ignore)
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            if str(key) in skip:
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            found += differences(old.get(key), new.get(key), name, skip)
        return found
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def records_in(folder: str | os.PathLike[str]) -> list[str]:
    """The run records present in ``folder``."""
    path = Path(folder)
    return [name for name in RECORDS if (path / name).exists()]


def folder_in_use(folder: Path, records: list[str], diffs: list[str], resume_hint: str) -> str:
    shown = "; ".join(diffs[:6]) + ("; ..." if len(diffs) > 6 else "")
    why = f"another config ({shown})" if diffs else "the same config, not resumed"
    return (
        f"{folder} already holds a run's records ({', '.join(records)}), made with {why}. "
        "Writing here would overwrite them and pair this config with that run's checkpoints. "
        f"Use another folder, delete this one to start over, or {resume_hint}"
    )


def check_run_folder(
    log_dir: str | os.PathLike[str], new_config: Mapping[str, Any], stage: str, resuming: bool,
    config_filename: str = "config.yaml",
) -> None:  # fmt: skip
    """Refuse a log folder holding another run's records; make room for a resumed one.

    Allowed into such a folder: ``fit`` resuming (``--ckpt_path``) with the same config. Its
    earlier ``metrics.csv`` is kept as ``metrics.before_resume.csv`` (Lightning's CSV logger
    deletes an existing one when it starts). Called before the trainer runs: by the time a
    callback's ``setup`` runs, the loggers have already started.

    Raises:
        RunFolderInUse: with what is there, what differs and what to do instead.
    """
    folder = Path(log_dir)
    records = records_in(folder)
    if not records:
        return
    old_file = folder / config_filename
    old = yaml.safe_load(old_file.read_text()) if old_file.is_file() else {}
    diffs = differences(old, new_config, ignore=RESUMABLE_CONFIG_KEYS)
    if diffs or not (stage == "fit" and resuming) or not old_file.is_file():
        hint = (
            f"resume it: fit --config {old_file} --ckpt_path {folder / 'checkpoints' / 'last.ckpt'}"
            if stage == "fit"
            else "give this run its own log folder (--trainer.logger.init_args.version null "
            "picks the next version_N)"
        )
        raise RunFolderInUse(folder_in_use(folder, records, diffs, hint))
    if (folder / "metrics.csv").is_file():
        os.replace(folder / "metrics.csv", folder / "metrics.before_resume.csv")


class RunFolderGuard(SaveConfigCallback):
    """The CLI's config saver: the folder was checked by :func:`check_run_folder` first, so
    writing ``config.yaml`` again (a resumed run's, identical) is allowed."""

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.overwrite = True
        super().setup(trainer, pl_module, stage)


def check_resume(
    checkpoint: dict[str, Any],
    module_hparams: Mapping[str, Any],
    datamodule_hparams: Mapping[str, Any] | None,
    total_steps: float,
    ckpt_path: str | None,
) -> None:
    """Refuse a ``fit --ckpt_path`` whose options the resumed run would not honour.

    Raises:
        ResumeMismatch: module or training-data options differ from the checkpoint's, or
            the checkpoint's linear schedule ends before this fit does.
    """
    where = ckpt_path or "the checkpoint"
    new_run = (
        f"start a new run from its adapter instead: --model.init_args.init_adapter_from {where}"
    )
    saved = checkpoint.get("hyper_parameters") or {}
    diffs = [f"model.{d}" for d in differences(saved, module_hparams, ignore=EVALUATION_ONLY)]
    saved_data = checkpoint.get("datamodule_hyper_parameters")
    if saved_data is not None and datamodule_hparams is not None:
        diffs += [
            f"data.{d}"
            for d in differences(saved_data, datamodule_hparams, ignore=DATA_EVALUATION_ONLY)
        ]
    if diffs:
        raise ResumeMismatch(
            f"fit --ckpt_path resumes {where} exactly as it was set up (its optimizer state, "
            f"schedule and data order), so these options would not take effect: "
            f"{'; '.join(diffs[:6])}{'; ...' if len(diffs) > 6 else ''}. Drop them to resume, "
            f"or {new_run}"
        )
    for scheduler in checkpoint.get("lr_schedulers") or []:
        for state in scheduler.get("lr_lambdas") or []:
            end = (state or {}).get("total_steps")
            if (state or {}).get("decay") and isinstance(end, int) and end < total_steps:
                raise ResumeMismatch(
                    f"{where} was trained with a linear schedule that reaches learning rate 0 at "
                    f"step {end}; this fit runs to step {int(total_steps)}, so every step after "
                    f"{end} would train at learning rate 0. Resume with the run's own length "
                    f"(trainer.max_steps / max_epochs), or, to train longer, {new_run} "
                    "(a new schedule over the new length)"
                )
