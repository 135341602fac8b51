"""Dropout's random stream on resume: reseeded per epoch, or taken up mid-epoch.

Lightning checkpoints do not carry RNG state: without this, a resumed run would draw other
dropout masks (and, in a datamodule that shuffles with torch's global RNG, another order)
than the uninterrupted run. Every epoch starts from a seed that depends on (run seed,
epoch) only, so a resume from an epoch's end is exact; a mid-epoch checkpoint also records
torch's RNG state (:func:`rng_state`), which the resume restores. hadamard_lit's own
datamodules order batches with ``EpochShuffleSampler``, which needs no global RNG. Only
when a seed was set (``seed_everything``; the CLI sets one).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch import LightningModule

from hadamard_lit.modules.attached import attached_trainer


def seed_epoch(epoch: int) -> bool:
    """Seed torch's global RNG from the run's seed and ``epoch``; False without a run seed."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is None:
        return False
    torch.manual_seed(int(seed) * 100_003 + epoch)
    return True


def rng_state(trainer: Any) -> dict[str, Any]:
    """Torch's RNG state, and the (epoch, batch) of ``trainer``'s fit it was taken at."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if trainer is not None:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        total = trainer.num_training_batches
        mid_epoch = done > 0 and (not isinstance(total, (int, float)) or done < total)
        state["epoch"], state["mid_epoch"] = int(trainer.current_epoch), bool(mid_epoch)
    return state


def next_epoch(checkpoint: dict[str, Any]) -> int | None:
    """The epoch a fit resumed from ``checkpoint`` starts with (None: not recorded)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    epoch = progress.get("current", {}).get("processed")
    return epoch if isinstance(epoch, int) else None


class EpochReseeding(LightningModule):
    """Reseed torch's RNG from (``seed_everything`` seed, epoch) at every training epoch.

    Set ``reseed_each_epoch = False`` on a subclass to opt out.
    """

    reseed_each_epoch: bool = True
    _seeded_epoch: int | None = None

    def on_train_epoch_start(self) -> None:
        if self._seeded_epoch != self.current_epoch:
            self._seed_epoch(self.current_epoch)

    def reseed_for_resume(self, checkpoint: dict[str, Any]) -> None:
        """A fit resumed from ``checkpoint`` makes its first epoch's iterator before
        ``on_train_epoch_start`` (an uninterrupted one after it): seed that epoch now."""
        if attached_trainer(self) is None:  # load_from_checkpoint: nothing will train
            return
        saved = checkpoint.get("hadamard_lit", {}).get("rng") or {}
        if saved.get("mid_epoch") and self.reseed_each_epoch:
            torch.set_rng_state(saved["torch"])
            if "cuda" in saved and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(saved["cuda"])
            self._seeded_epoch = int(saved["epoch"])
            return
        epoch = next_epoch(checkpoint)
        if epoch is not None:
            self._seed_epoch(epoch)

    def _seed_epoch(self, epoch: int) -> None:
        if self.reseed_each_epoch and seed_epoch(epoch):
            self._seeded_epoch = epoch
