"""A tiny T5 + adapter LightningModule, random token data, and runs of AdaptiveSelection.

Used in-process by ``test_selection.py`` and as a script by
``test_selection_distributed.py``: ``python tests/helpers/selection_case.py CASE OUT_DIR`` runs one
distributed fit (Lightning launches the other ranks by re-running this command) and each
rank writes ``OUT_DIR/rank{r}.json`` with what the callback selected.

Deliberately independent of ``hadamard_lit.modules``: the callback must work with any
LightningModule that keeps an adapted transformers model somewhere under it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from transformers import T5Config, T5ForConditionalGeneration

from hadamard_lit.adapters import AdaDHP, AdapterStrategy
from hadamard_lit.callbacks import AdaptiveSelection
from helpers.tiny import tiny_t5_config

T5_CONFIG = tiny_t5_config(64)
#: Adapted modules of the tiny T5 with AdaDHP's defaults: 2 × 6 (encoder) + 2 × 10 (decoder).
NUM_T5_MODULES = 32


def tiny_t5(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(**T5_CONFIG))


def token_data(n: int = 32, seed: int = 1, src_len: int = 8, tgt_len: int = 4) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    vocab = int(T5_CONFIG["vocab_size"])  # type: ignore[call-overload]
    ids = torch.randint(2, vocab, (n, src_len), generator=g)
    labels = torch.randint(2, vocab, (n, tgt_len), generator=g)
    return TensorDataset(ids, labels)


def loader(batch_size: int, n: int = 32, seed: int = 1) -> DataLoader:
    return DataLoader(token_data(n, seed), batch_size=batch_size, shuffle=False)


class TinySeq2Seq(pl.LightningModule):
    """Tiny random-init T5 with an adapter strategy, built in ``configure_model``.

    Args:
        strategy: adapter strategy factory (AdaDHP by default).
        lr, weight_decay: AdamW's.
        fsdp2: apply ``fully_shard`` to every block and the root (under
            ``ModelParallelStrategy``; idempotent).
        build_early: build the model in ``__init__`` instead of ``configure_model``. For
            DeepSpeed ZeRO-3, whose ``configure_model`` context (``zero.Init``) partitions
            each weight as it is created, so ``AdapterLayer.__init__`` sees 1-D shards.
    """

    def __init__(
        self,
        strategy: Callable[[], AdapterStrategy] = AdaDHP,
        lr: float = 3e-2,
        weight_decay: float = 0.1,
        fsdp2: bool = False,
        seed: int = 0,
        build_early: bool = False,
    ) -> None:
        super().__init__()
        self.strategy_factory = strategy
        self.lr = lr
        self.weight_decay = weight_decay
        self.fsdp2 = fsdp2
        self.seed = seed
        self.model: nn.Module | None = None
        if build_early:
            self.configure_model()

    def configure_model(self) -> None:
        if self.model is None:
            model = tiny_t5(self.seed)
            self.strategy_factory().apply(model)
            self.model = model
        if self.fsdp2 and self.device_mesh is not None:
            from torch.distributed.fsdp import FSDPModule, fully_shard

            if isinstance(self.model, FSDPModule):
                return
            mesh = self.device_mesh["data_parallel"]
            for stack in (self.model.encoder, self.model.decoder):  # type: ignore[union-attr]
                for block in stack.block:
                    fully_shard(block, mesh=mesh)
            fully_shard(self.model, mesh=mesh)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        ids, labels = batch
        assert self.model is not None
        loss = self.model(input_ids=ids, labels=labels).loss
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)


def selection_summary(selection: AdaptiveSelection) -> dict[str, Any]:
    """What a run selected, as JSON-able data."""
    return {
        "active": selection.active_modules,
        "removed": selection.removed_modules,
        "scores": selection.scores,
        "last_step": selection.last_step,
    }


# -- distributed cases (run as a script) ---------------------------------------------------

#: Selection settings every distributed case and its single-process reference share.
CASE_SELECTION = dict(target=8, t_init=2, t_final=6, delta_t=2)
CASE_STEPS = 8
CASE_BATCH = 4


def case_selection() -> AdaptiveSelection:
    return AdaptiveSelection(**CASE_SELECTION, plot=False)  # type: ignore[arg-type]


def case_trainer(
    strategy: Any, root: str, selection: AdaptiveSelection, devices: int, accumulate: int = 1
) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_steps=CASE_STEPS,
        accumulate_grad_batches=accumulate,
        callbacks=[selection],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        # Every rank sees the same batches, so the averaged gradient equals one process's.
        use_distributed_sampler=False,
        default_root_dir=root,
    )


def run_case(case: str, out_dir: str) -> None:
    from helpers.distributed import deepspeed_cpu_strategy

    torch.set_num_threads(1)
    fsdp2 = False
    if case == "ddp":
        strategy: Any = "ddp"
    elif case == "fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
        fsdp2 = True
    elif case in ("zero2", "zero3"):
        strategy = deepspeed_cpu_strategy(stage=int(case[-1]))
    else:
        raise SystemExit(f"unknown case {case!r}")
    selection = case_selection()
    module = TinySeq2Seq(fsdp2=fsdp2, build_early=case == "zero3")
    # ZeRO-2 in half batches, accumulated by DeepSpeed itself: the same optimizer steps.
    accumulate = 2 if case == "zero2" else 1
    trainer = case_trainer(strategy, out_dir, selection, devices=2, accumulate=accumulate)
    trainer.fit(module, loader(CASE_BATCH // accumulate))
    summary = selection_summary(selection)
    # Checkpoint state (collective under FSDP2), then check it round-trips on every rank.
    state = selection.state_dict()
    summary["state_keys"] = sorted(state["importance"])
    summary["state_numel"] = sum(t.numel() for t in state["importance"].values())
    # Resume path: load that state into a fresh callback bound to the same sharded model.
    again = case_selection()
    again.load_state_dict(state)
    again.attach(module, trainer)
    again.on_train_start(trainer, module)
    round_trip = again.state_dict()
    summary["state_round_trip"] = (
        all(
            torch.equal(round_trip[part][key], state[part][key])
            for part in ("importance", "uncertainty")
            for key in state[part]
        )
        and round_trip["removed"] == state["removed"]
        and round_trip["scores"] == state["scores"]
    )
    identity = {}
    for name in selection.removed_modules:
        layer: Any = module.model.get_submodule(name)  # type: ignore[union-attr]
        values = [v for p in layer.adapter_parameters().values() for v in _full_values(p)]
        identity[name] = all(bool((v == 1).all()) for v in values)
    summary["removed_identity"] = identity
    rank = trainer.global_rank
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(summary, indent=1, sort_keys=True))


def _full_values(param: Any) -> list[torch.Tensor]:
    """Every copy of ``param`` an optimizer step could have moved, whole (collective)."""
    if hasattr(param, "full_tensor"):  # FSDP2
        return [param.full_tensor()]
    if hasattr(param, "ds_id") or hasattr(param, "_hp_mapping"):  # DeepSpeed ZeRO
        import deepspeed
        from deepspeed.utils import safe_get_full_fp32_param

        with deepspeed.zero.GatheredParameters([param]):
            module_value = param.detach().clone()
        return [module_value, safe_get_full_fp32_param(param)]
    return [param.detach()]


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
    run_case(sys.argv[1], sys.argv[2])
    from hadamard_lit.cli import release_process_groups

    release_process_groups()  # else a late gloo all-gather can abort the exit (see its docstring)
