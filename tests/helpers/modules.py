"""hadamard_lit's modules on the table's tiny models: the one module of each kind, batches, fits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from hadamard_lit.modules import CausalLMModule, Seq2SeqModule, SequenceClassificationModule
from hadamard_lit.testing import TinyModel, tiny_models

CASES = tiny_models()
MODULES: dict[str, Any] = {
    "encoder": SequenceClassificationModule,
    "decoder": CausalLMModule,
    "encoder-decoder": Seq2SeqModule,
}


def module_for(case: TinyModel, tokenizer: str) -> Any:
    cls = MODULES[case.kind]
    extra = {"num_labels": 3} if case.kind == "encoder" else {}
    return cls(backbone_config=case.backbone_config(), tokenizer=tokenizer, lr_schedule="constant",
               **extra)  # fmt: skip


def batches(case: TinyModel, steps: int) -> DataLoader:
    rows = [case.batch(seed=s) for s in range(steps)]
    return DataLoader(rows, batch_size=None)


def fit(module: Any, case: TinyModel, steps: int, root: Path, **kwargs: Any) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        **kwargs,
    )
    trainer.fit(module, batches(case, steps))
    return trainer
