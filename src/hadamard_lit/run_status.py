"""A run's status: what its ``results.json`` records, and what is really the case.

:func:`hadamard_lit.launch.run` writes ``results.json`` when it starts (``running``, with
where it runs: host, process id, SLURM job id) and once more when it ends:

``completed``
    trained (and tested); the metrics are in the record.
``failed``
    an error; ``error`` and ``traceback`` say which.
``requeued``
    SLURM will run it again and it resumes from ``checkpoints/last.ckpt``: submitit's
    requeue signal (USR2, also USR1 under ``submit``), or ``scontrol requeue`` and
    preemption (SIGTERM while SLURM requeues the job). A requeued task stays ``requeued``
    while SLURM holds it pending, and reads ``running`` again once it restarts.
``stopped``
    a signal ended it with no requeue (``scancel``, USR1 outside ``submit``); ``error``
    names the signal and the step.

A process killed outright (SIGKILL, out of memory, a node failure) writes nothing more, so
its record still says ``running``. :func:`observe` is how readers (``report``, ``submit
--wait``) tell a live run from a dead one: by its SLURM job's state where it has one, else
by its process id on this host. A dead one reads ``died``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterable
from typing import Any

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
REQUEUED = "requeued"
STOPPED = "stopped"
DIED = "died"
#: Statuses of a run that may still finish: not a failure (yet).
UNFINISHED = (RUNNING, REQUEUED)
#: SLURM job states of a job that is alive (running, or about to run again).
SLURM_ALIVE = {"RUNNING", "COMPLETING", "CONFIGURING", "PENDING", "REQUEUED", "RESIZING"}
SLURM_WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}


def slurm_job_id() -> str | None:
    """This process's SLURM job: ``<array job>_<task>`` for an array task, as squeue shows it."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def where_it_runs() -> dict[str, Any]:
    """What :func:`observe` needs to find the process again."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": slurm_job_id()}


def slurm_states(job_ids: Iterable[str | None]) -> dict[str, str] | None:
    """SLURM's state of each job still in its queue (recently ended ones included, for as
    long as the cluster keeps them); ``None`` where there is no ``squeue``."""
    wanted = sorted({j for j in job_ids if j})
    if not wanted or shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "-j", ",".join(wanted)],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = {}
    for line in out.splitlines():
        job, _, state = line.strip().partition("|")
        states[job] = state
    return states


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def observe(results: dict[str, Any], states: dict[str, str] | None = None) -> dict[str, Any]:
    """``results`` with the status that is true now.

    A ``running`` record whose SLURM job has ended (or is no longer listed), or whose
    process on this host is gone, is ``died``; one whose job SLURM holds pending again
    is ``requeued``; a ``requeued`` record whose job SLURM no longer lists is ``died``.

    Args:
        states: SLURM job states from :func:`slurm_states`, when checking many records at
            once (else squeue is asked here).
    """
    status = results.get("status")
    if status not in UNFINISHED:
        return results
    job = results.get("slurm_job_id")
    if job:
        if states is None:
            states = slurm_states([job])
        if states is None:  # no squeue here: the record is all there is to go on
            return results
        state = states.get(job)
        if state in SLURM_WAITING:
            return {**results, "status": REQUEUED}
        if state in SLURM_ALIVE:
            return results
        why = f"ended ({state})" if state else "is no longer in the queue"
        return {
            **results,
            "status": DIED,
            "error": f"its SLURM job {job} {why} without writing a result (killed outright: "
            "SIGKILL, out of memory, time limit, node failure?); see the job's log",
        }
    pid, host = results.get("pid"), results.get("host")
    alive = not isinstance(pid, int) or host != socket.gethostname() or _process_alive(pid)
    if status == RUNNING and not alive:
        return {
            **results,
            "status": DIED,
            "error": f"its process {pid} on {host} ended without writing a result "
            "(killed outright: SIGKILL, out of memory?)",
        }
    return results
