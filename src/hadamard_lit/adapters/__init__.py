"""Adapter strategies: each injects one method into any supported transformers model.

Every strategy shares :class:`AdapterStrategy`: ``apply(model)`` injects in place and
freezes what is not trained, ``merge(model)`` folds the adapters back into plain layers.
"""

from hadamard_lit.adapters.adadhp import AdaDHP, DualHadamardLinear
from hadamard_lit.adapters.architectures import (
    ARCHITECTURES,
    architecture_of,
    get_architecture,
    supported_model_types,
)
from hadamard_lit.adapters.base import (
    AdapterLayer,
    AdapterRecord,
    AdapterStrategy,
    get_adapter_record,
)
from hadamard_lit.adapters.full import FullFineTuning
from hadamard_lit.adapters.hadamard_adapter import HadamardAdapter, HadamardAdapterLinear
from hadamard_lit.adapters.head_only import HeadOnly
from hadamard_lit.adapters.hut import HUT, HUTLinear
from hadamard_lit.adapters.ia3 import IA3, IA3Linear
from hadamard_lit.adapters.lora import LoRA, LoRALinear
from hadamard_lit.adapters.roles import ROLES, Architecture
from hadamard_lit.adapters.state import (
    adapter_layers,
    adapter_state_dict,
    check_adapter_state,
    count_parameters,
    count_trainable_parameters,
    load_adapter_state_dict,
)

__all__ = [
    "ARCHITECTURES",
    "HUT",
    "IA3",
    "ROLES",
    "AdaDHP",
    "AdapterLayer",
    "AdapterRecord",
    "AdapterStrategy",
    "Architecture",
    "DualHadamardLinear",
    "FullFineTuning",
    "HUTLinear",
    "HadamardAdapter",
    "HadamardAdapterLinear",
    "HeadOnly",
    "IA3Linear",
    "LoRA",
    "LoRALinear",
    "adapter_layers",
    "adapter_state_dict",
    "architecture_of",
    "check_adapter_state",
    "count_parameters",
    "count_trainable_parameters",
    "get_adapter_record",
    "get_architecture",
    "load_adapter_state_dict",
    "supported_model_types",
]
