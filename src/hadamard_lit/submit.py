"""``python -m hadamard_lit submit``: a sweep as ONE job array through submitit.

    python -m hadamard_lit submit --config configs/t5_glue.yaml --sweep slurm/t5_glue.yaml \
        --partition gpu --time 240 --gpus_per_node 1 --array_parallelism 32

Each grid point (see :mod:`hadamard_lit.sweep`) is one array task that runs
:class:`hadamard_lit.launch.TrainingJob` in its own run folder
``<output_dir>/<sweep name>/<point name>/``. ``--dry-run`` prints the grid and the sbatch
script without submitting. ``--wait`` blocks until every task ends, prints a summary
(a failed task is reported with its error; the others carry on) and the report table.

Requeueing belongs to submitit: on the time-limit / preemption signal it calls the job's
``checkpoint()``, which requeues the same call; the requeued job resumes from the run's
last checkpoint. Lightning's own SLURM auto-requeue is switched off in the job.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from hadamard_lit.sweep import GridPoint, Sweep, load_sweep

CLUSTERS = ("auto", "slurm", "local", "debug")
#: What each array task asks the scheduler for: (flag, type, default, help).
RESOURCES: list[tuple[str, type, Any, str]] = [
    ("--partition", str, None, "SLURM partition"),
    ("--time", int, 60, "time limit per task, minutes"),
    ("--gpus_per_node", int, 0, "GPUs per node"),
    ("--cpus_per_task", int, 2, "CPU cores per task (and torch threads)"),
    ("--mem_gb", float, 8.0, "memory per node, GB"),
    ("--nodes", int, 1, "nodes per task"),
    ("--tasks_per_node", int, 1, "processes per node; > 1 runs Lightning DDP/FSDP across them"),
    ("--array_parallelism", int, 16, "max array tasks running at once"),
    ("--signal_delay_s", int, 90, "seconds between the requeue signal and the time limit"),
    ("--max_requeues", int, 3, "how often a timed-out task is requeued"),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hadamard_lit submit",
        description="Submit a sweep (grid of tasks × seeds × methods × any config key) as one job array.",
        epilog="Any other --key value (as fit takes it, e.g. --trainer.max_steps 60) is applied "
        "to every grid point. Every point's config is checked before anything is submitted.",
        allow_abbrev=False,  # an override such as --time_limit must not pass for --time
    )
    p.add_argument(
        "--config", required=True, action="append", help="run config(s), stacked in order"
    )
    p.add_argument("--sweep", required=True, help="sweep YAML (see hadamard_lit.sweep)")
    p.add_argument("--output_dir", default="runs", help="root of the run folders (default: runs)")
    p.add_argument(
        "--cluster",
        default="auto",
        choices=CLUSTERS,
        help="submitit executor: auto (SLURM when sbatch exists), slurm, local, debug",
    )
    for flag, kind, default, text in RESOURCES:
        p.add_argument(flag, type=kind, default=default, help=text)
    p.add_argument(
        "--slurm_arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra sbatch parameter, e.g. --slurm_arg account=myproj (repeatable)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse an existing sweep folder: skip completed points, resubmit the rest",
    )
    p.add_argument(
        "--dry-run",
        "--dry_run",
        dest="dry_run",
        action="store_true",
        help="print the grid and the sbatch script; submit nothing",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait for the array, then print the summary and report"
    )
    return p


def _executor(args: argparse.Namespace, folder: Path) -> Any:
    import submitit

    cluster = None if args.cluster == "auto" else args.cluster
    executor = submitit.AutoExecutor(
        folder=folder / "submitit" / "%j", cluster=cluster, slurm_max_num_timeout=args.max_requeues
    )
    extra: dict[str, str] = {}
    for item in args.slurm_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--slurm_arg expects KEY=VALUE, got {item!r}")
        extra[key] = value
    gpus = {"gpus_per_node": args.gpus_per_node} if args.gpus_per_node else {}
    executor.update_parameters(
        **gpus,
        name=folder.name,
        timeout_min=args.time,
        nodes=args.nodes,
        tasks_per_node=args.tasks_per_node,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        slurm_partition=args.partition,
        slurm_array_parallelism=args.array_parallelism,
        slurm_signal_delay_s=args.signal_delay_s,
        slurm_additional_parameters=extra,
    )
    return executor


def _sbatch_preview(executor: Any, array_size: int) -> str:
    """The sbatch script submitit would write for the array, when the executor is SLURM's."""
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    inner = getattr(executor, "_executor", None)
    if not isinstance(inner, SlurmExecutor):
        return f"(executor {executor.cluster!r} runs processes here: no sbatch script)"
    params = {**inner.parameters, "map_count": array_size}
    return _make_sbatch_string(command=inner._submitit_command_str, folder=inner.folder, **params)


def _print_grid(
    sweep: Sweep, run_dirs: list[Path], skipped: set[str], overrides: list[str]
) -> None:
    print(f"Sweep {sweep.name!r}: {len(sweep.points)} grid points (every config checked)")
    for point, run_dir in zip(sweep.points, run_dirs, strict=True):
        note = "  (completed, skipped)" if point.name in skipped else ""
        print(f"  {run_dir}{note}")
        print(f"      {' '.join(point.cli_args(overrides))}")


def config_overrides(extra: list[str], sweep: Sweep) -> list[str]:
    """``submit``'s arguments that are not its own: config overrides for every point.

    Raises:
        SystemExit: an argument that is not a ``--key [value]`` pair, or a key that is also
            one of the sweep's axes (it would be set twice).
    """
    if extra and not extra[0].startswith("--"):
        raise SystemExit(
            f"error: unexpected argument {extra[0]!r} (config overrides are --key value)"
        )
    axes = {key for point in sweep.points for key in point.overrides}
    for item in extra:
        key = item[2:].split("=", 1)[0] if item.startswith("--") else None
        if key in axes:
            raise SystemExit(
                f"error: --{key} is also set by the sweep (an axis or per_task key); set it in "
                "one place"
            )
    return extra


def check_points(base_args: list[str], points: list[GridPoint], extra: list[str]) -> None:
    """Parse every point's config as ``fit`` would (no weights are loaded).

    Raises:
        SystemExit: naming every point that ``fit`` would refuse, and why; nothing is
            submitted then.
    """
    from hadamard_lit.config_check import ConfigChecker, ConfigError

    checker = ConfigChecker()
    bad = []
    for point in points:
        try:
            checker.check(base_args + point.cli_args(extra))
        except ConfigError as error:
            bad.append(f"  {point.name}:\n    " + str(error).replace("\n", "\n    "))
    if bad:
        raise SystemExit(
            f"error: {len(bad)} of {len(points)} grid point(s) have a config that fit would "
            "refuse; nothing was submitted.\n" + "\n".join(bad)
        )


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    sweep = load_sweep(args.sweep)
    overrides = config_overrides(extra, sweep)
    for config in args.config:
        if not Path(config).is_file():
            raise SystemExit(f"Run config {config!r} does not exist")
    if args.tasks_per_node < 1 or args.nodes < 1:
        raise SystemExit(
            f"--tasks_per_node and --nodes must be >= 1, got {args.tasks_per_node}, {args.nodes}"
        )

    from hadamard_lit.launch import TrainingJob, completed

    sweep_dir = Path(args.output_dir) / sweep.name
    run_dirs = [sweep_dir / p.name for p in sweep.points]
    skipped = {p.name for p, d in zip(sweep.points, run_dirs, strict=True) if completed(d)}
    if skipped and not args.resume and not args.dry_run:
        raise SystemExit(
            f"{len(skipped)} run(s) in {sweep_dir} already finished (e.g. {sorted(skipped)[0]}); "
            "pass --resume to submit only the rest, or choose another --output_dir"
        )
    todo = [(p, d) for p, d in zip(sweep.points, run_dirs, strict=True) if p.name not in skipped]
    base_args = [a for config in args.config for a in ("--config", str(Path(config).resolve()))]
    check_points(base_args, [p for p, _ in todo], overrides)
    executor = _executor(args, sweep_dir)
    if args.dry_run:
        _print_grid(sweep, run_dirs, skipped, overrides)
        count = len(todo)
        print(f"\nsbatch script for {count} array task(s):\n" + _sbatch_preview(executor, count))
        return 0

    job_args = [base_args + p.cli_args(overrides) for p, _ in todo]
    dirs = [str(d.resolve()) for _, d in todo]
    distributed = (
        {"devices": args.tasks_per_node, "num_nodes": args.nodes}
        if args.tasks_per_node * args.nodes > 1
        else None
    )
    labels = [dict(p.values) for p, _ in todo]
    jobs = executor.map_array(TrainingJob(distributed=distributed), job_args, dirs, labels)
    manifest: dict[str, Any] = {
        "sweep": sweep.name,
        "array_job_id": jobs[0].job_id.split("_")[0] if jobs else None,
        "overrides": overrides,
        "runs": [
            {"run_dir": d, "job_id": j.job_id, "values": p.values}
            for (p, _), d, j in zip(todo, dirs, jobs, strict=True)
        ],
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "submitted.json").write_text(json.dumps(manifest, indent=2))
    if len(jobs) == 1 and "_" not in jobs[0].job_id:
        how = (
            f"as job {jobs[0].job_id} (one grid point: SLURM runs it as a plain job, not an array)"
        )
    else:
        how = f"as job array {manifest['array_job_id']}"
    print(f"Submitted {len(jobs)} task(s) {how}")
    print(f"Sweep folder: {sweep_dir}")
    if not args.wait:
        return 0
    return wait_and_summarise(jobs, dirs, sweep_dir)


#: How many of a failed task's own last error lines the client prints.
ERROR_LINES = 8


def _log_tail(path: Path, lines: int = ERROR_LINES) -> list[str]:
    """The last lines of a task's log that say what went wrong (not srun's summary)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    kept = [line for line in text if line.strip() and not line.startswith("srun: error:")]
    return kept[-lines:]


def failure_report(run_dir: Path, job: Any, error: BaseException | None) -> dict[str, Any]:
    """What the client says about a task that did not complete: its status, its own last
    error lines, and where its log is."""
    from hadamard_lit.launch import RESULTS_FILE
    from hadamard_lit.run_status import observe

    try:
        recorded = observe(json.loads((run_dir / RESULTS_FILE).read_text()))
    except (OSError, json.JSONDecodeError):
        recorded = {}
    log = Path(str(job.paths.stderr)) if getattr(job, "paths", None) is not None else None
    if recorded.get("error"):
        lines = str(recorded["error"]).splitlines()[:ERROR_LINES]
    elif log is not None and _log_tail(log):
        lines = _log_tail(log)
    else:
        lines = [f"{type(error).__name__}: {error}" if error is not None else "no error recorded"]
    return {
        "status": recorded.get("status", "no results.json"),
        "error": "\n".join(lines),
        "log": None if log is None else str(log),
    }


def _collect(job: Any, run_dir: str) -> dict[str, Any]:
    """The summary row of a finished job."""
    row: dict[str, Any] = {"run_dir": run_dir, "job_id": job.job_id}
    try:
        result = job.results()[0]  # one per process; rank 0's has the metrics
    except Exception as error:  # a failed task is reported; the others carry on
        return {**row, "state": "FAILED", **failure_report(Path(run_dir), job, error)}
    metrics = (result or {}).get("metrics", {})
    return {**row, "state": "COMPLETED", "score": metrics.get((result or {}).get("headline", ""))}


def _say(row: dict[str, Any], done: int, total: int) -> None:
    name = Path(row["run_dir"]).name
    if row["state"] == "COMPLETED":
        score = row.get("score")
        shown = f"score {100 * score:.2f}" if isinstance(score, float) else "no score"
        print(f"[{done}/{total}] completed {name} ({shown})", flush=True)
        return
    print(f"[{done}/{total}] FAILED {row['job_id']} {name} ({row['status']}):", flush=True)
    for line in [*row["error"].splitlines(), *([f"log: {row['log']}"] if row["log"] else [])]:
        print(f"    {line}", flush=True)


def wait_and_summarise(
    jobs: list[Any], run_dirs: list[str], sweep_dir: Path, poll_s: float = 2.0
) -> int:
    """Wait for every job, saying each one's end as it happens (a failed task with its
    error lines and log, at once); then the summary and the report table."""
    pending = dict(enumerate(zip(jobs, run_dirs, strict=True)))
    rows: dict[int, dict[str, Any]] = {}
    while pending:
        for index, (job, run_dir) in list(pending.items()):
            if job.done():
                del pending[index]
                rows[index] = _collect(job, run_dir)
                _say(rows[index], len(rows), len(jobs))
        if pending:
            time.sleep(poll_s)
    ordered = [rows[i] for i in sorted(rows)]
    (sweep_dir / "summary.json").write_text(json.dumps(ordered, indent=2))
    failed = [r for r in ordered if r["state"] != "COMPLETED"]
    print(f"\n{len(ordered) - len(failed)} of {len(ordered)} task(s) completed")
    for row in failed:
        first = row["error"].splitlines()[0] if row["error"] else row["status"]
        print(f"  FAILED {row['job_id']} {row['run_dir']}: {first}")
    if len(failed) < len(ordered):  # the table of what completed, failures marked
        from hadamard_lit.report import report

        existing = [r["run_dir"] for r in ordered if Path(r["run_dir"]).is_dir()]
        table, paths = report(existing, output_dir=sweep_dir)
        print("\n" + table.markdown())
        print(f"\nReport: {paths['markdown']}, {paths['csv']}, {paths['plot']}")
    print(f"Sweep folder: {sweep_dir}")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
