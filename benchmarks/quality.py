"""Quality of every method on real GLUE data with the real pretrained MiniLM-L6 encoder,
at a budget that separates the methods on a 2-core CPU.

    python -m benchmarks.quality search [--part 1/4]   # each method's lr grid, seed 0
    python -m benchmarks.quality select                # best lr per method on validation
    python -m benchmarks.quality seeds [--part 1/4]    # every task, the chosen lr, 3 seeds
    python -m benchmarks.quality report [--readme README.md]
    python -m benchmarks.quality status                # how far the grid is (progress.md)

Every run goes through the CLI's own path, :func:`hadamard_lit.launch.run` (LightningCLI
``fit``, then ``test`` of the best validation checkpoint), with stacked YAML configs::

    python -m hadamard_lit fit --config configs/quality/base.yaml \\
        --config configs/method/<method>.yaml [--config configs/quality/<method>.yaml] \\
        --data.init_args.task rte --seed_everything 1 \\
        --model.init_args.optimizer.init_args.lr 1e-2 ...

plus the keys that follow from the task's budget (:data:`BUDGETS`: steps, input length,
warm-up, evaluation interval). One run folder per point under ``OUTPUT/runs/``
(``task=rte,method=lora,seed=0,lr=0.001``); a point whose ``results.json`` says completed
is skipped, so every phase resumes where it stopped, and ``--part k/n`` runs the k-th of
n interleaved shares of what is left (a grid of many CPU-hours runs a few hours at a
time). ``OUTPUT/quality.json`` accumulates every run's record and each part's wall time.

Protocol
--------
Learning rates: each method has a grid of three values a factor of ~3 apart
(:data:`LR_GRIDS`); ``search`` runs every value on SST-2, CoLA and STS-B
(:data:`SEARCH_TASKS`) at seed 0; ``select`` keeps, per method, the value with the best
mean **validation** score over them (the best checkpoint's ``val/score``; ties: the lower
rate) and writes it to ``configs/quality/learning_rates.yaml``; ``seeds`` runs every task
at that committed value and seeds 0, 1, 2 (the search's own runs are reused). The test
split is never looked at before the table. Splits: the paper's protocol
(``NLUDataModule``'s default), so RTE, MRPC, CoLA and STS-B test on half of their GLUE
validation set and validate on the other half, SST-2 validates on 1,000 held-out
training rows and tests on the GLUE validation set. AdamW without weight decay, linear
warm-up over 10% of the steps, then linear decay to 0; four evaluations per run, the best
one tested (with selection: only from ``t_final`` on, ``SelectionAwareCheckpoint``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One OpenMP thread per worker: on a shared 2-core machine extra threads spin-wait.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
BASE_CONFIG = CONFIGS / "quality" / "base.yaml"
LEARNING_RATES = CONFIGS / "quality" / "learning_rates.yaml"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
DEFAULT_OUTPUT = Path("benchmarks/results/quality")
RECORD_FILE = "quality.json"
SEARCH_SEED = 0
SEEDS = (0, 1, 2)
#: The tasks a method's learning rate is chosen on: those with the largest validation splits
#: (SST-2 1,000 held-out rows, CoLA 521, STS-B 750) and the cheapest steps. MRPC's and RTE's
#: are 204 and 138 rows (too few to rank three rates) and their steps the costliest.
SEARCH_TASKS = ("sst2", "cola", "stsb")
WARMUP = 0.1
EVALUATIONS = 4


@dataclass(frozen=True)
class Method:
    """One row of the table: its label, the config files stacked on the base, its lr grid."""

    label: str
    configs: tuple[str, ...]  # relative to configs/
    lrs: tuple[float, ...]
    cost: float = 1.0  # relative step cost, to start the longest runs first


METHODS: dict[str, Method] = {
    "full": Method("Full FT", ("method/full.yaml",), (3e-5, 1e-4, 3e-4), cost=1.4),
    "head_only": Method("Head only", ("method/head_only.yaml",), (3e-3, 1e-2, 3e-2), cost=0.5),
    "adadhp": Method("AdaDHP", ("method/adadhp.yaml",), (3e-3, 1e-2, 3e-2)),
    "adadhp_sel": Method(
        "AdaDHP + selection",
        ("method/adadhp.yaml", "quality/selection.yaml"),
        (3e-3, 1e-2, 3e-2),
    ),
    "lora_r1": Method(
        "LoRA r=1 (AdaDHP's targets)",
        ("method/lora.yaml", "quality/lora_r1.yaml"),
        (1e-3, 3e-3, 1e-2),
    ),
    "lora": Method("LoRA r=8 (q, v)", ("method/lora.yaml",), (3e-4, 1e-3, 3e-3)),
    "ia3": Method("(IA)3", ("method/ia3.yaml",), (3e-3, 1e-2, 3e-2)),
    "hut": Method("HUT r=8 (q, v)", ("method/hut.yaml",), (3e-3, 1e-2, 3e-2), cost=1.1),
    "hadamard_adapter": Method(
        "Hadamard Adapter", ("method/hadamard_adapter.yaml",), (3e-3, 1e-2, 3e-2), cost=0.9
    ),
}
LR_GRIDS = {name: method.lrs for name, method in METHODS.items()}


@dataclass(frozen=True)
class Budget:
    """A task's training budget: optimizer steps of ``batch_size`` rows of ``max_length``."""

    max_steps: int
    max_length: int
    batch_size: int = 32
    seconds_per_step: float = 1.0  # measured here (AdaDHP, one thread): for ordering runs


#: The knee of each task's learning curve on this machine's budget: SST-2 and CoLA a few
#: hundred steps of short sentences; the small pair tasks (RTE 2,490, MRPC 3,668, STS-B
#: 5,749 training rows) two to three epochs at length 128.
BUDGETS: dict[str, Budget] = {
    "sst2": Budget(400, 64, seconds_per_step=0.75),
    "cola": Budget(400, 64, seconds_per_step=0.45),
    "rte": Budget(200, 128, seconds_per_step=3.0),
    "mrpc": Budget(300, 128, seconds_per_step=1.8),
    "stsb": Budget(450, 128, seconds_per_step=0.6),
}
TASKS = tuple(BUDGETS)


# -- the grid -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What makes two runs comparable: other values need a fresh output folder."""

    budgets: dict[str, dict[str, Any]]
    lr_grids: dict[str, list[float]]
    data_dir: str | None
    steps_override: int | None = None
    batch_override: int | None = None
    max_eval_samples: int | None = None
    extra_configs: tuple[str, ...] = ()
    #: sha256 of every config file the grid stacks (an edited option is a new setting).
    configs_sha256: str = ""


def configs_digest(extra: Sequence[str] = ()) -> str:
    """sha256 over the base config, every method's fragments and ``extra``, in order."""
    files = [BASE_CONFIG, *(CONFIGS / c for m in METHODS.values() for c in m.configs)]
    digest = hashlib.sha256()
    for path in [*dict.fromkeys(files), *map(Path, extra)]:
        digest.update(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def task_overrides(task: str, settings: Settings) -> dict[str, Any]:
    """The config keys that follow from ``task``'s budget."""
    budget = BUDGETS[task]
    steps = settings.steps_override or budget.max_steps
    return {
        "data.init_args.task": task,
        "data.init_args.data_dir": settings.data_dir,
        "data.init_args.batch_size": settings.batch_override or budget.batch_size,
        "data.init_args.max_length": budget.max_length,
        "data.init_args.max_eval_samples": settings.max_eval_samples,
        "trainer.max_steps": steps,
        "trainer.val_check_interval": max(1, steps // EVALUATIONS),
        "model.init_args.warmup_steps": round(WARMUP * steps),
    }


def point(task: str, method: str, seed: int, lr: float, settings: Settings) -> Any:
    """One run as a :class:`hadamard_lit.sweep.GridPoint`."""
    from hadamard_lit.sweep import GridPoint

    spec = METHODS[method]
    return GridPoint(
        values={"task": task, "method": method, "seed": seed, "lr": lr},
        overrides={
            **task_overrides(task, settings),
            "seed_everything": seed,
            "model.init_args.optimizer.init_args.lr": lr,
        },
        configs=(
            str(BASE_CONFIG),
            *(str(CONFIGS / c) for c in spec.configs),
            *settings.extra_configs,
        ),
    )


def cost(p: Any) -> float:
    values = p.values
    budget = BUDGETS[values["task"]]
    return budget.max_steps * budget.seconds_per_step * METHODS[values["method"]].cost


def search_points(tasks: Sequence[str], methods: Sequence[str], settings: Settings) -> list[Any]:
    """Every lr of every method's grid on every search task, at the search seed."""
    return [
        point(task, method, SEARCH_SEED, lr, settings)
        for task in tasks
        if task in SEARCH_TASKS
        for method in methods
        for lr in METHODS[method].lrs
    ]


def seed_points(
    tasks: Sequence[str], methods: Sequence[str], chosen: dict[str, float], settings: Settings
) -> list[Any]:
    """Every task at each method's chosen lr and every seed (the search's runs included:
    they are done, so they are skipped)."""
    missing = [m for m in methods if m not in chosen]
    if missing:
        raise SystemExit(
            f"No chosen learning rate for {missing} in {LEARNING_RATES}: run "
            "`python -m benchmarks.quality search` to the end, then "
            "`python -m benchmarks.quality select`"
        )
    return [
        point(task, method, seed, chosen[method], settings)
        for task in tasks
        for method in methods
        for seed in SEEDS
    ]


def parse_part(text: str | None) -> tuple[int, int]:
    """``"k/n"`` → ``(k, n)`` with ``1 <= k <= n``; ``None`` is the whole grid, ``(1, 1)``."""
    if text is None:
        return 1, 1
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SystemExit(f"--part must look like 2/5 (part 2 of 5), got {text!r}") from None
    if not 1 <= k <= n:
        raise SystemExit(f"--part {text}: k must be in 1..n")
    return k, n


def share(points: list[Any], part: tuple[int, int]) -> list[Any]:
    """Part ``k`` of ``n``: every n-th point of the grid ordered longest first."""
    k, n = part
    ordered = sorted(points, key=lambda p: (-cost(p), p.name))
    return ordered[k - 1 :: n]


# -- running one point (in a worker) --------------------------------------------------------


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_point(job: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point unless it already completed; never raises for a failed run."""
    from hadamard_lit.launch import RESULTS_FILE, completed, run

    run_dir = Path(job["run_dir"])
    if completed(run_dir):
        return {**_read_json(run_dir / RESULTS_FILE), "skipped": True}
    # A point that did not finish starts again from scratch (runs keep no last.ckpt).
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    started = time.perf_counter()
    with _output_to(run_dir / "train.log"):
        try:
            result = run(job["args"], run_dir, labels=job["labels"])
        except Exception as err:  # recorded in results.json by run(); the others go on
            result = _read_json(run_dir / RESULTS_FILE) or {"status": "failed"}
            result.setdefault("error", f"{type(err).__name__}: {err}")
            result.update({k: v for k, v in job["labels"].items() if k not in result})
    result["seconds"] = time.perf_counter() - started
    _write_json(run_dir / RESULTS_FILE, result)
    if not job["keep_checkpoints"]:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return result


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` whole or not at all (a crash leaves the old file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _progress(done: int, total: int, result: dict[str, Any], started: float) -> str:
    from hadamard_lit.report import headline

    score = headline(result)
    best = (result.get("best_checkpoint") or {}).get("score")
    shown = "failed" if score is None else f"test {score:6.2f}"
    val = "" if best is None else f" val {100 * best:6.2f}"
    took = "(done before)" if result.get("skipped") else f"{result.get('seconds', 0):6.1f} s"
    line = (
        f"[{done:3d}/{total}] {result.get('task', '?'):5s} {result.get('method_key', '?'):16s} "
        f"seed {result.get('seed')} lr {result.get('lr'):<7g} {shown}{val}  {took}  "
        f"elapsed {(time.perf_counter() - started) / 60:5.1f} min"
    )
    if result.get("status") == "failed":
        line += f"  {str(result.get('error'))[:200]}"
    return line


def run_all(jobs: list[dict[str, Any]], workers: int, threads: int) -> list[dict[str, Any]]:
    """Run every job on ``workers`` spawned processes (0: in this process)."""
    results = []
    started = time.perf_counter()
    if workers == 0:
        _init_worker(threads)
        for i, result in enumerate(map(run_point, jobs), 1):
            results.append(result)
            print(_progress(i, len(jobs), result, started), flush=True)
        return results
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(threads,)) as pool:
        for i, result in enumerate(pool.imap_unordered(run_point, jobs, chunksize=1), 1):
            results.append(result)
            print(_progress(i, len(jobs), result, started), flush=True)
    return results


def jobs_for(points: list[Any], runs: Path, phase: str, keep_checkpoints: bool) -> list[dict]:
    return [
        {
            "run_dir": str(runs / p.name),
            "args": p.cli_args(),
            "labels": {
                "task": p.values["task"],
                "method": METHODS[p.values["method"]].label,
                "method_key": p.values["method"],
                "seed": p.values["seed"],
                "lr": p.values["lr"],
                "phase": phase,
            },
            "keep_checkpoints": keep_checkpoints,
        }
        for p in points
    ]


# -- the record and the chosen learning rates ------------------------------------------------


def collect(runs: Path) -> list[dict[str, Any]]:
    """Every run's ``results.json`` under ``runs``, in folder order."""
    return [_read_json(f) for f in sorted(runs.glob("*/results.json"))]


def validation_scores(records: list[dict[str, Any]]) -> dict[str, dict[float, dict[str, float]]]:
    """Method → lr → search task → the seed-0 run's best validation score (x 100).

    A run that failed, or whose best validation score is missing or not finite, scores
    -inf: it never wins.
    """
    scores: dict[str, dict[float, dict[str, float]]] = {}
    for r in records:
        if r.get("seed") != SEARCH_SEED or r.get("task") not in SEARCH_TASKS:
            continue
        best = (r.get("best_checkpoint") or {}).get("score")
        ok = r.get("status") == "completed" and best is not None and math.isfinite(float(best))
        value = 100.0 * float(best) if ok else -math.inf
        scores.setdefault(r["method_key"], {}).setdefault(float(r["lr"]), {})[r["task"]] = value
    return scores


def choose_learning_rates(
    records: list[dict[str, Any]], tasks: Sequence[str] = SEARCH_TASKS
) -> dict[str, float]:
    """Per method, the lr of its grid with the best mean validation score over ``tasks``
    (ties: the lower rate). Only methods whose whole grid has completed on every one of
    ``tasks`` are chosen."""
    chosen: dict[str, float] = {}
    for method, by_lr in validation_scores(records).items():
        grid = METHODS[method].lrs if method in METHODS else ()
        means = {
            lr: statistics.fmean(by_lr[lr][t] for t in tasks)
            for lr in grid
            if lr in by_lr and all(t in by_lr[lr] for t in tasks)
        }
        if len(means) == len(grid) and max(means.values()) > -math.inf:
            chosen[method] = max(sorted(means), key=lambda lr: means[lr])  # first max: lowest
    return chosen


def write_learning_rates(
    chosen: dict[str, float], records: list[dict[str, Any]], path: Path = LEARNING_RATES
) -> None:
    header = (
        "# The learning rate of each method in the quality benchmark (benchmarks/quality.py),\n"
        "# chosen by `python -m benchmarks.quality select`: the value of the method's grid with\n"
        f"# the best mean VALIDATION score over {', '.join(SEARCH_TASKS)} at seed 0 (ties: the\n"
        "# lower). `python -m benchmarks.quality seeds` runs every task at exactly these.\n"
    )
    scores = validation_scores(records)
    body = {
        "grid": {m: list(METHODS[m].lrs) for m in METHODS},
        "chosen": chosen,
        "validation": {
            m: {lr: {t: round(v, 2) for t, v in by_task.items()} for lr, by_task in by_lr.items()}
            for m, by_lr in scores.items()
        },
    }
    path.write_text(header + yaml.safe_dump(body, sort_keys=False, default_flow_style=None))


def read_learning_rates(path: Path = LEARNING_RATES) -> dict[str, float]:
    if not path.is_file():
        return {}
    chosen = (yaml.safe_load(path.read_text()) or {}).get("chosen") or {}
    return {str(m): float(lr) for m, lr in chosen.items()}


PROGRESS_FILE = "progress.md"


def progress_markdown(
    records: list[dict[str, Any]],
    tasks: Sequence[str],
    methods: Sequence[str],
    settings: Settings,
    lr_file: Path = LEARNING_RATES,
    parts: list[dict[str, Any]] | None = None,
) -> str:
    """How far the grid is: runs done per phase, CPU time spent, each finished part's wall
    time, and the search's validation scores so far (test scores are not shown before the
    table)."""
    done = {
        r.get("run_dir", "").rsplit("/", 1)[-1] for r in records if r.get("status") == "completed"
    }
    search = {p.name for p in search_points(tasks, methods, settings)}
    chosen = read_learning_rates(lr_file)
    seeds = (
        {p.name for p in seed_points(tasks, methods, chosen, settings)}
        if all(m in chosen for m in methods)
        else set()
    )
    hours = sum(r.get("seconds", 0.0) for r in records if r.get("status") == "completed") / 3600
    failed = [r for r in records if r.get("status") not in (None, "completed")]
    lines = [
        "# Quality grid: progress",
        "",
        f"- search (each method's lr grid on {', '.join(t for t in tasks if t in SEARCH_TASKS)}, "
        f"seed {SEARCH_SEED}): "
        f"{len(search & done)} of {len(search)} runs",
        "- seeds (every task at the chosen lr, seeds "
        + ", ".join(map(str, SEEDS))
        + "): "
        + (f"{len(seeds & done)} of {len(seeds)} runs" if seeds else "waits for `select`"),
        f"- CPU time of the completed runs: {hours:.1f} h (one thread each); {len(failed)} failed",
        *(
            f"- part {part['phase']} {part['part']}: {part['runs']} runs in "
            f"{part['wall_seconds'] / 60:.1f} min on {part['workers']} worker(s), "
            f"finished {part['finished']}"
            for part in parts or []
        ),
        "",
        "Best validation score (x100) of each search run so far; `–` not run yet:",
        "",
        "| method | lr | " + " | ".join(SEARCH_TASKS) + " |",
        "|---|---|" + "---|" * len(SEARCH_TASKS),
    ]
    scores = validation_scores(records)
    for method in methods:
        for lr in METHODS[method].lrs:
            by_task = scores.get(method, {}).get(float(lr), {})
            cells = [
                "–"
                if t not in by_task
                else ("failed" if by_task[t] == -math.inf else f"{by_task[t]:.1f}")
                for t in SEARCH_TASKS
            ]
            lines.append(f"| {METHODS[method].label} | {lr:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- entry point ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Methods x GLUE tasks x seeds with the real MiniLM-L6, through the CLI.",
    )
    parser.add_argument("phase", choices=("search", "select", "seeds", "report", "status"))
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated NLU tasks")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"from {list(METHODS)}")
    parser.add_argument("--part", default=None, help="k/n: run the k-th of n shares")
    parser.add_argument("--workers", type=int, default=2, help="processes (0: this one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument(
        "--data-dir",
        default=str(DEFAULT_DATA_DIR),
        help="folder of glue/<task>/<split>.jsonl in the Hub's schema, or 'hub'",
    )
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--readme", default=None, help="report: rewrite this README's table")
    parser.add_argument("--learning-rates", default=str(LEARNING_RATES), help=argparse.SUPPRESS)
    # For tests and smoke runs: every task's steps and batch, an eval cap, one more config.
    parser.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--max-eval-samples", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--fresh", action="store_true", help="delete OUTPUT/runs first")
    args = parser.parse_args(argv)
    args.tasks = list(dict.fromkeys(t.strip() for t in args.tasks.split(",") if t.strip()))
    args.methods = list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    unknown = [m for m in args.methods if m not in METHODS] + [
        t for t in args.tasks if t not in BUDGETS
    ]
    if unknown:
        parser.error(f"unknown {unknown}; methods: {list(METHODS)}, tasks: {list(BUDGETS)}")
    return args


def settings_for(args: argparse.Namespace) -> Settings:
    data_dir = None if args.data_dir == "hub" else str(Path(args.data_dir).resolve())
    return Settings(
        budgets={t: asdict(BUDGETS[t]) for t in BUDGETS},
        lr_grids={m: list(METHODS[m].lrs) for m in METHODS},
        data_dir=data_dir,
        steps_override=args.max_steps,
        batch_override=args.batch_size,
        max_eval_samples=args.max_eval_samples,
        extra_configs=tuple(str(Path(c).resolve()) for c in args.config),
        configs_sha256=configs_digest(args.config),
    )


def _check_settings(output: Path, settings: Settings, fresh: bool) -> dict[str, Any]:
    """The record of ``output``, refusing to mix runs made with other settings."""
    runs = output / "runs"
    record = _read_json(output / RECORD_FILE)
    current = json.loads(json.dumps(asdict(settings)))
    if fresh:
        shutil.rmtree(runs, ignore_errors=True)
        record = {}
    elif runs.is_dir() and any(runs.iterdir()) and record.get("settings") != current:
        raise SystemExit(
            f"{runs} holds runs made with other settings ({record.get('settings')}, now "
            f"{current}); use another --output or --fresh to delete them"
        )
    return {**record, "settings": current}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    output = Path(args.output)
    runs = output / "runs"
    settings = settings_for(args)
    record = _check_settings(output, settings, args.fresh)
    lr_file = Path(args.learning_rates)

    if args.phase == "select":
        records = collect(runs)
        chosen = choose_learning_rates(records, [t for t in args.tasks if t in SEARCH_TASKS])
        write_learning_rates(chosen, records, lr_file)
        print(yaml.safe_dump({"chosen": chosen}, sort_keys=False))
        print(f"Wrote {lr_file}")
        return record
    if args.phase == "report":
        from benchmarks.quality_report import write_all

        write_all(output, collect(runs), args.methods, args.tasks, read_learning_rates(lr_file),
                  readme=Path(args.readme) if args.readme else None)  # fmt: skip
        return record

    if args.phase == "status":
        record["runs"] = collect(runs)
        output.mkdir(parents=True, exist_ok=True)
        _write_json(output / RECORD_FILE, record)
        text = progress_markdown(
            record["runs"], args.tasks, args.methods, settings, lr_file, record.get("parts")
        )
        (output / PROGRESS_FILE).write_text(text)
        print(text)
        return record
    if args.phase == "search":
        points = search_points(args.tasks, args.methods, settings)
    else:
        points = seed_points(args.tasks, args.methods, read_learning_rates(lr_file), settings)
    part = parse_part(args.part)
    todo = share(points, part)
    runs.mkdir(parents=True, exist_ok=True)
    jobs = jobs_for(todo, runs.resolve(), args.phase, args.keep_checkpoints)
    print(
        f"{args.phase}: part {part[0]}/{part[1]}: {len(jobs)} of {len(points)} runs "
        f"({len(args.tasks)} tasks x {len(args.methods)} methods), {args.workers} workers "
        f"-> {output}",
        flush=True,
    )
    started = time.perf_counter()
    results = run_all(jobs, args.workers, args.threads)
    wall = time.perf_counter() - started
    ran = [r for r in results if not r.get("skipped")]
    record.setdefault("parts", []).append(
        {
            "phase": args.phase,
            "part": f"{part[0]}/{part[1]}",
            "runs": len(ran),
            "failed": sum(r.get("status") != "completed" for r in ran),
            "wall_seconds": round(wall, 1),
            "cpu_seconds_of_runs": round(sum(r.get("seconds", 0.0) for r in ran), 1),
            "workers": args.workers,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )
    record["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    record["runs"] = collect(runs)
    output.mkdir(parents=True, exist_ok=True)
    _write_json(output / RECORD_FILE, record)
    print(
        f"\n{args.phase} part {part[0]}/{part[1]}: {len(ran)} runs in {wall / 60:.1f} min "
        f"({record['parts'][-1]['failed']} failed), {len(results) - len(ran)} done before. "
        f"Record: {output / RECORD_FILE}",
        flush=True,
    )
    return record


if __name__ == "__main__":
    main()
