"""Pieces of ``test_strategies.py``'s multi-process runs, and its DeepSpeed case as a script.

* :class:`FrozenWeightProbe`: a callback that snapshots every frozen backbone weight (whole,
  gathered from FSDP2 or ZeRO-3 shards) when fit starts and writes, per rank, whether they
  were still identical at the end and whether the trained tensors moved. The CLI runs name
  it by ``class_path`` (``tests/`` is on their ``PYTHONPATH``).
* :class:`GlobalBatches` / ``GlobalBatchesNLU``: one process training on exactly the global
  batches that several ranks see, the single-process reference of every distributed run.
* ``python tests/helpers/strategy_case.py zero2|zero3 OUT_DIR --max-epochs N [--ckpt-path CKPT] ...``:
  fit the tiny classification module under the test-only DeepSpeed CPU strategy on
  2 processes (Lightning launches the second by re-running this command), saving
  ``OUT_DIR/last.ckpt`` (a DeepSpeed directory) at each epoch's end, and on rank 0 write
  ``OUT_DIR/last_adapter.pt``: the adapter state ``read_checkpoint`` finds in it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from hadamard_lit.data import NLUDataModule
from hadamard_lit.parallel.tensors import gathered as _gathered

#: The runs' shared set-up: global batch 8 (4 per rank on 2 processes), 32 rows, 4 steps an epoch.
GLOBAL_BATCH = 8
TRAIN_ROWS = 32
LR = 1e-2


def _fsdp1_full(trainer: pl.Trainer) -> AbstractContextManager[Any]:
    """FSDP1's original parameters whole inside the context (they are flat-shard views)."""
    from lightning.pytorch.strategies import FSDPStrategy

    if not isinstance(trainer.strategy, FSDPStrategy):
        return nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(trainer.strategy.model, writeback=False)


def whole_parameters(trainer: pl.Trainer, model: nn.Module, trainable: bool) -> dict[str, Tensor]:
    """Copies of ``model``'s whole (un-sharded) parameters, trainable or frozen ones."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad == trainable]
    with _fsdp1_full(trainer), _gathered([p for _, p in named]):
        out = {}
        for name, param in named:
            full = getattr(param, "full_tensor", None)  # FSDP2 DTensor (collective)
            value = full() if callable(full) else param
            out[name] = value.detach().cpu().clone()
    return out


class FrozenWeightProbe(pl.Callback):
    """Writes ``<log_dir or default_root_dir>/probe_rank<r>.json`` at the end of fit."""

    def __init__(self) -> None:
        self.frozen: dict[str, Tensor] = {}
        self.trained: dict[str, Tensor] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model: nn.Module = pl_module.model  # type: ignore[assignment]
        self.frozen = whole_parameters(trainer, model, trainable=False)
        self.trained = whole_parameters(trainer, model, trainable=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model: nn.Module = pl_module.model  # type: ignore[assignment]
        frozen = whole_parameters(trainer, model, trainable=False)
        trained = whole_parameters(trainer, model, trainable=True)
        summary = {
            "n_frozen": len(frozen),
            "n_trained": len(trained),
            "frozen_names_same": sorted(frozen) == sorted(self.frozen),
            "frozen_unchanged": all(torch.equal(frozen[n], self.frozen[n]) for n in self.frozen),
            "trained_moved": sorted(
                n for n in trained if not torch.equal(trained[n], self.trained[n])
            ),
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
        }
        out = Path(trainer.log_dir or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"probe_rank{trainer.global_rank}.json").write_text(json.dumps(summary, indent=1))


# -- one process seeing the global batches of several ---------------------------------------


class GlobalBatches:
    """Batch sampler: the union of what ``world_size`` ranks see at each step, in one batch.

    Lightning wraps a custom training sampler in ``DistributedSamplerWrapper`` with
    ``shuffle=True`` and ``seed=PL_GLOBAL_SEED``: the wrapper permutes the sampler's order
    again (by seed and epoch) before giving rank ``r`` every ``world_size``-th index. The
    same wrappers, one per rank, give a single process the same global batches.
    """

    def __init__(self, sampler: Any, world_size: int, batch_size: int, seed: int) -> None:
        from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

        self.ranks = [
            DistributedSamplerWrapper(
                sampler, num_replicas=world_size, rank=r, shuffle=True, seed=seed
            )
            for r in range(world_size)
        ]
        self.batch_size = batch_size
        self.sampler = self  # Lightning calls set_epoch on batch_sampler.sampler

    def set_epoch(self, epoch: int) -> None:
        for wrapper in self.ranks:
            wrapper.set_epoch(epoch)

    def __iter__(self) -> Any:
        per_rank = [list(wrapper) for wrapper in self.ranks]
        for start in range(0, len(per_rank[0]), self.batch_size):
            yield [i for indices in per_rank for i in indices[start : start + self.batch_size]]

    def __len__(self) -> int:
        return -(-len(self.ranks[0]) // self.batch_size)


class GlobalBatchesNLU(NLUDataModule):
    """``NLUDataModule`` training on the global batches of ``world_size`` ranks, in one process.

    Args:
        world_size: how many ranks' batches (of ``batch_size`` each) make one batch here.
        **kwargs: ``NLUDataModule``'s.
    """

    def __init__(self, world_size: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.world_size = world_size

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        batches = GlobalBatches(loader.sampler, self.world_size, loader.batch_size or 1, seed)
        return DataLoader(loader.dataset, batch_sampler=batches, collate_fn=loader.collate_fn)


# -- the DeepSpeed case (a script) --------------------------------------------------------


def tiny_classifier(backbone: str, tokenizer: str, task: str | None = None) -> Any:
    """The runs' module: a tiny BERT folder with AdaDHP, AdamW at a constant ``LR``."""
    from hadamard_lit.adapters import AdaDHP
    from hadamard_lit.modules import SequenceClassificationModule

    return SequenceClassificationModule(
        model_name_or_path=backbone,
        tokenizer=tokenizer,
        task=task,
        adapter=AdaDHP(),
        optimizer=partial(torch.optim.AdamW, lr=LR, weight_decay=0.0),
        lr_schedule="constant",
    )


def run_deepspeed(args: argparse.Namespace) -> None:
    """Fit to ``args.max_epochs`` (resuming from ``args.ckpt_path``), saving each epoch."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from hadamard_lit.parallel.checkpoints import read_checkpoint
    from helpers.distributed import deepspeed_cpu_strategy

    torch.set_num_threads(1)
    pl.seed_everything(0)
    stage = {"zero2": 2, "zero3": 3}[args.case]
    module = tiny_classifier(args.backbone, args.tokenizer)
    data = NLUDataModule(
        task="sst2",
        tokenizer=module.tokenizer,
        shape="classification",
        data_dir=args.data_dir,
        max_length=32,
        batch_size=GLOBAL_BATCH // 2,
        max_train_samples=TRAIN_ROWS,
        max_eval_samples=16,
    )
    # last.ckpt at each epoch's end, as the CLI's last_checkpoint callback writes it.
    last = ModelCheckpoint(dirpath=args.out_dir, filename="last", monitor=None, save_top_k=1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        # As configs/strategy/deepspeed_stage_*.yaml.
        strategy=deepspeed_cpu_strategy(stage=stage, exclude_frozen_parameters=True),
        max_epochs=args.max_epochs,
        callbacks=[FrozenWeightProbe(), last],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(args.out_dir),
    )
    trainer.fit(module, datamodule=data, ckpt_path=args.ckpt_path)
    if trainer.global_rank == 0:
        state = read_checkpoint(last.best_model_path)["state_dict"]
        torch.save(state, args.out_dir / "last_adapter.pt")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["zero2", "zero3"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--max-epochs", type=int, required=True)
    parser.add_argument("--ckpt-path")
    run_deepspeed(parser.parse_args())
    from hadamard_lit.cli import release_process_groups

    release_process_groups()  # else a late gloo collective can abort the exit (see its docstring)
