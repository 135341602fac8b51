"""Lightning callbacks: AdaDHP's adaptive parameter selection and its checkpoint helper.

The selection in three parts: :mod:`~hadamard_lit.callbacks.selection_schedule` (the
budget), :mod:`~hadamard_lit.callbacks.importance` (scores and removals, usable without a
Trainer) and :class:`AdaptiveSelection` (the callback that binds them to a fit).
"""

from hadamard_lit.callbacks.adaptive_selection import AdaptiveSelection, find_adapted_model
from hadamard_lit.callbacks.divergence import DivergenceGuard, TrainingDiverged
from hadamard_lit.callbacks.importance import ImportanceTracker
from hadamard_lit.callbacks.last_checkpoint import LastCheckpoint
from hadamard_lit.callbacks.predictions import PredictionWriter
from hadamard_lit.callbacks.selection_checkpoint import SelectionAwareCheckpoint
from hadamard_lit.callbacks.selection_plot import SelectionPicture, plot_selection
from hadamard_lit.callbacks.selection_schedule import CubicSchedule, ScheduleSpec, cubic_budget

__all__ = [
    "AdaptiveSelection",
    "CubicSchedule",
    "DivergenceGuard",
    "ImportanceTracker",
    "LastCheckpoint",
    "PredictionWriter",
    "ScheduleSpec",
    "SelectionAwareCheckpoint",
    "SelectionPicture",
    "TrainingDiverged",
    "cubic_budget",
    "find_adapted_model",
    "plot_selection",
]
