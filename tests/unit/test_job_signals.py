"""What a run that a signal ended records (job_signals.ending), without a cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from hadamard_lit import job_signals
from hadamard_lit.run_status import FAILED, REQUEUED, STOPPED


@pytest.fixture
def usr2_asked_for_a_requeue(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)  # slurm_requeued() cannot say yes
    monkeypatch.setattr(job_signals, "RECORD", job_signals.SignalRecord(received=["USR2"]))
    job_signals.note_requeue()
    return job_signals.RECORD


def test_submitit_exit_after_the_requeue_reads_requeued(usr2_asked_for_a_requeue) -> None:
    record = job_signals.ending(SystemExit(-1), step=5)
    assert record["status"] == REQUEUED
    assert record["error"].startswith("requeued by signal USR2 at step 5")


@pytest.mark.parametrize(
    "error",
    [
        # The requeue command killed by the preemption's own SIGTERM (seen on a real cluster).
        subprocess.CalledProcessError(-15, ["scontrol", "requeue", "8"]),
        # submitit gives up after too many timeouts.
        RuntimeError("Job not requeued because: timed-out too many times."),
    ],
)
def test_a_requeue_that_did_not_happen_never_reads_requeued(
    usr2_asked_for_a_requeue, error: BaseException
) -> None:
    record = job_signals.ending(error, step=5)
    assert record["status"] == FAILED
    assert "asked for a requeue, but it did not happen" in record["error"]
    assert type(error).__name__ in record["error"] and "submit --resume" in record["error"]


def test_sigterm_without_slurm_reads_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(job_signals, "RECORD", job_signals.SignalRecord(received=["SIGTERM"]))
    record = job_signals.ending(KeyboardInterrupt(), step=3)
    assert record == {"status": STOPPED, "error": "stopped by SIGTERM at step 3"}


@pytest.fixture
def submitit_like_usr2(monkeypatch: pytest.MonkeyPatch):
    """A USR2 handler that requeues and exits, as submitit's does; restored afterwards."""
    calls: list[str] = []

    def requeue_and_exit(signum, frame) -> None:
        calls.append("requeue")
        raise SystemExit(-1)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR2, signal.SIGTERM)}
    signal.signal(signal.SIGUSR2, requeue_and_exit)
    signal.signal(signal.SIGTERM, lambda signum, frame: calls.append("bypass SIGTERM"))
    yield calls
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _sigterm_then_usr2_requeues(grace_s: float = 30) -> float:
    """SIGTERM, then USR2 0.3 s later, as a preemption sends them; the seconds until the
    USR2 handler's SystemExit ended the block."""
    later = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR2))
    started = time.monotonic()
    try:
        with job_signals.sigterm_waits_for_usr2(grace_s=grace_s), pytest.raises(SystemExit):
            later.start()
            # Only the SIGTERM handler's wait is between here and the block's end: without
            # it, the USR2 would come after the block and nothing would raise.
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        later.cancel()
    return time.monotonic() - started


def test_sigterm_under_submitit_waits_for_the_preemptions_usr2(submitit_like_usr2) -> None:
    assert _sigterm_then_usr2_requeues() < 10
    assert submitit_like_usr2 == ["bypass SIGTERM", "requeue"]


def test_sigterm_without_usr2_goes_on_after_the_grace(submitit_like_usr2) -> None:
    started = time.monotonic()
    with job_signals.sigterm_waits_for_usr2(grace_s=0.3):
        os.kill(os.getpid(), signal.SIGTERM)
    assert 0.3 <= time.monotonic() - started < 10
    assert submitit_like_usr2 == ["bypass SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the previous one, restored


def test_the_grace_comes_from_the_job_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HADAMARD_LIT_PREEMPTION_GRACE_S", "30")
    assert job_signals.preemption_grace_s() == 30.0
    monkeypatch.delenv("HADAMARD_LIT_PREEMPTION_GRACE_S")
    assert job_signals.preemption_grace_s() == job_signals.PREEMPTION_GRACE_S
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("HADAMARD_LIT_PREEMPTION_GRACE_S", bad)
        with pytest.raises(ValueError, match=f"HADAMARD_LIT_PREEMPTION_GRACE_S='{bad}'"):
            job_signals.preemption_grace_s()


def test_the_requeues_own_sigterm_does_not_wait_again(
    submitit_like_usr2, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scontrol requeue`` makes SLURM send the job a second SIGTERM while it exits; a
    second wait would outlast KillWait, and SIGKILL would come before the job's record."""
    monkeypatch.setattr(job_signals, "RECORD", job_signals.SignalRecord())

    def requeue_then_sigterm_and_exit(signum, frame) -> None:
        submitit_like_usr2.append("requeue")
        job_signals.note_requeue()  # what TrainingJob.checkpoint does
        os.kill(os.getpid(), signal.SIGTERM)  # SLURM ends the requeued attempt
        raise SystemExit(-1)

    signal.signal(signal.SIGUSR2, requeue_then_sigterm_and_exit)
    assert _sigterm_then_usr2_requeues() < 10
    assert submitit_like_usr2 == ["bypass SIGTERM", "requeue", "bypass SIGTERM"]


def test_only_the_first_sigterm_waits(submitit_like_usr2) -> None:
    started = time.monotonic()
    with job_signals.sigterm_waits_for_usr2(grace_s=1.0):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
    assert 1.0 <= time.monotonic() - started < 2.5
    assert submitit_like_usr2 == ["bypass SIGTERM"] * 3
