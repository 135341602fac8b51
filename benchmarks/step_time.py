"""Training-step time and peak memory of every method, against the frozen-backbone floor.

    python -m benchmarks.step_time [--backbones minilm,t5-small,gpt2,smollm2-135m] [--quick]

Per backbone, in ONE process, every configuration (full fine-tuning, the frozen floor,
hadamard_lit's strategies, peft's LoRA/(IA)3/AdaLoRA on the same targets) is built once
and their steps are interleaved round-robin (the starting configuration rotates every
round), so a slow patch on this shared machine hits all of them alike. Figures are
medians over the rounds after warm-up; a ratio is the median of the per-round ratios of
two configurations timed in the same round. Step time is the process's CPU time by
default (robust to other processes taking the cores; use ``--threads 1`` for it to mean
what it says), wall time alongside. Peak memory comes from a separate process per
configuration (``benchmarks.memory``). Then: merged-model inference against the plain
backbone, and the HUT-vs-LoRA overhead as the tokens per batch grow.

Writes ``results/step_time.json``, ``results/step_time.md`` and ``results/step_time.png``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from torch import nn

from benchmarks import report
from benchmarks.memory import MMAP_ENV
from benchmarks.report import CONTROL
from benchmarks.setups import (
    BACKBONES,
    CONFIGS,
    Backbone,
    Prepared,
    fresh_copy,
    make_optimizer,
    peft_available,
    prepare,
    share_frozen,
    train_step,
)
from hadamard_lit.adapters import AdapterLayer, adapter_layers, get_adapter_record

RESULTS = Path(__file__).parent / "results"


# -- timing -----------------------------------------------------------------------------


def interleaved(
    runs: dict[str, Any], warmup: int, repeats: int, log: str = ""
) -> dict[str, dict[str, list[float]]]:
    """Call every ``runs[name]()`` once per round, rotating the order; time each call.

    Returns per name the lists ``cpu`` and ``wall`` (seconds), warm-up rounds dropped.
    """
    names = list(runs)
    times: dict[str, dict[str, list[float]]] = {n: {"cpu": [], "wall": []} for n in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_ in range(warmup + repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                gc.collect()
                wall, cpu = time.perf_counter(), time.process_time()
                runs[name]()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                if round_ >= warmup:
                    times[name]["cpu"].append(cpu)
                    times[name]["wall"].append(wall)
            if log:
                kind = "warm-up" if round_ < warmup else "round"
                print(f"  {log}: {kind} {round_ + 1}/{warmup + repeats} done", flush=True)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def paired_ratio(times: dict[str, dict[str, list[float]]], a: str, b: str, clock: str) -> float:
    """Median over rounds of ``a``'s time / ``b``'s time in the same round."""
    return statistics.median(x / y for x, y in zip(times[a][clock], times[b][clock], strict=True))


def summarise(times: dict[str, dict[str, list[float]]], reference: str) -> dict[str, dict]:
    out = {}
    for name, t in times.items():
        out[name] = {
            "cpu_s": statistics.median(t["cpu"]),
            "wall_s": statistics.median(t["wall"]),
            "cpu_ratio": paired_ratio(times, name, reference, "cpu"),
            "wall_ratio": paired_ratio(times, name, reference, "wall"),
            "rounds": len(t["cpu"]),
            "cpu_rounds": t["cpu"],
        }
    return out


def time_training(backbone: Backbone, names: list[str], warmup: int, repeats: int) -> dict:
    """Step time of every configuration in ``names`` on ``backbone``, interleaved."""
    base = backbone.build()
    batch = backbone.make_batch(base)
    prepared: dict[str, Prepared] = {}
    optimizers: dict[str, torch.optim.Optimizer] = {}
    for name in names:
        prepared[name] = prepare(CONFIGS[name], base)
        optimizers[name] = make_optimizer(prepared[name])
    steps = dict.fromkeys(names, 0)

    def runner(name: str):  # type: ignore[no-untyped-def]
        def run() -> None:
            train_step(prepared[name], optimizers[name], batch, steps[name])
            steps[name] += 1

        return run

    times = interleaved({n: runner(n) for n in names}, warmup, repeats, log=backbone.name)
    results = summarise(times, "floor")
    for name in names:
        results[name]["trainable"] = prepared[name].trainable
        ref = CONFIGS[name].peft_ref
        if ref in times:
            results[name]["peft_ref"] = ref
            results[name]["cpu_vs_peft"] = paired_ratio(times, name, ref, "cpu")
            results[name]["wall_vs_peft"] = paired_ratio(times, name, ref, "wall")
    return results


# -- merged inference -------------------------------------------------------------------


def _perturb_adapters(model: nn.Module) -> None:
    """Move adapter tensors off their initial values, as training would (merge is exact)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            for name, param in layer.adapter_parameters().items():
                if name == "hadamard_bias" and layer.bias is None:
                    continue  # cannot be merged into a bias-free projection (T5, Llama)
                param.add_(0.01 * torch.randn(param.shape, generator=g).to(param.dtype))


def time_merged(backbone: Backbone, names: list[str], warmup: int, repeats: int) -> dict:
    """No-grad forward of each merged model against the plain backbone, interleaved.

    Also times ``report.CONTROL``, a deep copy of the plain model, as the noise control.
    """
    base = backbone.build().eval()
    batch = backbone.make_batch(base)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if backbone.kind == "seq2seq":  # a teacher-forced decoder pass, as in training
        inputs["decoder_input_ids"] = batch["labels"]
    # The control: an identical second copy of the plain model (new tensors, same compute).
    # Its ratio to "plain" is how far two equal models read apart on this machine.
    models: dict[str, nn.Module] = {"plain": base, CONTROL: copy.deepcopy(base)}
    checks: dict[str, str] = {}
    plain_types = [type(m).__name__ for m in base.modules()]
    for name in names:
        model, pairs = fresh_copy(base)
        strategy = CONFIGS[name].prepare(model).model
        record = get_adapter_record(strategy)
        _perturb_adapters(strategy)
        record.strategy.merge(strategy)
        share_frozen(strategy, pairs)
        strategy.eval()
        left = sum(isinstance(m, AdapterLayer) for m in strategy.modules())
        same = [type(m).__name__ for m in strategy.modules()] == plain_types
        checks[name] = "plain modules" if (left == 0 and same) else f"{left} adapter layers left"
        models[name] = strategy

    def runner(model: nn.Module):  # type: ignore[no-untyped-def]
        def run() -> None:
            with torch.no_grad():
                model(**inputs)

        return run

    times = interleaved(
        {n: runner(m) for n, m in models.items()}, warmup, repeats, log=f"{backbone.name} merged"
    )
    results = summarise(times, "plain")
    for name, check in checks.items():
        results[name]["structure"] = check
    return results


# -- HUT vs LoRA as tokens grow ---------------------------------------------------------


def time_scaling(backbone: Backbone, batches: list[int], warmup: int, repeats: int) -> dict:
    """Step time of the floor, LoRA r=8 and HUT r=8 (same targets) at growing batch sizes."""
    out: dict[str, dict] = {}
    for batch_size in batches:
        sized = backbone.with_batch(batch_size, backbone.seq)
        result = time_training(sized, ["floor", "lora-r8", "hut"], warmup, repeats)
        out[str(sized.tokens)] = {"batch": batch_size, "seq": sized.seq, **result}
        gc.collect()
    return out


# -- memory (separate processes) --------------------------------------------------------


def measure_memory(backbone: Backbone, names: list[str], threads: int, jobs: int) -> dict:
    env = {**os.environ, **MMAP_ENV, "HF_HUB_OFFLINE": "1"}
    root = Path(__file__).resolve().parent.parent

    def one(name: str) -> tuple[str, dict]:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.memory",
            backbone.name,
            name,
            str(backbone.batch),
            str(backbone.seq),
            str(threads),
        ]
        proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            return name, {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        return name, json.loads(lines[-1])

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = dict(pool.map(one, names))
    floor = results.get("floor", {}).get("growth_mib")
    floor_total = results.get("floor", {}).get("total_mib")
    for result in results.values():
        if floor and "growth_mib" in result:
            result["growth_ratio"] = result["growth_mib"] / floor
            result["total_ratio"] = result["total_mib"] / floor_total
    print(f"  {backbone.name}: memory measured ({len(names)} processes)", flush=True)
    return results


# -- the command ------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")),
            model,
        )
    except OSError:
        pass
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    for package in ("transformers", "peft", "lightning"):
        try:
            versions[package] = __import__(package).__version__
        except Exception:  # optional
            versions[package] = "not importable"
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **versions,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.step_time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--backbones", default=",".join(BACKBONES), help=f"comma-separated, from {list(BACKBONES)}"
    )
    p.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help="comma-separated subset of the configurations (floor is always added)",
    )
    p.add_argument(
        "--quick", action="store_true", help="fewer rounds, no scaling study: a smoke run"
    )
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5, quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: CPU time then equals work done)",
    )
    p.add_argument("--skip", default="", help="phases to skip: memory,merged,scaling")
    p.add_argument(
        "--memory-jobs",
        type=int,
        default=2,
        help="memory processes run at once (memory does not depend on CPU load)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default="step_time", help="output file stem")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 5)
    skip = {s for s in args.skip.split(",") if s}
    if args.quick:
        skip.add("scaling")
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; choose from {list(CONFIGS)}")
    names = ["floor", *[n for n in names if n != "floor"]]
    skipped: dict[str, str] = {}
    why = peft_available()
    if why:
        for n in [n for n in names if CONFIGS[n].group == "peft"]:
            skipped[n] = why
        names = [n for n in names if n not in skipped]
        print(f"skipping peft configurations: {why}")

    results: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "repeats": repeats,
            "warmup": args.warmup,
            "threads": args.threads,
            "clock": "process CPU time (wall alongside)",
        },
        "skipped": skipped,
        "backbones": {},
    }
    started = time.perf_counter()
    for backbone_name in [b for b in args.backbones.split(",") if b]:
        backbone = BACKBONES[backbone_name]
        print(f"== {backbone.name}: {backbone.description}, batch {backbone.shape}", flush=True)
        entry: dict[str, Any] = {
            "description": backbone.description,
            "shape": backbone.shape,
            "tokens": backbone.tokens,
        }
        entry["training"] = time_training(backbone, names, args.warmup, repeats)
        gc.collect()
        merged = [n for n in names if CONFIGS[n].merge]
        if "merged" not in skip and merged:
            entry["merged"] = time_merged(backbone, merged, args.warmup, max(repeats * 2, 3))
            gc.collect()
        if "memory" not in skip:
            entry["memory"] = measure_memory(backbone, names, args.threads, args.memory_jobs)
        results["backbones"][backbone.name] = entry
        print(report.backbone_table(backbone.name, entry, names), flush=True)
    if "scaling" not in skip and "minilm" in args.backbones.split(","):
        print("== HUT vs LoRA as tokens per batch grow (MiniLM, 128-token sequences)")
        results["scaling"] = time_scaling(
            BACKBONES["minilm"], [2, 8, 32, 64], args.warmup, max(repeats - 2, 3)
        )
        print(report.scaling_table(results["scaling"]))
    results["elapsed_s"] = time.perf_counter() - started
    results["targets"] = report.targets(results)
    print(report.targets_table(results["targets"]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(results, indent=2))
    (args.out / f"{args.tag}.md").write_text(report.markdown(results, names))
    report.plot(results, names, args.out / f"{args.tag}.png")
    print(f"wrote {args.out / args.tag}.{{json,md,png}} in {results['elapsed_s'] / 60:.1f} min")
    return results


if __name__ == "__main__":
    main()
