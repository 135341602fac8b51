"""Imported by the job processes of tests/test_slurm.py (tests/ is on their PYTHONPATH)."""

from __future__ import annotations

import os
import time

from lightning.pytorch import Callback


class SlowDown(Callback):
    """Sleeps after every training batch, so a test can signal a job while it trains."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args: object, **kwargs: object) -> None:
        time.sleep(self.seconds)


def die_without_a_result() -> None:
    """Ends the process the way an OOM kill would: no result for submitit to read."""
    os._exit(3)
