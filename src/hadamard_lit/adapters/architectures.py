"""The architecture table: which module plays which role, per transformers model family.

One :class:`~hadamard_lit.adapters.roles.Architecture` per family; every strategy's
defaults, the Hadamard Adapter's norms, layer indices, FSDP2 units and the default task
head come from here. To support another family, add one entry (the README says how); its
tiny test models are built from ``model_types`` (and ``test_config``/``test_variants``) and
run through every method's tests without editing them.

A model whose ``model_type`` is not here gets its roles detected from its module names
(:mod:`hadamard_lit.adapters.detection`), or a clear error listing its linear layers.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from hadamard_lit.adapters.roles import Architecture

log = logging.getLogger(__name__)

_LLAMA_ROLES = {
    "attention.query": "self_attn.q_proj",
    "attention.key": "self_attn.k_proj",
    "attention.value": "self_attn.v_proj",
    "attention.output": "self_attn.o_proj",
    "ffn.gate": "mlp.gate_proj",
    "ffn.up": "mlp.up_proj",
    "ffn.out": "mlp.down_proj",
    "norm.post_attention": "post_attention_layernorm",
}
_BERT_ROLES = {
    "attention.query": "attention.self.query",
    "attention.key": "attention.self.key",
    "attention.value": "attention.self.value",
    "attention.output": "attention.output.dense",
    "ffn.in": "intermediate.dense",
    "ffn.out": "output.dense",
    "norm.post_attention": "attention.output.LayerNorm",
}


def _t5_roles() -> dict[str, str]:
    roles = {}
    for kind, sublayer, module in (
        ("attention", 0, "SelfAttention"),
        ("cross_attention", 1, "EncDecAttention"),
    ):
        for role, short in (("query", "q"), ("key", "k"), ("value", "v"), ("output", "o")):
            roles[f"{kind}.{role}"] = f"layer.{sublayer}.{module}.{short}"
    ffn = "layer.*.DenseReluDense"
    roles.update({"ffn.in": f"{ffn}.wi", "ffn.gate": f"{ffn}.wi_0", "ffn.up": f"{ffn}.wi_1"})
    roles.update({"ffn.out": f"{ffn}.wo", "norm.post_attention": "layer.1.layer_norm"})
    return roles


def _bart_roles() -> dict[str, str]:
    roles = {}
    for kind, module in (("attention", "self_attn"), ("cross_attention", "encoder_attn")):
        for role, short in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            roles[f"{kind}.{role}"] = f"{module}.{short}"
        roles[f"{kind}.output"] = f"{module}.out_proj"
    roles.update({"ffn.in": "fc1", "ffn.out": "fc2"})
    return roles


def _llama_like(name: str, *model_types: str, notes: str = "", **options: Any) -> Architecture:
    return Architecture(
        name=name,
        model_types=model_types or (name,),
        kind="decoder",
        blocks=("layers",),
        roles={**_LLAMA_ROLES, **options.pop("roles", {})},
        head=("score",),
        notes=notes,
        **options,
    )


ARCHITECTURES: tuple[Architecture, ...] = (
    # -- encoder-decoders ------------------------------------------------------------------
    Architecture(
        name="t5",
        model_types=("t5", "mt5", "umt5"),
        kind="encoder-decoder",
        blocks=("encoder.block", "decoder.block"),
        roles=_t5_roles(),
        head=("classification_head",),
        notes="pre-LN: the norm after self-attention is the next sub-layer's input norm",
        test_variants={"t5-v1_1": {"model_type": "t5", "feed_forward_proj": "gated-gelu"}},
    ),
    Architecture(
        name="bart",
        model_types=("bart",),
        kind="encoder-decoder",
        blocks=("encoder.layers", "decoder.layers"),
        roles={**_bart_roles(), "norm.post_attention": "self_attn_layer_norm"},
        head=("classification_head", "qa_outputs"),
    ),
    Architecture(
        name="mbart",
        model_types=("mbart",),
        kind="encoder-decoder",
        blocks=("encoder.layers", "decoder.layers"),
        # Pre-LN: after self-attention comes the cross-attention's (decoder) or the FFN's norm.
        roles={
            **_bart_roles(),
            "norm.post_attention": ("encoder_attn_layer_norm", "final_layer_norm"),
        },
        head=("classification_head", "qa_outputs"),
    ),
    # -- encoders --------------------------------------------------------------------------
    Architecture(
        name="bert",
        model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra"),
        kind="encoder",
        blocks=("encoder.layer",),
        roles=_BERT_ROLES,
        pooler="pooler.dense",
        head=("classifier", "qa_outputs"),
    ),
    Architecture(
        name="distilbert",
        model_types=("distilbert",),
        kind="encoder",
        blocks=("transformer.layer",),
        roles={
            "attention.query": "attention.q_lin",
            "attention.key": "attention.k_lin",
            "attention.value": "attention.v_lin",
            "attention.output": "attention.out_lin",
            "ffn.in": "ffn.lin1",
            "ffn.out": "ffn.lin2",
            "norm.post_attention": "sa_layer_norm",
        },
        head=("pre_classifier", "classifier", "qa_outputs"),
    ),
    Architecture(
        name="albert",
        model_types=("albert",),
        kind="encoder",
        blocks=("albert_layers",),
        roles={
            "attention.query": "attention.query",
            "attention.key": "attention.key",
            "attention.value": "attention.value",
            "attention.output": "attention.dense",
            "ffn.in": "ffn",
            "ffn.out": "ffn_output",
            "norm.post_attention": "attention.LayerNorm",
        },
        pooler="pooler",
        head=("classifier", "qa_outputs"),
        notes="one set of layer weights shared by every layer (ALBERT's design): adapters too",
        test_config={"embedding_size": 16},
    ),
    Architecture(
        name="deberta-v2",
        model_types=("deberta-v2",),
        kind="encoder",
        blocks=("encoder.layer",),
        roles={
            **_BERT_ROLES,
            "attention.query": "attention.self.query_proj",
            "attention.key": "attention.self.key_proj",
            "attention.value": "attention.self.value_proj",
        },
        # Its ContextPooler is new in a classification model (not in the checkpoints): head.
        head=("pooler", "classifier", "qa_outputs"),
        notes="DeBERTa-v3 checkpoints use this architecture",
    ),
    Architecture(
        name="modernbert",
        model_types=("modernbert",),
        kind="encoder",
        blocks=("layers",),
        roles={
            "attention.qkv": "attn.Wqkv",
            "attention.output": "attn.Wo",
            "ffn.in": "mlp.Wi",
            "ffn.out": "mlp.Wo",
            "norm.post_attention": "mlp_norm",
        },
        head=("head", "classifier"),
        notes="fused qkv (Wqkv) and a fused gated FFN input (Wi)",
    ),
    # -- decoders --------------------------------------------------------------------------
    Architecture(
        name="gpt2",
        model_types=("gpt2",),
        kind="decoder",
        blocks=("h",),
        roles={
            "attention.qkv": "attn.c_attn",
            "attention.output": "attn.c_proj",
            "ffn.in": "mlp.c_fc",
            "ffn.out": "mlp.c_proj",
            "norm.post_attention": "ln_2",
        },
        head=("score",),
        notes="Conv1D layers, fused qkv (c_attn)",
    ),
    Architecture(
        name="gpt_neox",
        model_types=("gpt_neox",),
        kind="decoder",
        blocks=("layers",),
        roles={
            "attention.qkv": "attention.query_key_value",
            "attention.output": "attention.dense",
            "ffn.in": "mlp.dense_h_to_4h",
            "ffn.out": "mlp.dense_4h_to_h",
            "norm.post_attention": "post_attention_layernorm",
        },
        head=("score",),
        notes="fused qkv (query_key_value)",
    ),
    Architecture(
        name="gptj",
        model_types=("gptj",),
        kind="decoder",
        blocks=("h",),
        roles={
            "attention.query": "attn.q_proj",
            "attention.key": "attn.k_proj",
            "attention.value": "attn.v_proj",
            "attention.output": "attn.out_proj",
            "ffn.in": "mlp.fc_in",
            "ffn.out": "mlp.fc_out",
        },
        head=("score",),
        notes="parallel attention and FFN share one norm: no norm after attention",
        test_config={"rotary_dim": 4},
    ),
    Architecture(
        name="opt",
        model_types=("opt",),
        kind="decoder",
        blocks=("layers",),
        roles={
            **{k: v for k, v in _bart_roles().items() if not k.startswith("cross")},
            "norm.post_attention": "final_layer_norm",
        },
        # OPT-350m is post-LN: there the norm after self-attention is its own.
        config_roles=lambda config: (
            {}
            if getattr(config, "do_layer_norm_before", True)
            else {"norm.post_attention": "self_attn_layer_norm"}
        ),
        head=("score",),
    ),
    Architecture(
        name="falcon",
        model_types=("falcon",),
        kind="decoder",
        blocks=("h",),
        roles={
            "attention.qkv": "self_attention.query_key_value",
            "attention.output": "self_attention.dense",
            "ffn.in": "mlp.dense_h_to_4h",
            "ffn.out": "mlp.dense_4h_to_h",
            "norm.post_attention": "post_attention_layernorm",
        },
        head=("score",),
        notes="fused qkv; parallel-attention variants (most checkpoints) have no norm after attention",
    ),
    Architecture(
        name="phi",
        model_types=("phi",),
        kind="decoder",
        blocks=("layers",),
        roles={
            "attention.query": "self_attn.q_proj",
            "attention.key": "self_attn.k_proj",
            "attention.value": "self_attn.v_proj",
            "attention.output": "self_attn.dense",
            "ffn.in": "mlp.fc1",
            "ffn.out": "mlp.fc2",
        },
        head=("score",),
        notes="parallel attention and FFN share one norm: no norm after attention",
    ),
    Architecture(
        name="phi3",
        model_types=("phi3",),
        kind="decoder",
        blocks=("layers",),
        roles={
            "attention.qkv": "self_attn.qkv_proj",
            "attention.output": "self_attn.o_proj",
            "ffn.in": "mlp.gate_up_proj",
            "ffn.out": "mlp.down_proj",
            "norm.post_attention": "post_attention_layernorm",
        },
        head=("score",),
        notes="fused qkv (qkv_proj) and gate+up (gate_up_proj)",
    ),
    _llama_like("llama"),
    _llama_like("mistral"),
    _llama_like(
        "mixtral",
        # transformers < 5 keeps each expert as w1/w2/w3 linear layers; 5 fuses them.
        roles={
            "ffn.gate": "block_sparse_moe.experts.*.w1",
            "ffn.up": "block_sparse_moe.experts.*.w3",
            "ffn.out": "block_sparse_moe.experts.*.w2",
        },
        notes=(
            "experts: transformers 5 fuses them into 3-D parameters, which no method adapts "
            "(FFN roles match nothing there); attention is adapted, the router never"
        ),
        test_config={"num_local_experts": 4, "num_experts_per_tok": 2},
    ),
    _llama_like("qwen2"),
    _llama_like("qwen3", notes="q_norm/k_norm inside attention are not the norm after it"),
    _llama_like("gemma"),
    _llama_like("gemma2", notes="post_attention_layernorm normalises the attention output itself"),
    _llama_like("gemma3_text", notes="Gemma 3's text model (Gemma3ForCausalLM)"),
    _llama_like(
        "olmo2", notes="post-norm: post_attention_layernorm normalises the attention output"
    ),
    _llama_like("granite"),
    _llama_like("stablelm"),
)

_BY_MODEL_TYPE: dict[str, Architecture] = {t: a for a in ARCHITECTURES for t in a.model_types}


def supported_model_types() -> list[str]:
    """Every ``model_type`` with a table entry."""
    return sorted(_BY_MODEL_TYPE)


def get_architecture(model_type: str) -> Architecture | None:
    """The table entry for ``model_type`` (None: not in the table)."""
    return _BY_MODEL_TYPE.get(model_type)


def architecture_of(model: nn.Module) -> Architecture:
    """The architecture of ``model``: its table entry, or roles detected from its modules.

    Raises:
        ValueError: not in the table and its module names do not say which layer is which
            (the message lists its linear layers and the ``target_modules`` to pass).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    found = _BY_MODEL_TYPE.get(str(model_type))
    if found is not None:
        return found
    cached = model.__dict__.get("_hadamard_lit_architecture")
    if cached is not None:
        return cached
    from hadamard_lit.adapters.detection import detect_architecture

    detected = detect_architecture(model)
    model.__dict__["_hadamard_lit_architecture"] = detected
    return detected
