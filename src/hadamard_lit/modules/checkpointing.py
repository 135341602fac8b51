"""Adapter-only checkpoints for :class:`~hadamard_lit.modules.AdapterModule`.

A checkpoint's ``state_dict`` is ``adapter_state_dict(self.model)`` (adapter tensors and
task head) under the ``model.`` prefix, plus a record of the adapter's names and shapes;
the frozen backbone is rebuilt from the hyper-parameters on load. Loading checks the
adapter against this module's strategy and backbone and says clearly when it belongs to
another. How each strategy lays checkpoints out (FSDP1's full state dict on rank 0,
DeepSpeed's directory with the adapter in its client state) is asked of
:mod:`hadamard_lit.parallel`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lightning.pytorch import LightningModule
from torch import Tensor
from torch.nn.modules.module import _IncompatibleKeys

from hadamard_lit.adapters import (
    adapter_state_dict,
    check_adapter_state,
    get_adapter_record,
    load_adapter_state_dict,
)
from hadamard_lit.callbacks.divergence import TrainingDiverged
from hadamard_lit.modules.attached import attached_trainer
from hadamard_lit.modules.seeding import rng_state
from hadamard_lit.parallel.checkpoints import CLIENT_STATE_KEY, non_finite
from hadamard_lit.parallel.strategies import is_deepspeed, is_fsdp1

#: Prefix of the backbone's keys in the LightningModule's state dict (``self.model``).
MODEL_PREFIX = "model."


class AdapterCheckpointing(LightningModule):
    """The checkpoint half of :class:`~hadamard_lit.modules.AdapterModule`.

    Expects ``self.model`` (the adapted transformers model), ``self.adapter`` (its
    strategy) and ``configure_model()`` (which builds and adapts the model, once).
    """

    model: Any
    adapter: Any
    #: The global step of the last validation (set by the module; not during the sanity check).
    validated_at_step: int | None = None
    #: The validation record of the checkpoint this run resumed from.
    restored_validation: dict[str, Any] | None = None

    def restore_validation_record(self, checkpoint: dict[str, Any]) -> None:
        """Keep a resumed checkpoint's validation record for the checkpoints saved before
        this run validates again (``every_n_train_steps``)."""
        record = (checkpoint.get("hadamard_lit") or {}).get("validation")
        self.restored_validation = dict(record) if isinstance(record, dict) else None

    def adapter_checkpoint_state(self) -> dict[str, Tensor]:
        """What a checkpoint stores: the adapter state dict under the ``model.`` prefix."""
        return {MODEL_PREFIX + k: v for k, v in adapter_state_dict(self.model).items()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Replace the full state dict by the adapter's (the backbone is rebuilt on load).

        The adapter tensors are whole (gathered from FSDP2 or ZeRO-3 shards: every rank
        gets here). Lightning's DeepSpeed strategy leaves ``state_dict`` out of what it
        saves, so there they also go into the client state (``parallel.read_checkpoint``).
        """
        strategy = getattr(attached_trainer(self), "strategy", None)
        if is_fsdp1(strategy):
            state = self._adapter_from_full_state(checkpoint.get("state_dict", {}))
        else:
            state = self.adapter_checkpoint_state()
        bad = non_finite(state)
        if bad:
            # Never a checkpoint of a diverged run: "best" or "last" would then be NaN.
            raise TrainingDiverged(
                f"Refusing to save a checkpoint whose adapter holds non-finite values "
                f"({len(bad)} tensors, e.g. {bad[0]}): the run has diverged"
            )
        checkpoint["state_dict"] = state
        checkpoint["hadamard_lit"] = {
            "adapter": self.adapter.name,
            "adapter_only": True,
            "shapes": {k: list(v.shape) for k, v in state.items()},
            # Where dropout's random stream stands: a mid-epoch resume takes it up again.
            "rng": rng_state(attached_trainer(self)),
        }
        validation = self._validation_record()
        if validation is not None:  # the model card of an export from this checkpoint shows it
            checkpoint["hadamard_lit"]["validation"] = validation
        if is_deepspeed(strategy):
            checkpoint[CLIENT_STATE_KEY] = state

    def _validation_record(self) -> dict[str, Any] | None:
        """The last validation before this checkpoint: its step and ``val/*`` metrics (a
        resumed run that has not validated yet passes on its checkpoint's)."""
        step = self.validated_at_step
        trainer = attached_trainer(self)
        if trainer is None or step is None:
            return self.restored_validation
        metrics = {}
        for key, value in trainer.callback_metrics.items():
            number = float(value)
            if key.startswith("val/") and math.isfinite(number):
                metrics[key] = number
        return {"step": int(step), "metrics": metrics} if metrics else None

    def check_checkpoint_record(self, checkpoint: dict[str, Any]) -> None:
        """Where the strategy restored the weights itself (FSDP2, DeepSpeed), check the
        checkpoint's record of its adapter's names and shapes against this module.

        Raises:
            ValueError: the checkpoint's adapter does not fit this module.
        """
        shapes = checkpoint.get("hadamard_lit", {}).get("shapes")
        if "state_dict" not in checkpoint and shapes is not None:
            self.configure_model()
            self._check(lambda: self._check_shapes(shapes))

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
        self._check(lambda: load_adapter_state_dict(self.model, adapter))
        return _IncompatibleKeys([], [])

    def _check(self, action: Any) -> None:
        try:
            action()
        except ValueError as err:
            raise ValueError(
                f"This checkpoint does not fit {type(self).__name__} with {self.adapter!r}: {err}"
            ) from err

    def _check_shapes(self, shapes: Mapping[str, list[int]]) -> None:
        stray = sorted(k for k in shapes if not k.startswith(MODEL_PREFIX))
        if stray:
            raise ValueError(f"keys outside the backbone: {stray[:5]}")
        check_adapter_state(self.model, {k[len(MODEL_PREFIX) :]: v for k, v in shapes.items()})

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
