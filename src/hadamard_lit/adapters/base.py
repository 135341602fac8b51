"""What every adapter strategy shares: the adapted layer, the strategy, and free functions.

A strategy's ``apply(model)`` replaces each targeted ``nn.Linear``/``Conv1D`` *in place*
by an :class:`AdapterLayer` that adopts the original ``weight`` and ``bias`` parameters
(same objects, same state-dict keys) and adds its adapter tensors, freezes everything
else, and records on the model which parameters it trains. Nothing wraps the model: the
user's ``T5ForConditionalGeneration`` stays one, with ``generate``, ``save_pretrained``
and every attribute as before.

The record (:class:`AdapterRecord`, at ``model.hadamard_lit_adapter``) is what
:func:`adapter_state_dict` and :func:`load_adapter_state_dict` select by; parameter names
are never matched by substring.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from hadamard_lit.adapters.architectures import architecture_of
from hadamard_lit.adapters.roles import Architecture, expand_roles
from hadamard_lit.adapters.targets import check_patterns, default_modules_to_save, find_targets
from hadamard_lit.parallel.tensors import full_shape

RECORD_ATTR = "hadamard_lit_adapter"

log = logging.getLogger(__name__)


@dataclass
class AdapterRecord:
    """What a strategy did to a model, kept on the model as ``model.hadamard_lit_adapter``.

    Attributes:
        strategy: the strategy object that was applied.
        adapted: names of the modules replaced by adapter layers.
        modules_to_save: names of modules trained in full (e.g. the task head).
        trained_parameters: full names of every parameter the strategy trains: adapter
            tensors, plus the parameters of ``modules_to_save`` and any the method trains
            with them (the Hadamard Adapter's normalisation layers).
    """

    strategy: AdapterStrategy
    adapted: list[str]
    modules_to_save: list[str]
    trained_parameters: list[str] = field(default_factory=list)


class AdapterLayer(nn.Module, ABC):
    """A frozen linear layer plus adapter tensors.

    It adopts the base layer's ``weight`` and ``bias`` parameters, so code that reads
    ``module.weight`` (T5's gated FFN does) and sharded strategies that gather a module's
    own parameters (DeepSpeed ZeRO-3, FSDP) see them where they expect.

    Subclasses create their adapter parameters in ``__init__``, list their names in
    ``adapter_parameter_names`` and implement ``forward``, ``merged_weight_and_bias`` and
    ``reset_adapter``.
    """

    adapter_parameter_names: tuple[str, ...] = ()

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        if not isinstance(base, (nn.Linear, Conv1D)):
            raise TypeError(f"Can only adapt nn.Linear or Conv1D, got {type(base).__name__}")
        # Conv1D (GPT-2) stores its weight as (in, out); everything here works on (out, in).
        self.transposed = isinstance(base, Conv1D)
        self.weight = base.weight
        self.bias = base.bias
        # Under DeepSpeed ZeRO-3 (zero.Init) the weight is a 1-D shard of this shape.
        shape = full_shape(self.weight)
        out_features, in_features = shape[::-1] if self.transposed else shape
        self.in_features = in_features
        self.out_features = out_features

    @property
    def linear_weight(self) -> Tensor:
        """The frozen weight as ``(out, in)`` (a view for ``Conv1D``)."""
        return self.weight.t() if self.transposed else self.weight

    def new_vector(self, size: int, fill: float) -> nn.Parameter:
        """An adapter vector on the base weight's device and in its dtype."""
        return nn.Parameter(
            torch.full((size,), fill, device=self.weight.device, dtype=self.weight.dtype)
        )

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """This layer's adapter tensors by local name."""
        return {name: getattr(self, name) for name in self.adapter_parameter_names}

    @abstractmethod
    def merged_weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        """The ``(out, in)`` weight and bias that compute what this layer computes.

        Raises:
            ValueError: the adapter cannot be folded into a plain layer.
        """

    @abstractmethod
    def reset_adapter(self) -> None:
        """Set the adapter tensors so the layer computes exactly its base layer."""

    def merged(self) -> nn.Module:
        """A plain ``nn.Linear``/``Conv1D`` with the adapter folded in."""
        with torch.no_grad():
            weight, bias = self.merged_weight_and_bias()
        with torch.device("meta"):
            plain: nn.Module = (
                Conv1D(self.out_features, self.in_features)
                if self.transposed
                else nn.Linear(self.in_features, self.out_features, bias=bias is not None)
            )
        stored = weight.t() if self.transposed else weight
        plain.weight = nn.Parameter(
            stored.to(self.weight.dtype).contiguous(), requires_grad=self.weight.requires_grad
        )
        if bias is not None:
            requires_grad = self.bias is not None and self.bias.requires_grad
            plain.bias = nn.Parameter(bias.to(self.weight.dtype), requires_grad=requires_grad)
        elif self.transposed:
            raise ValueError("Conv1D always has a bias; merged_weight_and_bias returned none")
        return plain

    def extra_repr(self) -> str:
        kind = "Conv1D" if self.transposed else "Linear"
        return (
            f"{kind}(in={self.in_features}, out={self.out_features}, bias={self.bias is not None})"
        )


class AdapterStrategy(ABC):
    """Base of every method: pick targets, inject layers, freeze, record, merge.

    Args:
        target_modules: module-name patterns to adapt (dotted suffixes, or ``re:<regex>``);
            ``None`` adapts the layers playing the method's default roles in the model's
            architecture (:mod:`hadamard_lit.adapters.architectures`).
        modules_to_save: modules trained in full alongside the adapters (a task head);
            ``None`` picks the model's classification head if it has one, ``[]`` none.
    """

    #: The roles adapted by default (see :mod:`hadamard_lit.adapters.roles`).
    default_roles: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        target_modules: list[str] | None = None,
        modules_to_save: list[str] | None = None,
    ) -> None:
        if target_modules is not None and not target_modules:
            raise ValueError("target_modules is empty: pass None for the defaults, or patterns")
        if target_modules is not None:
            check_patterns("target_modules", target_modules)
        self.target_modules = target_modules
        self.modules_to_save = modules_to_save

    @property
    def name(self) -> str:
        return type(self).__name__

    def init_args(self) -> dict[str, Any]:
        """This strategy's ``__init__`` arguments, read back from its attributes.

        The contract every strategy keeps: each ``__init__`` argument is stored under an
        attribute of the same name. A checkpoint records the strategy as
        ``class_path``/``init_args`` from it (``hadamard_lit.modules.hparams``), and ``repr``
        shows it.

        Raises:
            TypeError: a subclass breaks the contract (the message names the argument).
        """
        args: dict[str, Any] = {}
        for name, param in inspect.signature(type(self).__init__).parameters.items():
            if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if not hasattr(self, name):
                raise TypeError(
                    f"{self.name}.__init__ takes {name!r} but the strategy keeps no attribute "
                    f"{name!r}: every strategy stores each __init__ argument as self.<name>, "
                    "so checkpoints can rebuild it"
                )
            args[name] = getattr(self, name)
        return args

    # -- what subclasses provide ---------------------------------------------------------

    @abstractmethod
    def make_layer(self, name: str, base: nn.Module, **options: Any) -> AdapterLayer:
        """The adapter layer that replaces the linear layer ``name``.

        ``options`` are what :meth:`layer_options` gave for ``name``.
        """

    def roles_for(self, architecture: Architecture) -> tuple[str, ...]:
        """The roles adapted by default in ``architecture`` (a hook: AdaDHP's vary by family)."""
        return self.default_roles

    def layer_options(self, model: nn.Module, targets: list[str]) -> dict[str, dict[str, Any]]:
        """Per target, keyword arguments for :meth:`make_layer` ((IA)3: which scale)."""
        return {}

    def extra_trainable_modules(self, model: nn.Module, adapted: list[str]) -> list[str]:
        """Modules trained in full because the method says so (none by default)."""
        return []

    def select_targets(self, model: nn.Module, exclude: list[str]) -> list[str]:
        """Names of the linear layers to adapt: ``target_modules``'s, or the default roles'.

        Raises:
            ValueError: a pattern selects nothing, or the defaults find nothing to adapt.
        """
        if self.target_modules is not None:
            return find_targets(model, list(self.target_modules), exclude)
        architecture = architecture_of(model)
        roles = self.roles_for(architecture)
        found = architecture.modules_for(model, roles, exclude)
        if not found:
            raise ValueError(
                f"{self.name}'s default roles {list(roles)} match no linear layer of "
                f"{type(model).__name__} ({architecture.name}); pass target_modules"
            )
        _log_defaults(self.name, model, architecture, roles, found)
        return list(found)

    # -- the public API ------------------------------------------------------------------

    def target_names(self, model: nn.Module) -> list[str]:
        """The modules :meth:`apply` would adapt in ``model`` (nothing is changed)."""
        return self.select_targets(model, exclude=self._modules_to_save(model))

    def apply(self, model: nn.Module) -> list[str]:
        """Inject this method into ``model`` in place; return the adapted module names.

        Everything the method does not train is frozen.

        Raises:
            ValueError: the model already has a strategy applied, a pattern selects
                nothing, or a named module to save does not exist.
        """
        if get_adapter_record(model, required=False) is not None or any(
            isinstance(m, AdapterLayer) for m in model.modules()
        ):
            applied = get_adapter_record(model, required=False)
            raise ValueError(
                f"{type(model).__name__} already has "
                f"{applied.strategy.name if applied else 'an adapter strategy'} applied; "
                f"apply {self.name} to a freshly loaded model instead"
            )
        saved = self._modules_to_save(model)
        adapted = self.select_targets(model, exclude=saved)
        extra = self.extra_trainable_modules(model, adapted)
        options = self.layer_options(model, adapted)

        model.requires_grad_(False)
        for name in adapted:
            layer = self.make_layer(name, model.get_submodule(name), **options.get(name, {}))
            layer.weight.requires_grad_(False)
            if layer.bias is not None:
                layer.bias.requires_grad_(False)
            _replace_module(model, name, layer)
        for name in saved + extra:
            model.get_submodule(name).requires_grad_(True)

        record = AdapterRecord(strategy=self, adapted=adapted, modules_to_save=saved)
        record.trained_parameters = [n for n, p in model.named_parameters() if p.requires_grad]
        _set_record(model, record)
        return adapted

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold every adapter layer into a plain ``nn.Linear``/``Conv1D``; return ``model``.

        The result is a standard transformers model: ``save_pretrained`` and
        ``from_pretrained`` round-trip it, and it runs with no adapter overhead. Nothing
        changes if any layer cannot be merged (the error says which and why).
        """
        get_adapter_record(model)
        layers = {n: m for n, m in model.named_modules() if isinstance(m, AdapterLayer)}
        plain = {name: layer.merged() for name, layer in layers.items()}  # may raise: all first
        for name, module in plain.items():
            _replace_module(model, name, module)
        _set_record(model, None)
        return model

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.init_args().items())
        return f"{self.name}({fields})"

    def _modules_to_save(self, model: nn.Module) -> list[str]:
        if self.modules_to_save is None:
            return default_modules_to_save(model)
        names = dict(model.named_modules())
        missing = [n for n in self.modules_to_save if n not in names]
        if missing:
            tops = [n for n in names if n and "." not in n]
            raise ValueError(
                f"modules_to_save names {missing}, which {type(model).__name__} does not "
                f"have; its top-level modules are {tops}"
            )
        return list(self.modules_to_save)


def _log_defaults(
    method: str, model: nn.Module, architecture: Architecture, roles: tuple[str, ...],
    found: dict[str, str],
) -> None:  # fmt: skip
    """One line of what the defaults adapt, and what they asked for but the model lacks."""
    counts: dict[str, int] = {}
    for role in found.values():
        counts[role] = counts.get(role, 0) + 1
    summary = ", ".join(f"{role} x{n}" for role, n in counts.items())
    # A whole group asked for (say the FFN) that the entry names but this model lacks, as
    # Mixtral's fused experts: say so. One absent alternative (T5's wi vs wi_0) is normal.
    asked = [r for r in expand_roles(roles) if r in architecture.roles]
    groups = {r.split(".")[0] for r in asked}
    empty = sorted(g for g in groups if not any(r.split(".")[0] == g for r in counts))
    missing = [r for r in asked if r.split(".")[0] in empty]
    if missing:
        log.warning(
            "%s on %s (%s): adapts %s; nothing plays %s in this model%s",
            method, type(model).__name__, architecture.name, summary, missing,
            f" ({architecture.notes})" if architecture.notes else "",
        )  # fmt: skip
    else:
        log.info(
            "%s on %s (%s): adapts %s", method, type(model).__name__, architecture.name, summary
        )


# -- free functions --------------------------------------------------------------------


def get_adapter_record(model: nn.Module, required: bool = True) -> AdapterRecord | Any:
    """The :class:`AdapterRecord` of ``model`` (None, or an error if ``required``)."""
    record = model.__dict__.get(RECORD_ATTR)
    if record is None and required:
        raise ValueError(
            f"{type(model).__name__} has no adapter strategy applied: call "
            "`strategy.apply(model)` first (e.g. AdaDHP().apply(model))"
        )
    return record


def find_adapted_model(root: nn.Module) -> nn.Module:
    """The first module under ``root`` (itself included) that has an adapter strategy applied.

    Raises:
        ValueError: none has; the message says how to apply one.
    """
    for module in root.modules():
        if get_adapter_record(module, required=False) is not None:
            return module
    raise ValueError(
        f"Found no adapter strategy applied in {type(root).__name__}: "
        "apply one (e.g. `AdaDHP().apply(model)`) to the transformers model the "
        "LightningModule trains, in `__init__` or `configure_model`"
    )


def _set_record(model: nn.Module, record: AdapterRecord | None) -> None:
    # Stored in __dict__ directly: it is bookkeeping, not a submodule or parameter.
    if record is None:
        model.__dict__.pop(RECORD_ATTR, None)
    else:
        model.__dict__[RECORD_ATTR] = record


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
