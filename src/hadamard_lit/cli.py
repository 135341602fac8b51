"""The command line: LightningCLI over any hadamard_lit module and datamodule, plus ``export``.

Examples::

    python -m hadamard_lit fit --config configs/quickstart.yaml
    python -m hadamard_lit fit --config configs/t5_glue.yaml --config configs/method/lora.yaml \\
        --data.init_args.task rte
    python -m hadamard_lit validate --config RUN/config.yaml --ckpt_path RUN/checkpoints/last.ckpt
    python -m hadamard_lit export --config RUN/config.yaml --ckpt_path CKPT --output_dir DIR

Model and datamodule are chosen by ``class_path`` (any ``AdapterModule`` subclass, any
``LightningDataModule``), the method by ``model.init_args.adapter.class_path``. The
module's tokenizer is handed to the datamodule (``data.init_args.tokenizer`` is linked,
not set), and the module takes the task from the datamodule at ``setup``. Defaults: a
CSV logger under ``runs/``, a ``checkpoint:`` section (``SelectionAwareCheckpoint``: a
``ModelCheckpoint`` that, with AdaDHP's ``AdaptiveSelection``, ranks only checkpoints taken
after pruning has finished; keeping the best on ``val/score``), a ``last_checkpoint:``
section (``LastCheckpoint``: ``last.ckpt`` after every validation or epoch and at the end
of fit, to resume from), the resolved config saved next to the logs.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from hadamard_lit import __version__
from hadamard_lit.backbones import check_output_dir
from hadamard_lit.callbacks import (
    DivergenceGuard,
    LastCheckpoint,
    PredictionWriter,
    SelectionAwareCheckpoint,
)
from hadamard_lit.callbacks.divergence import TrainingDiverged
from hadamard_lit.cli_parser import HadamardArgumentParser
from hadamard_lit.interop.adapter_folders import ExportFormat
from hadamard_lit.interop.model_card import (
    selection_from_checkpoint,
    validation_from_checkpoint,
)
from hadamard_lit.interop.peft_format import AdapterFormatError
from hadamard_lit.metrics import VAL_SCORE
from hadamard_lit.modules.base import AdapterModule
from hadamard_lit.parallel.checkpoints import check_checkpoint_file, non_finite, read_checkpoint
from hadamard_lit.resume import (
    ResumeMismatch,
    RunFolderGuard,
    RunFolderInUse,
    check_run_folder,
)

#: The CLI parser's settings (``launch.run`` adds ``exit_on_error: False``: an error raises).
PARSER_KWARGS: dict[str, Any] = {
    "prog": "python -m hadamard_lit",
    "description": "Hadamard-product PEFT on Lightning.",
}
#: Where runs go unless the config names a logger of its own.
DEFAULT_SAVE_DIR = "runs"

CHECKPOINT_DEFAULTS = {
    "checkpoint.monitor": VAL_SCORE,
    "checkpoint.mode": "max",
    # '/' in a metric name would make a folder: name the file by hand.
    "checkpoint.filename": "best-epoch{epoch}-step{step}",
    "checkpoint.auto_insert_metric_name": False,
    # Lightning 2.6 writes save_last's last.ckpt only when a top-k checkpoint is written at
    # the same step, so a run whose score stopped improving could not resume from its end:
    # a second, unmonitored callback keeps last.ckpt current instead.
    "checkpoint.save_last": False,
    "last_checkpoint.monitor": None,
    "last_checkpoint.save_top_k": 1,
    "last_checkpoint.filename": "last",
}


class ConfigValueError(ValueError):
    """A value in the run's config that cannot work (a task, a pattern, a path, a
    checkpoint): ``python -m hadamard_lit`` prints it as one ``error:`` line."""


def _own_message(error: BaseException) -> str:
    """The error a config value raised, without jsonargparse's Union wrapper around it."""
    while isinstance(error.__cause__, Exception) and "Union subtypes" in str(error):
        error = error.__cause__
    text = str(error)
    if "Union subtypes" in text:  # no cause kept: the subtypes' errors are listed in it
        own = [
            line.strip()[2:]
            for line in text.splitlines()
            if line.strip().startswith("- ") and "Expected a <class 'NoneType'>" not in line
        ]
        if own:
            return own[0]
    return text


class HadamardTrainer(Trainer):
    """Lightning's ``Trainer`` with one more entry point, ``export`` (a CLI subcommand), and a
    run folder of its own under every logger."""

    @property
    def log_dir(self) -> str | None:
        """The run's own folder (config, checkpoints, pictures, predictions).

        Lightning's is the logger's ``save_dir`` for loggers other than CSV and
        TensorBoard: one folder for every run (MLflow's, W&B's), or none at all (MLflow
        with a database). Here it is where Lightning puts that run's checkpoints anyway:
        ``<save_dir or default_root_dir>/<logger name>/<version>``.
        """
        logger = self.loggers[0] if self.loggers else None
        if logger is None or isinstance(logger, (CSVLogger, TensorBoardLogger)):
            return super().log_dir
        if self.is_global_zero:
            version = logger.version
            version = version if isinstance(version, str) else f"version_{version}"
            root = logger.save_dir or self.default_root_dir
            folder: str | None = os.path.join(root, str(logger.name), version)
        else:
            folder = None
        return self.strategy.broadcast(folder)

    def export(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        *,
        ckpt_path: str,
        output_dir: str,
        overwrite: bool = False,
        weights_only: bool | None = None,
        format: ExportFormat = "merged",
        with_adapter: bool = False,
    ) -> Path:
        """Save a trained adapter with a model card: merged into its backbone (a standard
        transformers model), or as a peft adapter folder.

        Args:
            model: the module the run config describes (rebuilt, not trained).
            datamodule: the run config's; it names the task when the module does not.
            ckpt_path: the adapter checkpoint to load (``last.ckpt``, a best checkpoint):
                a file, or the directory a DeepSpeed run saves.
            output_dir: folder for ``config.json``, weights and tokenizer; written
                atomically (temporary folder, then renamed).
            overwrite: replace a non-empty ``output_dir``.
            weights_only: ``torch.load``'s; ``None`` is its default, ``True`` (so a fit
                run's saved config works here unchanged).
            format: ``merged`` (default), or ``peft`` (LoRA, (IA)3, HUT: a folder for
                ``PeftModel.from_pretrained``; the other methods are refused by name).
            with_adapter: with ``merged``, also the adapter alone in ``adapter/``
                (safetensors; peft's format where peft has the method).

        The model card (``README.md``) takes the run's config and test metrics from the run
        folder the checkpoint is in (``RUN/checkpoints/x.ckpt``), and the checkpoint's own
        validation metrics and AdaDHP's selection result from the checkpoint.
        """
        if not isinstance(model, AdapterModule):
            raise TypeError(f"export needs an AdapterModule, got {type(model).__name__}")
        check_output_dir(output_dir, overwrite)  # before the minutes a big backbone takes
        safe = True if weights_only is None else weights_only
        checkpoint = read_checkpoint(ckpt_path, weights_only=safe)
        if model.task is None:  # the task sizes the head: the run config's data, or the run's
            found = model.task_from_datamodule(datamodule) if datamodule is not None else None
            model.task = found or (checkpoint.get("hyper_parameters") or {}).get("task")
        bad = non_finite(checkpoint["state_dict"])
        if bad:
            raise ConfigValueError(
                f"Refusing to export {ckpt_path}: {len(bad)} of its tensors hold NaN or "
                f"infinity (e.g. {bad[0]}), so the merged model would too. It comes from a run "
                "that diverged: export an earlier checkpoint"
            )
        model.load_state_dict(checkpoint["state_dict"])
        path = model.export_pretrained(
            output_dir,
            overwrite=overwrite,
            format=format,
            with_adapter=with_adapter,
            selection=selection_from_checkpoint(checkpoint),
            run_dir=run_folder_of(ckpt_path),
            checkpoint=Path(ckpt_path).name,
            validation=validation_from_checkpoint(checkpoint),
        )
        if self.is_global_zero:
            how = "as a peft adapter" if format == "peft" else "merged"
            print(
                f"Exported {type(model.model).__name__} with {model.adapter.name} {how} to {path}"
            )
        return path


def run_folder_of(ckpt_path: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (``RUN/checkpoints/last.ckpt`` -> ``RUN``),
    if it has the run's records."""
    path = Path(ckpt_path).resolve()
    for folder in (path.parent.parent, path.parent):
        if (folder / "config.yaml").is_file() or (folder / "metrics.csv").is_file():
            return folder
    return None


class HadamardCLI(LightningCLI):
    """LightningCLI with hadamard_lit's defaults, links and the ``export`` subcommand.

    Args:
        args: command-line style arguments (``None``: ``sys.argv``), or a config dict.
        run: run the subcommand (``False``: only instantiate, for tests and notebooks).
        **kwargs: any other ``LightningCLI`` argument.
    """

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        trainer_defaults = {
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": DEFAULT_SAVE_DIR},
            },
            **kwargs.pop("trainer_defaults", {}),
        }
        # Saves each run's config, and refuses a log folder that holds another run's.
        kwargs.setdefault("save_config_callback", RunFolderGuard)
        kwargs.setdefault("parser_kwargs", PARSER_KWARGS)
        kwargs.setdefault("trainer_class", HadamardTrainer)
        kwargs.setdefault("parser_class", HadamardArgumentParser)
        # The modules take optimizer and lr_scheduler as arguments (model.init_args.*).
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(
            AdapterModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults=trainer_defaults,
            args=args,
            run=run,
            **kwargs,
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        # Lightning warns when both ``args`` and ``sys.argv`` are set; here ``args`` always
        # wins on purpose (launch.run, submit's config check run inside other commands).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().parse_arguments(parser, args)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "export": {"model", "datamodule"}}

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        self.parser.add_argument(
            "--version", action="version", version=f"hadamard_lit {__version__}"
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(SelectionAwareCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        # A loss or trained tensor that stops being finite stops the run (before any save).
        parser.add_lightning_class_args(DivergenceGuard, "divergence")
        # predict writes what it predicts (<run folder>/predictions.jsonl by default).
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        # One tokenizer, the backbone's: the datamodule gets the module's loaded one.
        parser.link_arguments("model.tokenizer", "data.init_args.tokenizer", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        """LightningCLI's, raising what is wrong with the config as a :class:`ConfigValueError`
        that says it once (``Unknown task 'rtee'; valid tasks: ...``), not jsonargparse's
        wrapper around it, which buries that line under "Does not validate against any of
        the Union subtypes" and the whole config."""
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError, ModuleNotFoundError) as error:
            raise ConfigValueError(_own_message(error)) from error

    def _parse_ckpt_path(self) -> None:
        """Keep the options the user gave, not the checkpoint's.

        LightningCLI (2.6) replaces the model's options by the hyper-parameters saved in
        ``--ckpt_path``, so a learning rate typed next to it is silently dropped. Here the
        config stays as given (every hadamard_lit run config names the whole model):
        ``fit`` refuses options its resumed run would not honour
        (``resume.check_resume``), and validate/test/predict use what was typed.
        """

    def _before_run(self) -> None:
        # A bad file fails here with its name, not deep in torch.load with a bare EOFError.
        ckpt_path = self._get(self.config, "ckpt_path")
        if isinstance(ckpt_path, str) and ckpt_path not in ("last", "best", "hpc", "registry"):
            try:
                check_checkpoint_file(ckpt_path)
            except (ValueError, FileNotFoundError) as error:
                raise ConfigValueError(str(error)) from error
        # Before the loggers start (the CSV logger deletes an existing metrics.csv).
        folder = self.trainer.log_dir
        if folder is not None and getattr(rank_zero_only, "rank", 0) == 0:
            subcommand = str(self.subcommand)
            config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))[subcommand]
            check_run_folder(folder, config, subcommand, resuming=bool(ckpt_path))

    def before_fit(self) -> None:
        self._before_run()

    def before_validate(self) -> None:
        self._before_run()

    def before_test(self) -> None:
        self._before_run()

    def before_predict(self) -> None:
        self._before_run()

    def after_fit(self) -> None:
        """Print the final validation metrics and where the best checkpoint is."""
        folder = self.trainer.log_dir  # collective (a broadcast): every rank asks
        if not self.trainer.is_global_zero:
            return
        metrics = {
            k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")
        }
        if metrics:
            print("Validation: " + ", ".join(f"{k} = {v:.4f}" for k, v in sorted(metrics.items())))
        callback = self._get(self.config_init, "checkpoint")
        if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
            score = callback.best_model_score
            best = f" ({callback.monitor} = {float(score):.4f})" if score is not None else ""
            print(f"Best checkpoint{best}: {callback.best_model_path}")
        self._say_run_folder(folder)

    def after_validate(self) -> None:
        self._say_run_folder(self.trainer.log_dir)

    def after_test(self) -> None:
        self._say_run_folder(self.trainer.log_dir)

    def after_predict(self) -> None:
        self._say_run_folder(self.trainer.log_dir)

    def _say_run_folder(self, folder: str | None) -> None:
        """The last line of every run: where its logs, config and checkpoints went (each
        run gets the next ``version_N``, so the README's ``version_0`` is only the first).
        ``folder`` is ``trainer.log_dir``, which every rank must ask for (a broadcast)."""
        if self.trainer.is_global_zero and folder is not None:
            print(f"Run folder: {folder}")


def release_process_groups() -> None:
    """Destroy the torch.distributed process groups now, while Python is still whole.

    Call it after a successful distributed run. Left to interpreter exit, a gloo thread can
    finish an FSDP2 all-gather after finalisation has begun. Releasing that work's tensor
    then needs the GIL, and the process aborts ("terminate called without an active
    exception", exit 134) after a run that succeeded. Seen in 2 of 20 two-process
    FSDP2 runs here. A no-op outside distributed runs.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _origin(error: BaseException) -> str:
    """Where a wrapped error was raised, so that a bug behind a config error can be found
    (``HADAMARD_LIT_TRACEBACK=1`` shows the whole traceback)."""
    if not isinstance(error, ConfigValueError) or error.__cause__ is None:
        return ""
    cause = error.__cause__
    while isinstance(cause.__cause__, Exception) and "Union subtypes" in str(cause):
        cause = cause.__cause__
    tb = cause.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or "jsonargparse" in tb.tb_frame.f_code.co_filename:
        return ""  # a value the parser refused: the message is the whole story
    code = tb.tb_frame.f_code
    return (f"\n  (raised in {code.co_name}, {code.co_filename}:{tb.tb_lineno}; "
            "HADAMARD_LIT_TRACEBACK=1 shows the traceback)")  # fmt: skip


def main(args: ArgsType = None) -> None:
    """Entry point of ``python -m hadamard_lit`` and the ``hadamard-lit`` script."""
    try:
        HadamardCLI(args=args)
    except FileExistsError as err:  # export's refusal is a usage error, not a crash
        raise SystemExit(f"error: {err} (export: --overwrite true)") from None
    except (TrainingDiverged, ResumeMismatch, RunFolderInUse, AdapterFormatError,
            ConfigValueError) as err:  # fmt: skip
        if os.environ.get("HADAMARD_LIT_TRACEBACK"):  # for a bug behind a config error
            raise
        raise SystemExit(f"error: {err}{_origin(err)}") from None
    release_process_groups()
