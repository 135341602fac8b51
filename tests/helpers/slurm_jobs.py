"""Imported by the job processes of tests/test_slurm.py (tests/ is on their PYTHONPATH)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lightning.pytorch import Callback


class SlowDown(Callback):
    """Sleeps after every training batch, so a test can signal a job while it trains."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args: object, **kwargs: object) -> None:
        time.sleep(self.seconds)


class WaitForFailure(Callback):
    """Holds a run at the start of training until another run's ``results.json`` reads
    ``failed``, then ``then_s`` more (a few of the client's polls), so a test that checks
    which of the two the client reports first does not depend on the machine's load."""

    def __init__(self, results: str, then_s: float = 6.0, timeout_s: float = 200.0) -> None:
        self.results, self.then_s, self.timeout_s = Path(results), then_s, timeout_s

    def on_train_start(self, *args: object, **kwargs: object) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self._failed():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.results} did not read 'failed' in {self.timeout_s} s")
            time.sleep(0.5)
        time.sleep(self.then_s)

    def _failed(self) -> bool:
        try:
            return json.loads(self.results.read_text()).get("status") == "failed"
        except (OSError, ValueError):
            return False


def die_without_a_result() -> None:
    """Ends the process the way an OOM kill would: no result for submitit to read."""
    os._exit(3)
