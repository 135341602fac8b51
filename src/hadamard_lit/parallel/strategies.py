"""What hadamard_lit needs to know about a Lightning strategy, asked in one place.

Which strategy restores a checkpoint's weights itself, which keeps its own state-dict
layout (FSDP1's full state dict, DeepSpeed's checkpoint directory), and whether models are
built inside DeepSpeed ZeRO-3's ``zero.Init``. The modules and the selection callback ask
these functions and never test strategy types themselves.
"""

from __future__ import annotations

from typing import Any


def is_deepspeed(strategy: Any) -> bool:
    """Lightning's ``DeepSpeedStrategy`` (any ZeRO stage)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return isinstance(strategy, DeepSpeedStrategy)


def is_fsdp1(strategy: Any) -> bool:
    """Lightning's ``FSDPStrategy`` (FSDP1: flat parameters; a full state dict on rank 0)."""
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(strategy, FSDPStrategy)


def restores_weights_itself(strategy: Any) -> bool:
    """Whether ``strategy`` restores a checkpoint's weights without the module's own
    ``load_state_dict`` (FSDP2's ``ModelParallelStrategy``, FSDP1, DeepSpeed)."""
    from lightning.pytorch.strategies import (
        DeepSpeedStrategy,
        FSDPStrategy,
        ModelParallelStrategy,
    )

    return isinstance(strategy, (ModelParallelStrategy, FSDPStrategy, DeepSpeedStrategy))


def transformers_zero3_config(strategy: Any) -> Any:
    """Tell transformers that models are built under ZeRO-3, for as long as the result lives.

    Lightning's ``DeepSpeedStrategy`` (stage 3) runs ``configure_model`` inside
    ``deepspeed.zero.Init``, which partitions every weight as its layer is created.
    transformers must know, or its weight initialisation indexes the empty placeholders
    (``from_config``) and ``from_pretrained`` copies into them; with an ``HfDeepSpeedConfig``
    alive it initialises and loads each layer gathered, and ``generate`` keeps the ranks
    in step (``synced_gpus``). transformers holds it by a weak reference.

    Returns:
        The ``HfDeepSpeedConfig`` to keep a reference to, or None when ``strategy`` is not
        DeepSpeed ZeRO-3.
    """
    if not (is_deepspeed(strategy) and strategy.zero_stage_3):
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(strategy.config)


def leave_requeueing_to_the_caller(trainer: Any) -> None:
    """Switch off Lightning's own SLURM requeue (its USR1 handler) for ``trainer``'s fit.

    Under submitit, ``TrainingJob.checkpoint`` owns requeueing; two owners requeue twice.
    Lightning's signal connector reads the accelerator connector's cluster environment.
    Parallel strategies expose that one publicly; single-device strategies do not, so
    there (and only there) it is read from the connector.
    """
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    environment = getattr(trainer.strategy, "cluster_environment", None)
    if environment is None:
        environment = trainer._accelerator_connector.cluster_environment
    if isinstance(environment, SLURMEnvironment):
        environment.auto_requeue = False
