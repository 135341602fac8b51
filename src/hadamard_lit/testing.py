"""Tiny models of every architecture in the table, built from configs (no downloads).

For tests, here and in a user's own project::

    from hadamard_lit.testing import tiny_models
    for case in tiny_models():               # every table entry, every model_type, variants
        model = case.build()                 # e.g. a 2-layer Qwen3ForCausalLM, hidden 32

:func:`tiny_config` shrinks any ``model_type``'s default config: it sets whichever of the
usual size fields the config has (``hidden_size`` / ``d_model`` / ``n_embd``, layers,
heads, FFN width, vocabulary), turns dropout off and keeps special token ids inside the
small vocabulary; an :class:`~hadamard_lit.adapters.roles.Architecture` entry adds its own
``test_config`` where that is not enough.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
)

from hadamard_lit.adapters.architectures import ARCHITECTURES
from hadamard_lit.adapters.roles import Architecture, Kind

VOCAB = 1024
_HIDDEN = ("hidden_size", "d_model", "n_embd", "dim")
_LAYERS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "num_decoder_layers")
_HEADS = ("num_attention_heads", "n_head", "n_heads", "num_heads")
_FFN = ("intermediate_size", "d_ff", "ffn_dim", "n_inner", "hidden_dim")
_SEQ2SEQ = ("encoder_layers", "decoder_layers")
_SEQ2SEQ_HEADS = ("encoder_attention_heads", "decoder_attention_heads")
_SEQ2SEQ_FFN = ("encoder_ffn_dim", "decoder_ffn_dim")
_POSITIONS = ("max_position_embeddings", "n_positions", "n_ctx")
#: Field name → tiny value, for every spelling transformers configs use.
_SIZES: dict[str, int] = {
    **dict.fromkeys(_HIDDEN, 32),
    **dict.fromkeys((*_LAYERS, *_SEQ2SEQ), 2),
    **dict.fromkeys((*_HEADS, *_SEQ2SEQ_HEADS), 4),
    **dict.fromkeys(("num_key_value_heads", "num_kv_heads"), 2),
    **dict.fromkeys(("head_dim", "d_kv"), 8),
    **dict.fromkeys((*_FFN, *_SEQ2SEQ_FFN), 64),
    "vocab_size": VOCAB,
    **dict.fromkeys(_POSITIONS, 128),
    **dict.fromkeys(("pad_token_id", "decoder_start_token_id"), 0),
    "bos_token_id": 1,
    "eos_token_id": 2,
    "sep_token_id": 3,
    "cls_token_id": 4,
}
_DROPOUTS = (
    "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
    "activation_dropout", "dropout_rate", "resid_pdrop", "embd_pdrop", "attn_pdrop",
    "hidden_dropout", "attention_probs_dropout", "classifier_dropout", "embedding_dropout",
    "mlp_dropout", "attn_dropout", "seq_classif_dropout", "qa_dropout", "pooler_dropout",
)  # fmt: skip

AUTO_CLASSES: dict[Kind, Any] = {
    "encoder": AutoModelForSequenceClassification,
    "decoder": AutoModelForCausalLM,
    "encoder-decoder": AutoModelForSeq2SeqLM,
}


def tiny_config_options(model_type: str, **overrides: Any) -> dict[str, Any]:
    """The options that shrink ``model_type``'s default config, plus ``overrides``.

    ``{"model_type": model_type, **options}`` is a ``backbone_config`` for the modules.
    """
    fields = AutoConfig.for_model(model_type).to_dict()
    options: dict[str, Any] = {k: v for k, v in _SIZES.items() if k in fields}
    options.update({k: 0.0 for k in _DROPOUTS if isinstance(fields.get(k), float)})
    if fields.get("is_encoder_decoder"):  # transformers 5 leaves T5's unset; _shift_right needs it
        options["decoder_start_token_id"] = 0
    options["num_labels"] = 3
    options.update(overrides)
    return options


def tiny_config(model_type: str, **overrides: Any) -> PretrainedConfig:
    """``model_type``'s default config shrunk to a 2-layer, 32-wide model, plus ``overrides``."""
    return AutoConfig.for_model(model_type, **tiny_config_options(model_type, **overrides))


@dataclass(frozen=True)
class TinyModel:
    """One tiny test model: which table entry it belongs to and how to build it."""

    name: str
    architecture: Architecture
    model_type: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> Kind:
        return self.architecture.kind

    @property
    def auto_class(self) -> Any:
        """Sequence classification for encoders, causal LM for decoders, seq2seq LM."""
        return AUTO_CLASSES[self.kind]

    def config(self) -> PretrainedConfig:
        return tiny_config(self.model_type, **{**self.architecture.test_config, **self.options})

    def backbone_config(self) -> dict[str, Any]:
        """The same model as a ``backbone_config`` dict for hadamard_lit's modules."""
        options = {**self.architecture.test_config, **self.options}
        return {"model_type": self.model_type, **tiny_config_options(self.model_type, **options)}

    def build(self, seed: int = 0, auto_class: Any = None) -> nn.Module:
        """The same random-init model for the same seed, in eval mode."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return (auto_class or self.auto_class).from_config(self.config()).eval()

    def batch(self, seed: int = 1, batch_size: int = 3, length: int = 7) -> dict[str, torch.Tensor]:
        """Inputs with labels, so ``model(**batch).loss`` works for this kind of model."""
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(5, VOCAB, (batch_size, length), generator=g)
        mask = torch.ones_like(ids)
        if self.kind == "encoder-decoder":
            labels = torch.randint(5, VOCAB, (batch_size, 4), generator=g)
        elif self.kind == "encoder":
            labels = torch.randint(0, 3, (batch_size,), generator=g)
        else:
            labels = ids
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def tiny_models(architectures: tuple[Architecture, ...] = ARCHITECTURES) -> list[TinyModel]:
    """One tiny model per ``model_type`` of every entry, and per entry's test variant."""
    cases: list[TinyModel] = []
    for architecture in architectures:
        for model_type in architecture.model_types:
            cases.append(TinyModel(model_type, architecture, model_type))
        for name, options in architecture.test_variants.items():
            options = dict(options)
            model_type = options.pop("model_type", architecture.model_types[0])
            cases.append(TinyModel(name, architecture, model_type, options))
    return cases
