"""Data for hadamard_lit: the NLU task registry, the datamodules, answer extraction.

- :mod:`~hadamard_lit.data.tasks`: :class:`TaskSpec` for each of the 17 NLU tasks
  (prompts, verbalisers, parsing of generations, metrics to use);
- :class:`NLUDataModule`: a task for T5 (text-to-text) or an encoder (classification),
  under the paper's split protocol;
- :class:`MathDataModule`: GSM8K / SVAMP / MATH / MetaMathQA for a decoder LM;
- :mod:`~hadamard_lit.data.answers`: final-answer extraction and normalisation;
- :func:`resolve_data_dir`: ``package:sst2_sample`` and other data folders.
"""

from hadamard_lit.data.answers import (
    extract_boxed_answer,
    extract_gsm8k_answer,
    extract_last_number,
    normalize_answer,
    normalize_number,
)
from hadamard_lit.data.collate import PadCollator
from hadamard_lit.data.math import MathDataModule
from hadamard_lit.data.nlu import NLUDataModule
from hadamard_lit.data.sources import resolve_data_dir
from hadamard_lit.data.tasks import TASKS, TaskSpec, get_task, task_names

__all__ = [
    "TASKS",
    "MathDataModule",
    "NLUDataModule",
    "PadCollator",
    "TaskSpec",
    "extract_boxed_answer",
    "extract_gsm8k_answer",
    "extract_last_number",
    "get_task",
    "normalize_answer",
    "normalize_number",
    "resolve_data_dir",
    "task_names",
]
