"""Math smoke run: SmolLM2-135M-Instruct + AdaDHP on GSM8K, exact match before and after SFT.

    HF_HUB_OFFLINE=1 python -m benchmarks.math_smoke [--config configs/smollm2_gsm8k_smoke.yaml]
        [--threads 1] [--tag math_smoke] [--examples 3] [any CLI override, e.g. --trainer.max_steps=2]

Everything goes through the CLI code path: ``HadamardCLI`` builds trainer, module and
datamodule from the run config (the same objects ``python -m hadamard_lit test/fit
--config ...`` builds), then, on that one trainer and model:

1. ``trainer.test``: AdaDHP applied at identity (every scale 1: the unchanged model),
   greedy generation, the answer read by ``CausalLMModule``'s extraction, exact match;
2. ``trainer.fit``: AdaDHP fine-tuning on GSM8K train for the config's ``max_steps``;
3. ``trainer.test`` again on the same problems.

The only addition is a recorder around ``CausalLMModule.generate_answers`` that keeps the
generated texts and the wall time of each generation batch (the exact match is also
recomputed from the recorded texts, as a check on the logged ``test/exact_match``: a
mismatch is printed as a warning and recorded as ``matches_logged: false``).

Writes ``benchmarks/results/<tag>.json`` (settings, before/after exact match, steps, wall
times, the training loss per step, example generations, versions) and ``<tag>.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "configs/smollm2_gsm8k_smoke.yaml"


class GenerationRecorder:
    """Wraps ``module.generate_answers``: keeps every generated text and each batch's time."""

    def __init__(self, module: Any) -> None:
        self.inner = module.generate_answers
        self.texts: list[str] = []
        self.batch_seconds: list[float] = []
        self.batch_sizes: list[int] = []
        module.generate_answers = self

    def __call__(self, batch: Mapping[str, Any]) -> list[str]:
        start = time.perf_counter()
        texts = self.inner(batch)
        self.batch_seconds.append(round(time.perf_counter() - start, 2))
        self.batch_sizes.append(len(texts))
        self.texts.extend(texts)
        print(
            f"  generation batch {len(self.batch_seconds)}: {len(texts)} problems, "
            f"{self.batch_seconds[-1]:.1f} s",
            flush=True,
        )
        return texts

    def take(self) -> dict[str, Any]:
        out = {"texts": self.texts, "batch_seconds": self.batch_seconds}
        out["batch_sizes"] = self.batch_sizes
        self.texts, self.batch_seconds, self.batch_sizes = [], [], []
        return out


def score(module: Any, texts: list[str], gold: list[str]) -> dict[str, Any]:
    """Exact match recomputed from the generated texts with the module's own extraction."""
    from hadamard_lit.metrics import MathExactMatch

    predicted = module.extract(texts)
    metric = MathExactMatch()
    correct = []
    for i, (pred, answer) in enumerate(zip(predicted, gold, strict=True)):
        before = int(metric.correct)
        metric.update([pred], [answer])
        if int(metric.correct) > before:
            correct.append(i)
    return {
        "exact_match": float(metric.compute()),
        "correct": len(correct),
        "total": len(gold),
        "correct_indices": correct,
        "extracted": predicted,
        "no_answer_found": sum(p is None for p in predicted),
    }


def train_losses(log_dir: str | None) -> list[dict[str, float]]:
    """``train/loss`` per step from the CSV logger's metrics.csv (empty if none)."""
    if not log_dir:
        return []
    path = Path(log_dir) / "metrics.csv"
    if not path.is_file():
        return []
    rows = []
    with path.open() as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                rows.append({"step": int(row["step"]), "loss": round(float(row["train/loss"]), 4)})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the run config")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (<= 2 here)")
    parser.add_argument("--tag", default="math_smoke", help="output file stem")
    parser.add_argument("--examples", type=int, default=3, help="example generations kept")
    args, overrides = parser.parse_known_args(argv)
    command = "python -m benchmarks.math_smoke " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )

    torch.set_num_threads(args.threads)
    from hadamard_lit.adapters import (
        count_parameters,
        count_trainable_parameters,
        get_adapter_record,
    )
    from hadamard_lit.cli import HadamardCLI

    started = time.perf_counter()
    load_avg_start = os.getloadavg()
    cli_args = ["--config", args.config, *overrides]
    print(f"HadamardCLI {shlex.join(cli_args)}  (torch threads: {args.threads})", flush=True)
    argv_saved, sys.argv = sys.argv, sys.argv[:1]  # the CLI reads only args=
    try:
        cli = HadamardCLI(args=cli_args, run=False)
    finally:
        sys.argv = argv_saved
    trainer, module, data = cli.trainer, cli.model, cli.datamodule
    module.configure_model()  # what the trainer would do first (idempotent): timed apart
    load_seconds = time.perf_counter() - started
    recorder = GenerationRecorder(module)
    print(f"model loaded in {load_seconds:.1f} s", flush=True)

    timings: dict[str, Any] = {"load_s": round(load_seconds, 1)}
    evaluations: dict[str, Any] = {}

    def evaluate(name: str) -> None:
        print(f"[{name}] trainer.test on {data.max_eval_samples} problems", flush=True)
        start = time.perf_counter()
        logged = trainer.test(module, datamodule=data, verbose=False)[0]
        seconds = time.perf_counter() - start
        generations = recorder.take()
        gold = list(data.datasets["test"]["answers"])
        result = score(module, generations["texts"], gold)
        result["logged_test_exact_match"] = float(logged["test/exact_match"])
        result["matches_logged"] = (
            abs(result["exact_match"] - result["logged_test_exact_match"]) < 1e-6
        )
        if not result["matches_logged"]:
            print(
                f"[{name}] WARNING: exact match recomputed from the texts "
                f"({result['exact_match']:.4f}) differs from the logged one "
                f"({result['logged_test_exact_match']:.4f})",
                flush=True,
            )
        result["generation_batch_seconds"] = generations["batch_seconds"]
        result["generation_batch_sizes"] = generations["batch_sizes"]
        result["texts"] = generations["texts"]
        evaluations[name] = result
        timings[f"eval_{name}_s"] = round(seconds, 1)
        print(
            f"[{name}] exact match {result['exact_match']:.3f} "
            f"({result['correct']}/{result['total']}; logged {logged['test/exact_match']:.3f}) "
            f"in {seconds:.1f} s",
            flush=True,
        )

    evaluate("before")
    print(f"[fit] {trainer.max_steps} optimizer steps", flush=True)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    timings["train_s"] = round(time.perf_counter() - start, 1)
    global_step = int(trainer.global_step)
    print(f"[fit] {global_step} steps in {timings['train_s']:.1f} s", flush=True)
    evaluate("after")
    timings["total_s"] = round(time.perf_counter() - started, 1)

    # -- what was run ------------------------------------------------------------------
    raw = data.limit(data.raw_split(data.eval_source, "test"), train=False)
    questions = [data.eval_source.question(row) for row in raw]
    gold = list(data.datasets["test"]["answers"])
    assert len(questions) == len(gold), "an evaluation problem without an answer was dropped"
    model_args = cli.config["model"]["init_args"]
    data_args = cli.config["data"]["init_args"]
    opt_args = model_args["optimizer"]["init_args"]
    losses = train_losses(getattr(trainer.logger, "log_dir", None))
    last_ckpt = Path(trainer.checkpoint_callbacks[-1].dirpath or "") / "last.ckpt"
    examples = []
    for i in range(min(args.examples, len(questions))):
        examples.append(
            {
                "index": i,
                "question": questions[i],
                "gold": gold[i],
                "before": {
                    "generation": evaluations["before"]["texts"][i],
                    "extracted": evaluations["before"]["extracted"][i],
                    "correct": i in evaluations["before"]["correct_indices"],
                },
                "after": {
                    "generation": evaluations["after"]["texts"][i],
                    "extracted": evaluations["after"]["extracted"][i],
                    "correct": i in evaluations["after"]["correct_indices"],
                },
            }
        )
    gen_lengths = {
        name: [len(module.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in ev["texts"]]
        for name, ev in evaluations.items()
    }
    result: dict[str, Any] = {
        "command": f"HF_HUB_OFFLINE=1 {command}".strip(),
        "config": args.config,
        "cli_overrides": overrides,
        "reproduce_with_cli": [
            f"python -m hadamard_lit test --config {args.config}",
            f"python -m hadamard_lit fit --config {args.config}",
            f"python -m hadamard_lit test --config {args.config} --ckpt_path <run>/checkpoints/last.ckpt",
        ],
        "settings": {
            "model": f"{model_args['model_name_or_path']} "
            f"({model_args['from_pretrained_kwargs'].get('gguf_file')}, de-quantised to "
            f"{model_args['from_pretrained_kwargs'].get('dtype')})",
            "adapter": str(model_args["adapter"]["class_path"]),
            "adapted_modules": len(get_adapter_record(module.model).adapted),
            "trainable_params": count_trainable_parameters(module.model),
            "total_params": count_parameters(module.model),
            "evaluation": {
                "data": f"GSM8K test, first {len(gold)} problems ({data_args['data_dir']})",
                "decoding": "greedy (do_sample=False, num_beams=1), stops at EOS <|im_end|> "
                "or max_new_tokens",
                "max_new_tokens": model_args["max_new_tokens"],
                "prompt_format": "Alpaca zero-shot template (MathDataModule default), no chat "
                "template, no few-shot examples",
                "prompt_template": data_args["prompt_template"],
                "eval_batch_size": data_args["eval_batch_size"],
                "padding": "left",
                "answer_extraction": "CausalLMModule, answer_format="
                f"{model_args['answer_format']} (gsm8k: number after the last '####', else "
                "the last number in the text)",
                "metric": "MathExactMatch (normalize_answer on both sides)",
            },
            "training": {
                "data": f"GSM8K train ({len(data.datasets['train'])} problems, shuffled "
                f"with seed {cli.config['seed_everything']}); loss on the solution only",
                "max_steps": cli.config["trainer"]["max_steps"],
                "batch_size": data_args["batch_size"],
                "max_length": data_args["max_length"],
                "optimizer": f"{model_args['optimizer']['class_path']} lr={opt_args['lr']} "
                f"weight_decay={opt_args['weight_decay']}",
                "lr_schedule": model_args["lr_schedule"],
                "warmup_steps": model_args["warmup_steps"],
                "precision": cli.config["trainer"]["precision"] or "32-true (default)",
            },
            "torch_threads": args.threads,
            "seed": cli.config["seed_everything"],
        },
        "before": {
            k: v for k, v in evaluations["before"].items() if k not in ("texts", "extracted")
        },
        "after": {k: v for k, v in evaluations["after"].items() if k not in ("texts", "extracted")},
        "generated_tokens": {
            name: {
                "mean": round(sum(v) / max(len(v), 1), 1),
                "at_max_new_tokens": sum(n >= model_args["max_new_tokens"] for n in v),
            }
            for name, v in gen_lengths.items()
        },
        "global_step": global_step,
        "train_loss": losses,
        "timings": timings,
        "run_dir": getattr(trainer.logger, "log_dir", None),
        "last_checkpoint": str(last_ckpt) if last_ckpt.is_file() else None,
        "examples": examples,
        "all_generations": {
            name: [
                {"index": i, "gold": gold[i], "extracted": ev["extracted"][i], "text": t}
                for i, t in enumerate(ev["texts"])
            ]
            for name, ev in evaluations.items()
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_start": [round(x, 2) for x in load_avg_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": _version("transformers"),
            "lightning": _version("lightning"),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.tag}.md").write_text(markdown(result))
    print(f"wrote {RESULTS / (args.tag + '.json')} and .md", flush=True)
    return result


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def markdown(r: Mapping[str, Any]) -> str:
    s, ev, tr, t = (
        r["settings"],
        r["settings"]["evaluation"],
        r["settings"]["training"],
        r["timings"],
    )
    b, a = r["before"], r["after"]
    lines = [
        "# Math smoke: SmolLM2-135M-Instruct + AdaDHP on GSM8K",
        "",
        f"`{r['command']}` (config `{r['config']}`)",
        "",
        "| | exact match | correct | no answer found | mean generated tokens | hit max_new_tokens |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in (("before (AdaDHP at identity)", b), (f"after {r['global_step']} steps", a)):
        key = "before" if name.startswith("before") else "after"
        g = r["generated_tokens"][key]
        lines.append(
            f"| {name} | {100 * e['exact_match']:.1f}% | {e['correct']}/{e['total']} | "
            f"{e['no_answer_found']} | {g['mean']} | {g['at_max_new_tokens']} |"
        )
    losses = r["train_loss"]
    loss_text = (
        f"{losses[0]['loss']} (step {losses[0]['step']}) -> {losses[-1]['loss']} "
        f"(step {losses[-1]['step']})"
        if losses
        else "n/a"
    )
    lines += [
        "",
        f"Wall time: load {t['load_s']} s, evaluation before {t['eval_before_s']} s, "
        f"training {t['train_s']} s, evaluation after {t['eval_after_s']} s; "
        f"total {t['total_s']} s ({s['torch_threads']} torch thread(s), "
        f"{r['machine']['cpus']} shared cores, load average "
        f"{r['machine']['load_average_start'][0]} at start).",
        "",
        "Settings:",
        "",
        f"- model: {s['model']}; adapter {s['adapter']}, "
        f"{s['trainable_params']:,} trainable of {s['total_params']:,} parameters",
        f"- evaluation: {ev['data']}; {ev['decoding']}; max_new_tokens {ev['max_new_tokens']}; "
        f"batch {ev['eval_batch_size']}, {ev['padding']}-padded; prompt: {ev['prompt_format']}; "
        f"answer: {ev['answer_extraction']}; {ev['metric']}",
        f"- training: {tr['data']}; {tr['max_steps']} steps of batch {tr['batch_size']}, "
        f"max_length {tr['max_length']}; {tr['optimizer']}, {tr['lr_schedule']} after "
        f"{tr['warmup_steps']} warm-up steps; precision {tr['precision']}",
        f"- training loss: {loss_text}",
        "",
        "Reproduce with the CLI:",
        "",
        "```bash",
        *r["reproduce_with_cli"],
        "```",
        "",
        "## Examples (the first problems; the same ones before and after)",
        "",
    ]
    for ex in r["examples"]:
        lines += [f"### Problem {ex['index']} (gold answer {ex['gold']})", "", ex["question"], ""]
        for key in ("before", "after"):
            e = ex[key]
            verdict = "correct" if e["correct"] else "wrong"
            lines += [
                f"**{key}** (extracted `{e['extracted']}`, {verdict}):",
                "",
                "```text",
                e["generation"].strip(),
                "```",
                "",
            ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
