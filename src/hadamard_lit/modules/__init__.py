"""LightningModules, one per task shape, all sharing :class:`AdapterModule`.

- :class:`Seq2SeqModule`: T5 text-to-text NLU, evaluated by generation;
- :class:`SequenceClassificationModule`: encoder + task head (BERT, RoBERTa, MiniLM);
- :class:`CausalLMModule`: decoder LM SFT on math, exact match by generation.

The method is the ``adapter`` argument (any ``AdapterStrategy``), never a subclass.
"""

from hadamard_lit.modules.base import AdapterModule, LinearWarmupSchedule
from hadamard_lit.modules.causal_lm import CausalLMModule
from hadamard_lit.modules.classification import SequenceClassificationModule
from hadamard_lit.modules.seq2seq import Seq2SeqModule

__all__ = [
    "AdapterModule",
    "CausalLMModule",
    "LinearWarmupSchedule",
    "Seq2SeqModule",
    "SequenceClassificationModule",
]
