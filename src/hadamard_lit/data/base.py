"""What the NLU and math datamodules share: the tokenizer, the data source, the loaders.

The source is the Hugging Face Hub when ``data_dir`` is ``None``, else a local folder of
JSON Lines files in the Hub's schema. With ``fallback_data_dir`` set, a Hub failure (no
network, ``HF_HUB_OFFLINE=1``) switches the whole datamodule to that folder, with a
warning, so a quickstart config runs offline.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from hadamard_lit.data.collate import PadCollator
from hadamard_lit.data.eval_sharding import EqualShareSampler, MarkedCopies
from hadamard_lit.data.loaders import EpochShuffleSampler, ResumableLoader
from hadamard_lit.data.sources import load_hub_split, load_local_split, resolve_data_dir

log = logging.getLogger(__name__)

#: The column that carries each raw row's id through tokenisation (the batches' ``row_id``).
ROW_ID = "_row_id"


@dataclass(frozen=True)
class DataOptions:
    """What every datamodule takes besides its own task options: where the rows come from,
    how they are batched, and which subsets are kept.

    Args:
        data_dir: ``None`` reads the Hub; else a folder, or ``package:<name>`` for a folder
            shipped in ``hadamard_lit/resources`` (``package:sst2_sample``).
        fallback_data_dir: used instead of the Hub when loading from it fails.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (``None``: ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: seed of every shuffle that decides which rows go where.
        max_train_samples: keep at most this many training rows (a seeded random subset).
        max_eval_samples: keep the first this many rows of each evaluation split.

    Raises:
        ValueError: a size below 1 (or ``num_workers`` below 0).
    """

    data_dir: str | None = None
    fallback_data_dir: str | None = None
    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 0
    seed: int = 42
    max_train_samples: int | None = None
    max_eval_samples: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_batch_size", "max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                optional = "" if name == "batch_size" else " or None"
                raise ValueError(f"{name} must be >= 1{optional}, got {value}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")


class TokenizedDataModule(LightningDataModule):
    """Base of :class:`NLUDataModule` and :class:`MathDataModule` (not used on its own).

    Args:
        tokenizer: hub name, local folder, ``package:<python package>`` (as for models),
            or a loaded tokenizer (LightningCLI hands over the model's).
        **options: the :class:`DataOptions` (``data_dir``, ``batch_size``, ...), which every
            subclass takes the same way.
    """

    def __init__(self, tokenizer: str | PreTrainedTokenizerBase, **options: Any) -> None:
        super().__init__()
        self.options = DataOptions(**options)
        # Resolved now so a wrong folder fails at construction, not minutes into a run.
        data_dir, fallback = self.options.data_dir, self.options.fallback_data_dir
        self.data_dir: Path | None = resolve_data_dir(data_dir) if data_dir is not None else None
        self.fallback_data_dir = resolve_data_dir(fallback) if fallback else None
        self._tokenizer_source = tokenizer
        self._tokenizer = None if isinstance(tokenizer, str) else tokenizer
        self._tokenizer_configured = False
        #: The prepared splits, by name (``train``, ``validation``, ``test``), once set up.
        self.datasets: dict[str, Dataset] = {}

    @property
    def tokenizer_name(self) -> str | None:
        """The tokenizer's name or folder (what ``hparams`` stores instead of the object).

        A tokenizer object in ``hparams`` would be pickled into checkpoints, which
        ``torch.load(weights_only=True)`` refuses.
        """
        source = self._tokenizer_source
        return source if isinstance(source, str) else getattr(source, "name_or_path", None)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer, loaded on first use."""
        if self._tokenizer is None:
            from hadamard_lit.backbones import resolve_model_path

            self._tokenizer = AutoTokenizer.from_pretrained(
                resolve_model_path(str(self._tokenizer_source))
            )
        if not self._tokenizer_configured:
            self.configure_tokenizer(self._tokenizer)
            self._tokenizer_configured = True
        return self._tokenizer

    def configure_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Adjust a freshly loaded tokenizer (the math datamodule adds a pad token)."""

    # -- sources -------------------------------------------------------------------------

    def load_split(
        self, hub: tuple[str, str | None, str], local: str, what: str
    ) -> tuple[Dataset, str]:
        """One raw split and a description of where it came from (for error messages).

        Args:
            hub: ``(path, config, split)`` on the Hub.
            local: the file's path relative to a data folder (``glue/rte/train.jsonl``).
            what: what the split is for, named in errors (``"task 'rte', train split"``).
        """
        if self.data_dir is None:
            path, config, split = hub
            try:
                return load_hub_split(
                    path, config, split
                ), f"{path} ({config}) split {split!r} on the Hub"
            except OSError as err:  # ConnectionError offline, FileNotFoundError, ...
                if self.fallback_data_dir is None:
                    raise
                log.warning(
                    "Could not load %s from the Hugging Face Hub (%s); using fallback_data_dir %s",
                    path,
                    err,
                    self.fallback_data_dir,
                )
                # Every later split comes from the same place.
                self.data_dir = self.fallback_data_dir
        file = self.data_dir / local
        return load_local_split(file, what), str(file)

    # -- loaders -------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        """The seed of the splits and subsets (``DataOptions.seed``)."""
        return self.options.seed

    @property
    def eval_batch_size(self) -> int:
        return self.options.eval_batch_size or self.options.batch_size

    def collator(self, padding_side: Literal["left", "right"] = "right") -> PadCollator:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            raise ValueError(f"Tokenizer {self.tokenizer.name_or_path!r} has no pad token")
        return PadCollator(pad_token_id=int(pad), padding_side=padding_side)

    def split(self, name: str) -> Dataset:
        """A prepared split; the stage that builds it must have been set up."""
        if name not in self.datasets:
            raise RuntimeError(
                f"{type(self).__name__}: split {name!r} is not ready; call setup() for the stage "
                f"that uses it first (ready: {sorted(self.datasets)})"
            )
        return self.datasets[name]

    def tokenize(
        self, data: Dataset, function: Callable[..., Any], desc: str, **kwargs: Any
    ) -> Dataset:
        """``data`` mapped through ``function`` in batches (cached on disk by ``datasets``);
        ``function(batch, tokenizer, **kwargs)`` replaces every column. Each row carries its
        id under :data:`ROW_ID` (the split's own integer ``idx`` where it has one, as GLUE
        does, else its position), which the encoders pass on as ``row_id``."""
        ids = list(range(len(data)))
        if "idx" in data.column_names and all(isinstance(i, int) for i in data[:1]["idx"]):
            ids = [int(i) for i in data["idx"]]
        data = data.add_column(ROW_ID, ids)
        return data.map(
            VersionedEncoder(function, data_code_digest()),
            batched=True,
            remove_columns=data.column_names,
            fn_kwargs={"tokenizer": self.tokenizer, **kwargs},
            desc=desc,
        )

    #: Where evaluation batches are padded: "left" for prompts a decoder continues.
    eval_padding_side: Literal["left", "right"] = "right"

    def train_dataloader(self) -> DataLoader:
        return self.make_loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader("validation", padding_side=self.eval_padding_side)

    def test_dataloader(self) -> DataLoader:
        return self.make_loader("test", padding_side=self.eval_padding_side)

    def predict_dataloader(self) -> DataLoader:
        return self.make_loader("predict", padding_side=self.eval_padding_side)

    def make_loader(self, name: str, train: bool = False, **collate: Any) -> DataLoader:
        """A loader of split ``name``; the training one shuffles by (seed, epoch) and resumes
        mid-epoch (:class:`~hadamard_lit.data.loaders.ResumableLoader`)."""
        dataset = self.split(name)
        common: dict[str, Any] = {
            "collate_fn": self.collator(**collate),
            "num_workers": self.options.num_workers,
            "persistent_workers": self.options.num_workers > 0,
        }
        if not train:
            trainer = self.trainer
            if trainer is not None and trainer.world_size > 1 and name != "predict":
                # Equal shares, the padding copies marked (predict: Lightning pads nothing).
                shares = EqualShareSampler(dataset, trainer.world_size, trainer.global_rank)
                return DataLoader(MarkedCopies(dataset), batch_size=self.eval_batch_size,
                                  sampler=shares, **common)  # fmt: skip
            return DataLoader(dataset, batch_size=self.eval_batch_size, **common)
        seed = self._shuffle_seed()
        sampler = EpochShuffleSampler(len(dataset), seed, self._current_epoch)
        return ResumableLoader(
            dataset,
            sampler=sampler,
            batch_size=self.options.batch_size,
            position=self._training_position,
            # Worker seeds from this, not from the global RNG, which a resume restores.
            generator=torch.Generator().manual_seed(seed),
            **common,
        )

    def train_batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches each process gets per epoch (its share padded, as Lightning's
        distributed sampler pads it); the training split must be set up."""
        rows = math.ceil(len(self.split("train")) / max(world_size, 1))
        return math.ceil(rows / self.options.batch_size)

    def _training_position(self) -> tuple[int, int]:
        """(epoch, batches of it trained on): what a checkpoint's loader state records."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 0
        return int(trainer.current_epoch), int(
            trainer.fit_loop.epoch_loop.batch_progress.current.processed
        )

    def _current_epoch(self) -> int | None:
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else int(trainer.current_epoch)

    def _shuffle_seed(self) -> int:
        # The run's seed (seed_everything records it), so seeds 0/1/2 see different orders;
        # read once per loader, never from the global RNG, which a resume does not restore.
        return int(os.environ.get("PL_GLOBAL_SEED", self.options.seed))

    def limit(self, dataset: Dataset, train: bool) -> Dataset:
        """``dataset`` cut to ``max_train_samples`` / ``max_eval_samples``."""
        limit = self.options.max_train_samples if train else self.options.max_eval_samples
        if limit is None or limit >= len(dataset):
            return dataset
        if train:
            # A prefix of a training file can be skewed (sorted sources): take a random subset.
            dataset = dataset.shuffle(seed=self.options.seed)
        return dataset.select(range(limit))


@functools.cache
def data_code_digest() -> str:
    """A digest of this package's encoding code (``hadamard_lit/data``: sources and task
    tables), which the ``datasets`` cache keys include."""
    digest = hashlib.sha256()
    folder = Path(__file__).parent
    for path in sorted([*folder.glob("*.py"), *folder.glob("*.yaml")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class VersionedEncoder:
    """An encoding function with the digest of the code it runs.

    ``datasets`` keys its on-disk cache by a hash of the function, and hashes a module's
    function by its name only: after an upgrade that changed how rows are encoded, the old
    tokenisation would be read back. The digest is part of this object, so of the key.
    """

    function: Callable[..., dict[str, list[Any]]]
    code_digest: str

    def __call__(self, batch: dict[str, list[Any]], **kwargs: Any) -> dict[str, list[Any]]:
        return self.function(batch, **kwargs)


def rows_of(batch: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """A ``datasets.map`` batch (column → values) as a list of rows (column → value)."""
    keys = list(batch)
    return [dict(zip(keys, values, strict=True)) for values in zip(*batch.values(), strict=True)]
