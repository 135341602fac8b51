"""Full fine-tuning as a strategy, so the baseline runs through the same modules and CLI."""

from __future__ import annotations

from typing import Any

from torch import nn

from hadamard_lit.adapters.base import (
    AdapterLayer,
    AdapterRecord,
    AdapterStrategy,
    _set_record,
    get_adapter_record,
)


class FullFineTuning(AdapterStrategy):
    """Train every parameter. ``merge`` is a no-op; the "adapter" state dict is the model's."""

    def __init__(self) -> None:
        super().__init__(target_modules=None, modules_to_save=None)

    def make_layer(
        self, name: str, base: nn.Module, **options: Any
    ) -> AdapterLayer:  # pragma: no cover
        raise NotImplementedError("FullFineTuning injects no layers")

    def apply(self, model: nn.Module) -> list[str]:
        """Unfreeze ``model``; return the names of the modules that own parameters."""
        if get_adapter_record(model, required=False) is not None:
            raise ValueError(
                f"{type(model).__name__} already has "
                f"{get_adapter_record(model).strategy.name} applied; apply "
                f"{self.name} to a freshly loaded model instead"
            )
        model.requires_grad_(True)
        owners = [
            n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))
        ]
        record = AdapterRecord(strategy=self, adapted=owners, modules_to_save=[])
        record.trained_parameters = [n for n, _ in model.named_parameters()]
        _set_record(model, record)
        return owners

    def merge(self, model: nn.Module) -> nn.Module:
        get_adapter_record(model)
        _set_record(model, None)
        return model
