"""Dynamic padding: a batch is padded to its own longest row, not to ``max_length``.

One collate function serves every datamodule: token lists are padded (``labels`` with
-100, the value the loss ignores), numbers become tensors (``long``, or ``float32`` when
any is a float: the STS-B scores), strings stay lists (the math gold answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

#: Label id the transformers losses ignore.
IGNORE_INDEX = -100


@dataclass
class PadCollator:
    """Collate rows of token lists and scalars into a padded batch.

    A plain dataclass (not a closure) so DataLoader workers can pickle it.

    Args:
        pad_token_id: padding for ``input_ids``.
        padding_side: ``"left"`` for prompts a decoder continues (generation), else ``"right"``.
    """

    pad_token_id: int
    padding_side: Literal["left", "right"] = "right"

    def pad_value(self, key: str) -> int:
        """What pads the sequences under ``key``."""
        if key == "input_ids":
            return self.pad_token_id
        return IGNORE_INDEX if key == "labels" else 0

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        for key in rows[0]:
            values = [row[key] for row in rows]
            if isinstance(values[0], (list, tuple)):
                batch[key] = pad_sequences(values, self.pad_value(key), self.padding_side)
            elif isinstance(values[0], str):
                batch[key] = values
            elif any(isinstance(v, float) for v in values):
                batch[key] = torch.tensor(values, dtype=torch.float32)
            else:
                batch[key] = torch.tensor(values, dtype=torch.long)
        return batch


def pad_sequences(
    sequences: Sequence[Sequence[int]], value: int, side: Literal["left", "right"] = "right"
) -> torch.Tensor:
    """A ``(len(sequences), longest)`` long tensor, each row padded with ``value`` on ``side``."""
    longest = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), longest), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        if not seq:
            continue
        row = torch.as_tensor(seq, dtype=torch.long)
        if side == "right":
            out[i, : len(seq)] = row
        else:
            out[i, longest - len(seq) :] = row
    return out
