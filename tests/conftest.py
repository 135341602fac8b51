"""Shared test set-up: offline Hugging Face, small thread counts, tiny model configs."""

import os

# Hub look-ups of names that are not local folders retry for ~23 s before failing offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
