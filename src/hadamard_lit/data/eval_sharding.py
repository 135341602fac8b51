"""Evaluation under DDP / FSDP / DeepSpeed without scoring any row twice.

Lightning gives each process an equal share of the validation and test splits with a
``DistributedSampler``, which pads the split to a multiple of the number of processes by
repeating rows: 139 RTE test rows on 2 processes are scored as 140, 28 CB rows on 8 as 32.
Equal shares are needed (a sharded model's forward is a collective every process must
join), so the copies stay, but marked: :class:`EqualShareSampler` numbers a copy of row
``i`` as ``size + i``, :class:`MarkedCopies` reads it as row ``i`` with ``eval_copy = 1``,
and the modules leave those rows out of the metrics and the loss
(:func:`scored_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

#: The batch key of the mark (1: a padding copy, not to be scored).
COPY_KEY = "eval_copy"


class EqualShareSampler(DistributedSampler):
    """Process ``rank``'s share of ``size`` rows, in order, all shares the same length;
    the rows that pad the last shares are numbered ``size + i`` (a copy of row ``i``).

    A ``DistributedSampler`` so that Lightning keeps it instead of injecting its own.
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.size = len(dataset)
        self.share = math.ceil(self.size / num_replicas) if self.size else 0

    def __iter__(self) -> Iterator[int]:
        total = self.share * self.num_replicas
        indices = list(range(self.size))
        indices += [self.size + i % max(self.size, 1) for i in range(total - self.size)]
        return iter(indices[self.rank : total : self.num_replicas])

    def __len__(self) -> int:
        return self.share


class MarkedCopies(Dataset):
    """``dataset`` read through :class:`EqualShareSampler`'s numbers: every row gets
    ``eval_copy`` (0, or 1 for a padding copy)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.size = len(dataset)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        copy = index >= self.size
        return {**self.dataset[index - self.size if copy else index], COPY_KEY: int(copy)}


def scored_rows(batch: Any) -> Tensor | None:
    """The rows of ``batch`` to score (a bool mask), or ``None`` where all of them are."""
    copies = batch.get(COPY_KEY) if hasattr(batch, "get") else None
    if copies is None or not bool(torch.as_tensor(copies).any()):
        return None
    return ~torch.as_tensor(copies).bool()
