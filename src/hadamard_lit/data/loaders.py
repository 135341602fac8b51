"""Training loaders whose order depends on (seed, epoch) only, and that resume mid-epoch.

``DataLoader(shuffle=True)`` draws each epoch's order from the global RNG, which a
checkpoint does not restore, and a plain loader restarted mid-epoch replays the epoch's
first batches and never reaches its last ones. Here:

* :class:`EpochShuffleSampler`: the order of epoch ``e`` is one fixed permutation;
* :class:`ResumableLoader`: a ``DataLoader`` with Lightning's ``state_dict`` /
  ``load_state_dict`` (Lightning saves it in every checkpoint): the state is the epoch and
  how many of its batches were trained on, asked of the trainer (its prefetching and the
  workers' read-ahead make the loader's own count wrong), and a restored loader skips
  exactly those. Under DDP every rank skips its own batches.

Lightning only restores a loader's state if the training loader was not loaded before the
checkpoint was (its issue #20550): the modules count the fit's steps without loading it
(``modules.schedules.training_steps``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class EpochShuffleSampler(Sampler[int]):
    """A random order that is a function of (seed, epoch) only.

    ``DataLoader(shuffle=True)`` draws each epoch's order from the global RNG, which a
    checkpoint does not restore: a run resumed at epoch ``e`` would see another order than
    the uninterrupted run. Here the order of epoch ``e`` is always the same permutation.
    The epoch comes from ``epoch()`` when given (the datamodule passes the trainer's
    ``current_epoch``: the number Lightning calls ``set_epoch`` with is one lower after a
    resume from an end-of-epoch checkpoint), else from ``set_epoch``.

    Args:
        size: number of rows.
        seed: base seed.
        epoch: returns the current epoch, or None to fall back on ``set_epoch``'s.
    """

    def __init__(self, size: int, seed: int, epoch: Callable[[], int | None] | None = None) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self._epoch_source = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        epoch = self._epoch_source() if self._epoch_source is not None else None
        generator = torch.Generator().manual_seed(
            self.seed + (self.epoch if epoch is None else epoch)
        )
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` that Lightning checkpoints and resumes mid-epoch.

    Built like any ``DataLoader`` (``sampler``, ``batch_size``), so that Lightning's DDP
    sampler injection wraps the sampler as it would wrap a plain loader's.

    Args:
        *args, **kwargs: ``DataLoader``'s.
        position: returns (epoch, batches of it trained on) at checkpoint time.
    """

    def __init__(
        self, *args: Any, position: Callable[[], tuple[int, int]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.position = position
        self._resume: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.position() if self.position is not None else (0, 0)
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = (int(state_dict["epoch"]), int(state_dict["batches"]))

    def __iter__(self) -> Any:
        iterator = super().__iter__()
        if self._resume is None:
            return iterator
        epoch, batches = self._resume
        self._resume = None
        current = self.position()[0] if self.position is not None else epoch
        if current != epoch or batches <= 0:
            return iterator
        # The order is the epoch's own; the batches trained on before the checkpoint are
        # collated and dropped (their rows are read again, the model never sees them).
        return itertools.islice(iterator, batches, None)
