"""Where the repository, the tests and the read-only shared data are."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
T5_TOKENIZER = SHARED / "models" / "t5-tokenizer"
