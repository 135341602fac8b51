"""slurm/local_cluster.sh cleans up after itself: after ``stop`` no daemon it started is
still running and its state folder is gone (a test suite must leave nothing behind).

Runs before tests/slurm/test_slurm.py (file order), whose fixture starts its own cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.paths import REPO

SCRIPT = REPO / "slurm" / "local_cluster.sh"
DAEMONS = ("munged", "slurmctld", "slurmd", "slurmstepd")

pytestmark = pytest.mark.slurm


def live_daemons() -> set[tuple[int, str]]:
    """(pid, name) of every live (not zombie) SLURM or munge daemon on this host."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,stat=,comm="], capture_output=True, text=True, check=True
    ).stdout
    found = set()
    for line in out.splitlines():
        pid, state, name = line.split(None, 2)
        if name.strip() in DAEMONS and not state.startswith("Z"):
            found.add((int(pid), name.strip()))
    return found


def test_stop_leaves_no_daemon_and_no_folder_behind(tmp_path: Path) -> None:
    if not all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "munged")):
        pytest.skip("needs SLURM and munge (slurm/local_cluster.sh install)")
    if os.geteuid() != 0:
        pytest.skip("starting the local cluster needs root")
    before = live_daemons()
    if any(name in ("slurmctld", "slurmd") for _, name in before):
        pytest.skip("a SLURM cluster is already running here; this test starts its own")
    state = tmp_path / "cluster"
    env = {**os.environ, "HADAMARD_LIT_SLURM_DIR": str(state)}
    subprocess.run([str(SCRIPT), "start"], env=env, check=True, timeout=120)
    try:
        started = live_daemons() - before
        assert {name for _, name in started} >= {"slurmctld", "slurmd"}
        conf = {**env, "SLURM_CONF": str(state / "slurm.conf")}
        job = subprocess.run(
            ["srun", "--time=1", "true"], env=conf, capture_output=True, text=True, timeout=60
        )
        assert job.returncode == 0, job.stderr
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=True, timeout=120)
    assert live_daemons() <= before, f"left running: {live_daemons() - before}"
    assert not state.exists(), f"left behind: {sorted(p.name for p in state.iterdir())}"
