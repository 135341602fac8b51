"""Peak memory of one training step, measured in a process of its own.

Run by ``benchmarks.step_time`` as ``python -m benchmarks.memory BACKBONE CONFIG``, once per
configuration, with ``MALLOC_MMAP_THRESHOLD_=65536`` in the environment so that glibc
serves every tensor of 64 KiB or more with its own ``mmap`` and returns it to the system
when it is freed: the resident set then follows the tensors that are alive.

Definition (Linux): build the model and AdamW, run two steps (optimizer state and any
lazily built buffers now exist, gradients freed again), trim the heap, reset the kernel's
peak-RSS counter (``/proc/self/clear_refs``), run one step, and report

* ``growth_mib``: peak RSS during that step minus the RSS just before it: the saved
  activations, gradients, optimizer temporaries and the backward's working tensors, which
  is what a method changes; the weights and AdamW state are in the baseline;
* ``total_mib``: the process's peak RSS in that step (libraries and weights included);
* ``saved_mib``: the distinct storages autograd holds for the backward after one forward,
  parameters excluded (exact, from ``saved_tensors_hooks``; no allocator involved).

Prints one JSON object on its last line.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys

import torch

from benchmarks.setups import BACKBONES, CONFIGS, make_optimizer, train_step

MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def saved_for_backward_bytes(prepared, batch) -> int:  # type: ignore[no-untyped-def]
    """Bytes of the distinct non-parameter storages autograd saves in one forward."""
    params = {p.untyped_storage().data_ptr() for p in prepared.model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = prepared.model(**batch).loss
    loss.backward()
    for p in prepared.params:
        p.grad = None
    return sum(seen.values())


def measure(backbone_name: str, config_name: str, batch_size: int, seq: int) -> dict:
    backbone = BACKBONES[backbone_name].with_batch(batch_size, seq)
    config = CONFIGS[config_name]
    base = backbone.build()
    prepared = config.prepare(base)
    optimizer = make_optimizer(prepared)
    batch = backbone.make_batch(prepared.model)
    for step in range(2):
        train_step(prepared, optimizer, batch, step)
    gc.collect()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    before = _status_bytes("VmRSS")
    train_step(prepared, optimizer, batch, 2)
    peak = _status_bytes("VmHWM")
    saved = saved_for_backward_bytes(prepared, batch)
    mib = 2**20
    return {
        "growth_mib": (peak - before) / mib,
        "total_mib": peak / mib,
        "baseline_mib": before / mib,
        "saved_mib": saved / mib,
        "trainable": prepared.trainable,
    }


def main(argv: list[str]) -> None:
    backbone, config, batch_size, seq, threads = argv
    torch.set_num_threads(int(threads))
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_ENV["MALLOC_MMAP_THRESHOLD_"]:
        print(
            "warning: MALLOC_MMAP_THRESHOLD_ not set; RSS will lag freed tensors", file=sys.stderr
        )
    result = measure(backbone, config, int(batch_size), int(seq))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
