"""How a job that a signal ends says so in its ``results.json`` (see :mod:`run_status`).

Three signals end a training job on SLURM:

* **USR2**, submitit's requeue signal (``sbatch --signal=USR2@90``, ``submit``'s
  ``--signal_delay_s``): submitit calls :meth:`TrainingJob.checkpoint`, requeues the job
  and exits. **USR1**, the signal Lightning's own SLURM support uses, is handled the same
  way under ``submit`` (:func:`usr1_requeues_like_usr2`).
* **SIGTERM**: ``scancel``, preemption and ``scontrol requeue`` all send it first; under
  submitit the job waits a few seconds for a preemption's USR2
  (:func:`sigterm_waits_for_usr2`), then Lightning stops at the next batch. Whether SLURM
  requeued the job is asked of SLURM then (:func:`slurm_requeued`: the job's restart count
  went up).
* USR1 outside ``submit``, where nothing would requeue it, ends the run as
  :class:`StoppedBySignal` instead of killing the process without a record.

:func:`recording_signals` notes which of them arrived; :func:`ending` turns the exception
the run ended with into its final status.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from hadamard_lit.run_status import FAILED, REQUEUED, STOPPED, slurm_job_id


class StoppedBySignal(RuntimeError):
    """A signal ended the run, and nothing will requeue it."""


@dataclass
class SignalRecord:
    """The signals this process received during a run."""

    received: list[str] = field(default_factory=list)
    #: Set when submitit asked the job to checkpoint for a requeue: the signal's name.
    requeue_signal: str | None = None


#: This process's record (a job process runs one training run at a time).
RECORD = SignalRecord()


def _noting(name: str, then: Any) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        RECORD.received.append(name)
        if callable(then):
            then(signum, frame)

    return handler


def _stop(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name.removeprefix("SIG")
    RECORD.received.append(name)
    raise StoppedBySignal(f"killed by signal {name}")


@contextlib.contextmanager
def recording_signals() -> Iterator[SignalRecord]:
    """Note SIGTERM, and turn an unhandled USR1 into :class:`StoppedBySignal`, for the block.

    Lightning's own SIGTERM handler, installed when fitting starts, calls the one found
    here too, so the note survives it. Only in the main thread (where signals arrive).
    """
    RECORD.received.clear()
    RECORD.requeue_signal = None
    if threading.current_thread() is not threading.main_thread():
        yield RECORD
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    signal.signal(signal.SIGTERM, _noting("SIGTERM", previous[signal.SIGTERM]))
    if previous[signal.SIGUSR1] in (signal.SIG_DFL, None):
        signal.signal(signal.SIGUSR1, _stop)
    try:
        yield RECORD
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def usr1_requeues_like_usr2() -> Iterator[None]:
    """Under submitit: USR1 does what submitit's USR2 handler does (checkpoint, requeue)."""
    usr2 = signal.getsignal(signal.SIGUSR2)
    if threading.current_thread() is not threading.main_thread() or not callable(usr2):
        yield
        return
    previous = signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, _noting("USR1", usr2))
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous if previous is not None else signal.SIG_DFL)


#: How long a SIGTERM under submitit waits for the USR2 that a preemption sends after it
#: (``HADAMARD_LIT_PREEMPTION_GRACE_S`` in the job's environment overrides it).
PREEMPTION_GRACE_S = 5.0


def preemption_grace_s() -> float:
    """:data:`PREEMPTION_GRACE_S`, or the job environment's override.

    Raises:
        ValueError: the override is not a number of seconds >= 0 (said when the job
            starts, not ignored).
    """
    value = os.environ.get("HADAMARD_LIT_PREEMPTION_GRACE_S")
    if value is None:
        return PREEMPTION_GRACE_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(
            f"HADAMARD_LIT_PREEMPTION_GRACE_S={value!r}: expected a number of seconds >= 0 "
            f"(unset: {PREEMPTION_GRACE_S})"
        )
    return seconds


@contextlib.contextmanager
def sigterm_waits_for_usr2(grace_s: float | None = None) -> Iterator[None]:
    """Under submitit: after a SIGTERM, give the preemption's USR2 ``grace_s`` to arrive.

    A preemption sends SIGTERM, then USR2; slurmd may deliver the second a second or more
    later. Lightning stops at the next batch on SIGTERM, so without the wait a run with
    fast batches ends ``stopped`` before USR2 arrives, and nothing requeues it. When USR2
    comes during the wait, submitit's handler runs inside this one (checkpoint, requeue,
    exit). ``scancel`` and ``scontrol requeue`` send no USR2 and cost ``grace_s`` (SLURM's
    KillWait, 30 s by default, is far longer).

    Only the first SIGTERM waits, and none once the requeue has begun
    (:func:`note_requeue`, called from submitit's USR2 handler): the requeue itself makes
    SLURM send the job another SIGTERM, and a second wait there would run past KillWait,
    so SLURM's SIGKILL would end the job before it writes its ``requeued`` record.
    """
    if threading.current_thread() is not threading.main_thread() or not callable(
        signal.getsignal(signal.SIGUSR2)
    ):
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    wait = preemption_grace_s() if grace_s is None else grace_s

    waited = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal waited
        if callable(previous):
            previous(signum, frame)  # submitit's: it notes and bypasses SIGTERM
        if waited or RECORD.requeue_signal is not None:
            return
        waited = True
        time.sleep(wait)  # a USR2 handler that requeues raises SystemExit out of here

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def note_requeue() -> None:
    """Called by :meth:`TrainingJob.checkpoint`: submitit is about to requeue the job (on
    USR2, its signal, or USR1 passed on to it)."""
    RECORD.requeue_signal = "USR1" if "USR1" in RECORD.received else "USR2"


def slurm_requeued() -> bool:
    """Whether SLURM has requeued this job (its restart count is above this attempt's)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    found = re.search(r"\bRestarts=(\d+)", out)
    return found is not None and int(found.group(1)) > int(
        os.environ.get("SLURM_RESTART_COUNT", "0")
    )


def ending(error: BaseException, step: int | None) -> dict[str, Any]:
    """The final status, and what to say, of a run that ended with ``error``."""
    at = f" at step {step}" if step is not None else ""
    resumes = "it resumes from checkpoints/last.ckpt when SLURM runs it again"
    if RECORD.requeue_signal is not None:
        # submitit exits (SystemExit) only after `scontrol requeue` succeeded; anything else
        # (the requeue command failed or was killed, or the job timed out too many times)
        # means no new attempt will come, so the record must not say it will.
        if isinstance(error, SystemExit) or slurm_requeued():
            return {
                "status": REQUEUED,
                "error": f"requeued by signal {RECORD.requeue_signal}{at} (timed out or "
                f"preempted): {resumes}",
            }
        return {
            "status": FAILED,
            "error": f"signal {RECORD.requeue_signal}{at} asked for a requeue, but it did not "
            f"happen ({type(error).__name__}: {error}); resubmit with `submit --resume` to "
            "continue from checkpoints/last.ckpt",
            "traceback": traceback.format_exc(),
        }
    if "SIGTERM" in RECORD.received:
        if slurm_requeued():
            return {
                "status": REQUEUED,
                "error": f"requeued by SLURM (SIGTERM{at}: preempted or scontrol requeue): "
                f"{resumes}",
            }
        job = slurm_job_id()
        return {
            "status": STOPPED,
            "error": f"stopped by SIGTERM{at}"
            + (f" (SLURM job {job}: scancel or the time limit)" if job else ""),
        }
    if isinstance(error, StoppedBySignal):
        return {
            "status": STOPPED,
            "error": f"{error}{at}. Only submitit's USR2 (and USR1 under `submit`) requeues a "
            "job; sbatch --signal=USR2@90 asks for it before the time limit",
        }
    return {
        "status": FAILED,
        "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exc(),
    }
