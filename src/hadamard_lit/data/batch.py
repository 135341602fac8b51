"""The batch every datamodule yields and every module reads: one ``TypedDict``.

Padded per batch by :class:`~hadamard_lit.data.collate.PadCollator`. Which keys a batch
has depends on the task shape; the modules pass the backbone only the ones its forward
takes (``AdapterModule.model_input_names``).
"""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor


class Batch(TypedDict, total=False):
    """A training or evaluation batch.

    Attributes:
        input_ids: token ids, padded (``(batch, length)``).
        attention_mask: 1 on tokens, 0 on padding.
        token_type_ids: segment ids, for the encoders whose tokenizer makes them.
        labels: what the backbone's loss takes: target token ids with -100 on padding (and,
            for causal LMs, on the prompt), or class ids / scores for a classifier.
        target: the task label of a text-to-text row (``long``; ``float`` for STS-B).
        group: MultiRC's question id (for F1a / exact match per question), -1 elsewhere.
        answers: the gold final answers of math problems, as strings.
        row_id: each row's id in its split (the split's ``idx`` where it has one, else its
            position), which predictions are written against.
        eval_copy: 1 on the rows that only pad a process's share of an evaluation split
            (several processes; :mod:`~hadamard_lit.data.eval_sharding`): never scored.
    """

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor
    labels: Tensor
    target: Tensor
    group: Tensor
    answers: list[str]
    row_id: Tensor
    eval_copy: Tensor


#: Keys the backbones' forward takes, in the order the modules pass them.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")
