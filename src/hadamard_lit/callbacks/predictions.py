"""``predict`` writes its predictions: one JSON Lines file, a row per input, by its id.

Every module's ``predict_step`` returns columns (``row_id``, ``prediction`` and, where
they exist, ``label_id`` and the generated ``text``); this callback writes them in row-id
order to ``<run folder>/predictions.jsonl`` (or ``output_path``), each process its own
part under DDP (``predictions.rank<r>.jsonl``), and says where.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override


class PredictionWriter(BasePredictionWriter):
    """Write what ``predict`` returns to a JSON Lines file.

    Args:
        output_path: the file; ``None`` writes ``predictions.jsonl`` in the run's log folder.
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_path = output_path
        #: Where the last ``predict`` wrote (``None`` before one ran).
        self.written: Path | None = None

    @override
    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Any,
        batch_indices: Any,
    ) -> None:
        rows = [row for batch in _batches(predictions) for row in _rows(batch)]
        rows.sort(key=lambda row: row.get("row_id", 0))
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w") as f:
            for row in rows:
                f.write(json.dumps(row, default=str) + "\n")
        os.replace(tmp, path)
        self.written = path
        rank_zero_info(f"Wrote {len(rows):,} predictions to {path}")

    def _path(self, trainer: pl.Trainer) -> Path:
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        path = Path(self.output_path) if self.output_path else folder / "predictions.jsonl"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path


def _batches(predictions: Any) -> list[dict[str, list[Any]]]:
    """Lightning's list of batch outputs (a list per dataloader when there are several)."""
    if predictions and isinstance(predictions[0], list):
        return [b for loader in predictions for b in loader]
    return list(predictions or [])


def _rows(batch: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(batch)
    return [dict(zip(keys, values, strict=True)) for values in zip(*batch.values(), strict=True)]
