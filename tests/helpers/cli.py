"""Run configs for in-process CLI runs (``python -m hadamard_lit ...`` as ``HadamardCLI``).

One quiet CPU ``trainer`` block, and a tiny T5 / BERT / Llama run config on real data with
real tokenizers, as the end-to-end, distributed and SLURM tests start them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml

from hadamard_lit.cli import HadamardCLI
from helpers.tiny import TINY_BERT, TINY_LLAMA, TINY_T5


def trainer_block(root: Path, name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "max_epochs": 1,
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "num_sanity_val_steps": 0,
        "logger": {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(root), "name": name},
        },
        **overrides,
    }


def optimizer_block(lr: float) -> dict[str, Any]:
    return {"class_path": "torch.optim.AdamW", "init_args": {"lr": lr, "weight_decay": 0.0}}


def nlu_data(data_dir: Path, shape: str, **overrides: Any) -> dict[str, Any]:
    init = {
        "task": "sst2",
        "shape": shape,
        "data_dir": str(data_dir),
        "max_length": 64,
        "batch_size": 16,
        "max_train_samples": 96,
        "max_eval_samples": 32,
        **overrides,
    }
    return {"class_path": "hadamard_lit.data.NLUDataModule", "init_args": init}


def t5_config(root: Path, data_dir: Path, tokenizer: str) -> dict[str, Any]:
    return {
        "seed_everything": 0,
        "trainer": trainer_block(root, "t5"),
        "model": {
            "class_path": "hadamard_lit.modules.Seq2SeqModule",
            "init_args": {
                "backbone_config": TINY_T5,
                "tokenizer": tokenizer,
                "adapter": {"class_path": "hadamard_lit.adapters.AdaDHP"},
                "optimizer": optimizer_block(3e-2),
                "warmup_steps": 2,
                "max_new_tokens": 4,
            },
        },
        "data": nlu_data(data_dir, "text_to_text"),
    }


def bert_config(root: Path, data_dir: Path, tokenizer: str, **trainer: Any) -> dict[str, Any]:
    return {
        "seed_everything": 0,
        "trainer": trainer_block(root, "bert", **trainer),
        "model": {
            "class_path": "hadamard_lit.modules.SequenceClassificationModule",
            "init_args": {
                "backbone_config": TINY_BERT,
                "tokenizer": tokenizer,
                "adapter": {"class_path": "hadamard_lit.adapters.AdaDHP"},
                "optimizer": optimizer_block(1e-2),
                "warmup_steps": 2,
            },
        },
        "data": nlu_data(data_dir, "classification"),
    }


def llama_config(root: Path, data_dir: Path, tokenizer: str) -> dict[str, Any]:
    return {
        "seed_everything": 0,
        "trainer": trainer_block(root, "llama"),
        "model": {
            "class_path": "hadamard_lit.modules.CausalLMModule",
            "init_args": {
                "backbone_config": TINY_LLAMA,
                "tokenizer": tokenizer,
                "adapter": {"class_path": "hadamard_lit.adapters.AdaDHP"},
                "optimizer": optimizer_block(1e-2),
                "max_new_tokens": 8,
            },
        },
        "data": {
            "class_path": "hadamard_lit.data.MathDataModule",
            "init_args": {
                "dataset": "gsm8k",
                "data_dir": str(data_dir),
                "max_length": 96,
                "batch_size": 4,
                "eval_batch_size": 8,
                "max_train_samples": 16,
                "max_eval_samples": 8,
            },
        },
    }


def run(subcommand: str, config: dict[str, Any] | Path, tmp_path: Path, *args: str) -> HadamardCLI:
    """``python -m hadamard_lit SUBCOMMAND --config CONFIG ARGS...``, in-process."""
    if isinstance(config, dict):
        path = tmp_path / f"{subcommand}.yaml"
        path.write_text(yaml.safe_dump(config))
        config = path
    return HadamardCLI(args=[subcommand, "--config", str(config), *args])


def metrics_rows(log_dir: Path) -> list[dict[str, str]]:
    with open(log_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))
