"""Where a split's rows come from: the Hugging Face Hub, or JSON Lines in the Hub's schema.

A local data folder mirrors ``../shared/data``: ``<data_dir>/<subdir>/<split>.jsonl`` with
the Hub dataset's own column names and label encodings, so both sources feed the same
preprocessing. ``package:<name>`` names a folder shipped inside hadamard_lit
(``resources/<name>``), e.g. ``package:sst2_sample`` for the offline quickstart.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Iterable
from pathlib import Path

from datasets import Dataset, load_dataset

log = logging.getLogger(__name__)

#: Prefix of a data folder shipped as package data (``hadamard_lit/resources/<name>``).
PACKAGE_PREFIX = "package:"


def packaged_data_dirs() -> list[str]:
    """Names of the data folders shipped in ``hadamard_lit/resources``."""
    root = importlib.resources.files("hadamard_lit").joinpath("resources")
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))


def resolve_data_dir(data_dir: str | Path) -> Path:
    """The folder ``data_dir`` names: a path, or ``package:<name>`` for shipped data.

    Raises:
        FileNotFoundError: the folder does not exist (for ``package:``, the message lists
            the shipped names).
    """
    text = str(data_dir)
    if text.startswith(PACKAGE_PREFIX):
        name = text[len(PACKAGE_PREFIX) :]
        folder = importlib.resources.files("hadamard_lit").joinpath("resources").joinpath(name)
        if not name or not folder.is_dir():
            raise FileNotFoundError(
                f"data_dir {text!r}: hadamard_lit ships no data folder {name!r}; "
                f"shipped: {packaged_data_dirs()}"
            )
        # Installed packages are plain folders (not zipped), so the Traversable is a path.
        return Path(str(folder))
    path = Path(text).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"data_dir {text!r} is not a folder")
    return path


def load_local_split(path: Path, what: str) -> Dataset:
    """One JSON Lines file as a ``Dataset`` (cached by ``datasets`` like any other).

    Args:
        path: ``<data_dir>/<subdir>/<split>.jsonl``.
        what: what the file is for, for the error message (e.g. ``"task 'rte', train split"``).

    Raises:
        FileNotFoundError: no such file; the message names ``what`` and the path expected.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: expected the file {path}, which does not exist (see the data folder's "
            "PROVENANCE.md for splits that were not collected, or leave data_dir unset to "
            "read the Hugging Face Hub)"
        )
    return load_dataset("json", data_files={"data": str(path)}, split="data")


def load_hub_split(path: str, config: str | None, split: str) -> Dataset:
    """One split of a Hub dataset (``split`` may combine splits: ``"train+test"``)."""
    return load_dataset(path, config, split=split)


def check_columns(dataset: Dataset, required: Iterable[str], what: str, source: str) -> None:
    """Raise a ``ValueError`` naming ``what``, ``source`` and the columns ``dataset`` lacks."""
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{what}: {source} lacks column(s) {missing} (it has {dataset.column_names}); "
            "local files must use the Hugging Face Hub dataset's column names"
        )
