"""What leaves and enters hadamard_lit: peft-format adapters, adapter-only folders, model
cards.

- :mod:`~hadamard_lit.interop.peft_format`: LoRA, (IA)3 and HUT as peft LoRA, IA3 and HiRA
  folders (:func:`save_peft_adapter`); :mod:`~hadamard_lit.interop.peft_import`: back
  (:func:`load_peft_adapter`).
- :mod:`~hadamard_lit.interop.adapter_folders`: adapter-only folders of any method, and
  what ``export`` writes.
- :mod:`~hadamard_lit.interop.model_card`: the ``README.md`` of every exported folder.
"""

from hadamard_lit.interop.peft_format import save_peft_adapter
from hadamard_lit.interop.peft_import import load_peft_adapter, strategy_from_peft

__all__ = ["load_peft_adapter", "save_peft_adapter", "strategy_from_peft"]
