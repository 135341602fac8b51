"""Lightning callbacks: AdaDHP's adaptive parameter selection and its checkpoint helper."""

from hadamard_lit.callbacks.adaptive_selection import (
    AdaptiveSelection,
    cubic_budget,
    find_adapted_model,
)
from hadamard_lit.callbacks.selection_checkpoint import SelectionAwareCheckpoint
from hadamard_lit.callbacks.selection_plot import plot_selection

__all__ = [
    "AdaptiveSelection",
    "SelectionAwareCheckpoint",
    "cubic_budget",
    "find_adapted_model",
    "plot_selection",
]
