"""Helpers for tests that run Lightning with several CPU processes (gloo).

* :func:`deepspeed_cpu_strategy`: Lightning's ``DeepSpeedStrategy`` refuses CPU ("only
  supported on CUDA GPUs"); this test-only subclass skips the CUDA checks so ZeRO-2/3 fit
  and validate on CPU. Not a user feature.
* :func:`run_script`: run a script that starts a multi-process Lightning fit (Lightning
  launches the other ranks by re-running the same command), with a small, offline
  environment, and fail with its output when it fails; :func:`run_python` the same for
  any ``python`` command line (``-m hadamard_lit fit ...``).
* :data:`requires_deepspeed`: a skip marker with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.paths import REPO, TESTS

#: Where the scripts the distributed tests start are.
HELPERS = TESTS / "helpers"

requires_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (pip install -e '.[deepspeed]')",
)


def torch_extensions_dir() -> str:
    """Where DeepSpeed compiles its ops (first use ~30 s), kept between runs."""
    return os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))


def deepspeed_cpu_strategy(stage: int, **kwargs: Any) -> Any:
    """A ``DeepSpeedStrategy`` (ZeRO ``stage``) that runs on CPU with gloo, for tests."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", torch_extensions_dir())
    import torch
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

    class CPUDeepSpeedStrategy(DeepSpeedStrategy):
        def setup_environment(self) -> None:
            # DeepSpeedStrategy's own refuses anything but CUDA.
            DDPStrategy.setup_environment(self)

        def setup_distributed(self) -> None:
            # As DeepSpeedStrategy's, without the CUDA device-index validation.
            from lightning.fabric.utilities.seed import reset_seed

            reset_seed()
            self.set_world_ranks()
            self._process_group_backend = "gloo"
            self._init_deepspeed_distributed()

        def _get_process_group_backend(self) -> str:
            return "gloo"

        @property
        def root_device(self) -> torch.device:
            # DeepSpeed's engine reads the index as the device rank (the CPU accelerator
            # ignores it) and fails on None.
            return torch.device("cpu", 0)

    return CPUDeepSpeedStrategy(stage=stage, process_group_backend="gloo", **kwargs)


def run_script(script: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python script args...`` in a fresh process; raise with its output on failure."""
    return run_python(str(script), *args, timeout=timeout)


def run_python(
    *args: str, timeout: float = 300, env_overrides: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python args...`` (a script, or ``-m module``) like :func:`run_script`.

    ``env_overrides`` replace the defaults (``DS_ACCELERATOR="cuda"`` on a GPU machine).
    """
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        DS_ACCELERATOR="cpu",
        TORCH_EXTENSIONS_DIR=torch_extensions_dir(),
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
    )
    env.update(env_overrides or {})
    # Whatever launched pytest (torchrun, SLURM) must not make the script think it is a rank.
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"python {' '.join(args)} failed ({proc.returncode}):\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-8000:]}"
        )
    return proc
