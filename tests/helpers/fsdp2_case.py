"""FSDP2 (``ModelParallelStrategy``, 2 CPU processes) on architectures beyond the first four.

``python tests/helpers/fsdp2_case.py TOKENIZER OUT_DIR [NAME ...]`` fits each named
tiny model (:func:`hadamard_lit.testing.tiny_models`) for 2 steps through its module, which
``fully_shard`` s the architecture table's blocks in ``configure_model``. Every rank sees the
same batches, so the result equals a one-process run's; each rank writes
``OUT_DIR/<name>.rank<r>.pt``: the whole adapter state and whether every block and the root
were FSDP2 units. Lightning launches the second rank by re-running this command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch


def main(tokenizer: str, out_dir: str, names: list[str]) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import ModelParallelStrategy

    from hadamard_lit.adapters import adapter_state_dict
    from hadamard_lit.parallel.fsdp2 import is_fully_sharded, transformer_blocks
    from helpers.modules import CASES, batches, module_for

    torch.set_num_threads(1)
    for name in names:
        case = next(c for c in CASES if c.name == name)
        module = module_for(case, tokenizer)
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=2,
            strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
            max_steps=2,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
            default_root_dir=out_dir,
        )
        trainer.fit(module, batches(case, 2))
        state = adapter_state_dict(module.model)  # collective: whole tensors on every rank
        sharded = is_fully_sharded(module.model) and all(
            is_fully_sharded(b) for b in transformer_blocks(module.model)
        )
        record = {
            "state": state,
            "sharded": sharded,
            "blocks": len(transformer_blocks(module.model)),
        }
        torch.save(record, Path(out_dir) / f"{name}.rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
    from hadamard_lit.cli import release_process_groups

    release_process_groups()
