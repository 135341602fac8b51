"""Tiny backbones for tests, built from configs (no downloads).

* :func:`tiny_t5_config`: the one tiny T5 (2 layers, width 32), at any vocabulary size;
* :data:`TINY_T5`, :data:`TINY_BERT`, :data:`TINY_LLAMA`: ``backbone_config`` dicts with the
  vocabularies of the real tokenizers the CLI tests use;
* :data:`BUILDERS`, :func:`build`, :func:`batch`, :func:`output`: small-vocabulary models of
  the first four families (the architecture matrix uses ``hadamard_lit.testing`` for all).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
    T5Config,
    T5ForConditionalGeneration,
)

VOCAB = 128


def tiny_t5_config(vocab_size: int, **overrides: Any) -> dict[str, Any]:
    """The tiny T5 every test uses: 2 + 2 layers, width 32, no dropout."""
    return dict(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        # transformers 5 no longer defaults these, and _shift_right needs them.
        decoder_start_token_id=0,
        pad_token_id=0,
        dropout_rate=0.0,
        **overrides,
    )


_T5 = tiny_t5_config(VOCAB)
_ENCODER = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    max_position_embeddings=64,
    num_labels=3,
)


def _t5() -> nn.Module:
    return T5ForConditionalGeneration(T5Config(**_T5))


def _t5_v1_1() -> nn.Module:
    return T5ForConditionalGeneration(T5Config(**_T5, feed_forward_proj="gated-gelu"))


def _bert() -> nn.Module:
    return BertForSequenceClassification(BertConfig(**_ENCODER))


def _roberta() -> nn.Module:
    return RobertaForSequenceClassification(RobertaConfig(**_ENCODER, pad_token_id=1))


def _gpt2() -> nn.Module:
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    )


def _llama() -> nn.Module:
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    )


BUILDERS = {
    "t5": _t5,
    "t5_v1_1": _t5_v1_1,
    "bert": _bert,
    "roberta": _roberta,
    "gpt2": _gpt2,
    "llama": _llama,
}


def build(family: str, seed: int = 0) -> nn.Module:
    """The same tiny model of ``family`` for the same seed, in eval mode."""
    torch.manual_seed(seed)
    return BUILDERS[family]().eval()


def batch(family: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """A small batch with labels, so ``model(**batch).loss`` works for every family."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    if family.startswith("t5"):
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.randint(2, VOCAB, (3, 4), generator=g),
        }
    if family in ("bert", "roberta"):
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.randint(0, 3, (3,), generator=g),
        }
    return {"input_ids": ids, "attention_mask": mask, "labels": ids}


def output(model: nn.Module, family: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's logits for ``inputs``, in eval mode."""
    with torch.no_grad():
        return model(**inputs).logits


#: Random-init backbones as ``backbone_config`` dicts, vocabularies of the real tokenizers.
TINY_T5 = {"model_type": "t5", **tiny_t5_config(32128, eos_token_id=1)}
TINY_BERT = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "max_position_embeddings": 128,
}
TINY_LLAMA = {
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}
