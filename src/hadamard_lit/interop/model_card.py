"""The model card (``README.md``) every export writes: the Hub's format, YAML metadata first.

What a reader of the folder needs to trust and reuse it: the base model, the method and its
options, how many parameters were trained, which weight matrices AdaDHP's selection kept,
the task, the run's last validation and test metrics, the training config, and the code
that loads the folder.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hadamard_lit import __version__

CARD_FILE = "README.md"
#: transformers class suffix -> the Hub's pipeline tag.
PIPELINE_TAGS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("ForCausalLM", "text-generation"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
)


@dataclass
class CardFacts:
    """What a model card says; every field may be unknown (``None`` / empty)."""

    base_model: str | None
    model_class: str
    method: str
    method_options: dict[str, Any]
    trainable_params: int | None = None
    total_params: int | None = None
    task: str | None = None
    #: ``"merged"`` (a plain transformers model) or ``"peft"`` (an adapter folder).
    kind: str = "merged"
    #: AdaDHP's selection: matrices kept and removed (name -> the step it was removed at).
    selection: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    config_yaml: str | None = None
    adapted_modules: Sequence[str] = ()
    run_dir: str | None = None
    #: ``from_pretrained`` arguments the base model needs to take the adapter (``num_labels``).
    base_kwargs: dict[str, Any] = field(default_factory=dict)
    #: The checkpoint the export was made from.
    checkpoint: str | None = None
    #: The transformers auto class that loads the base (``AutoModelForSeq2SeqLM``).
    auto_class: str | None = None
    #: The checkpoint's own validation (:func:`validation_from_checkpoint`): what these
    #: weights scored, where ``metrics`` holds the run's last logged values.
    validation: dict[str, Any] | None = None

    @property
    def card_metrics(self) -> dict[str, float]:
        """The metrics the card reports: the checkpoint's validation where it has one (a
        best checkpoint's, not the run's last), and the run's test metrics."""
        if not self.validation:
            return dict(self.metrics)
        tests = {k: v for k, v in self.metrics.items() if k.startswith("test/")}
        return {**self.validation["metrics"], **tests}

    @property
    def hub_base_model(self) -> str | None:
        """The base model as a Hub id, if it is one (not a folder or ``package:``)."""
        name = self.base_model
        if not name or ":" in name or name.startswith((".", "/", "(")) or Path(name).exists():
            return None
        return name if name.count("/") <= 1 else None


def last_metrics(run_dir: Path) -> dict[str, float]:
    """The last value of every ``val/*`` and ``test/*`` metric in the run's ``metrics.csv``
    (``run_dir/metrics.csv``, or the newest below it: a sweep point logs to a subfolder)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        logs = sorted(run_dir.rglob("metrics.csv"), key=lambda f: f.stat().st_mtime)
        if not logs:
            return {}
        path = logs[-1]
    found: dict[str, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and key.startswith(("val/", "test/")) and value not in (None, ""):
                    found[key] = float(value)
    return {k: v for k, v in found.items() if math.isfinite(v)}


def validation_from_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The last validation before the checkpoint was saved: ``{"step", "metrics",
    "checkpoint_step"}`` (``None``: saved before any validation, or by an older hadamard_lit)."""
    record = (checkpoint.get("hadamard_lit") or {}).get("validation")
    if not isinstance(record, Mapping) or not record.get("metrics"):
        return None
    return {
        "step": record.get("step"),
        "metrics": {k: float(v) for k, v in record["metrics"].items()},
        "checkpoint_step": checkpoint.get("global_step"),
    }


def selection_from_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """AdaDHP's selection result from a checkpoint's callback states (``None``: no
    selection ran)."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("AdaptiveSelection") and isinstance(state, Mapping):
            modules = list(state.get("modules") or [])
            removed = dict(state.get("removed") or {})
            return {
                "modules": len(modules),
                "active": [m for m in modules if m not in removed],
                "removed": removed,
                "last_step": state.get("last_step"),
            }
    return None


def render(facts: CardFacts, folder_name: str) -> str:
    """The card's text."""
    tags = ["hadamard_lit", facts.method.lower(), "peft" if facts.kind == "peft" else "merged"]
    pipeline = next((t for s, t in PIPELINE_TAGS if facts.model_class.endswith(s)), None)
    meta: dict[str, Any] = {
        "library_name": "peft" if facts.kind == "peft" else "transformers",
        "base_model": facts.hub_base_model,
        "pipeline_tag": pipeline,
        "tags": tags,
    }
    metrics = facts.card_metrics
    if metrics and facts.task:
        meta["model-index"] = [
            {
                "name": folder_name,
                "results": [
                    {
                        "task": {"type": pipeline or "other"},
                        "dataset": {"name": facts.task, "type": facts.task},
                        "metrics": [
                            {"name": k, "type": k.replace("/", "_"), "value": round(v, 6)}
                            for k, v in sorted(metrics.items())
                        ],
                    }
                ],
            }
        ]
    front = yaml.safe_dump({k: v for k, v in meta.items() if v is not None}, sort_keys=False)
    parts = [f"---\n{front}---\n", f"# {folder_name}\n", _summary(facts), _method(facts)]
    if facts.selection is not None:
        parts.append(_selection(facts.selection))
    parts.append(_results(facts))
    parts.append(_loading(facts, folder_name))
    if facts.config_yaml:
        parts.append(f"## Training config\n\n```yaml\n{facts.config_yaml.rstrip()}\n```\n")
    return "\n".join(parts)


def _summary(facts: CardFacts) -> str:
    what = (
        "a peft adapter folder, to load onto the base model"
        if facts.kind == "peft"
        else "a plain transformers model with the adapter merged into its weights"
    )
    task = f" on **{facts.task}**" if facts.task else ""
    return (
        f"`{facts.base_model or 'a backbone'}` ({facts.model_class}) fine-tuned with "
        f"**{facts.method}**{task} by hadamard_lit {__version__}; this folder is {what}.\n"
    )


def _method(facts: CardFacts) -> str:
    lines = ["## Method\n", "| option | value |", "|---|---|"]
    lines += [f"| {k} | `{v!r}` |" for k, v in facts.method_options.items()]
    if facts.trainable_params is not None and facts.total_params:
        share = 100.0 * facts.trainable_params / facts.total_params
        lines.append(
            f"\nTrainable parameters: {facts.trainable_params:,} of {facts.total_params:,} "
            f"({share:.4f}%)."
        )
    if facts.adapted_modules:
        lines.append(f"Adapted weight matrices: {len(facts.adapted_modules)}.")
    return "\n".join(lines) + "\n"


def _selection(selection: Mapping[str, Any]) -> str:
    active, removed = selection["active"], selection["removed"]
    lines = [
        "## Adaptive parameter selection\n",
        f"{len(active)} of {selection['modules']} weight matrices kept (the others were "
        "pruned during training and are the identity: the base model's weights).\n",
        "Kept:\n",
        *(f"- `{name}`" for name in active),
    ]
    if removed:
        lines += ["", "Removed (at optimizer step):", ""]
        lines += [f"- `{name}` ({step})" for name, step in removed.items()]
    return "\n".join(lines) + "\n"


def _results(facts: CardFacts) -> str:
    if not facts.card_metrics:
        where = f" in `{facts.run_dir}`" if facts.run_dir else ""
        return f"## Results\n\nNo metrics were found{where} (no `metrics.csv` beside the run).\n"
    lines = ["## Results\n"]
    source = f"`{facts.checkpoint}`" if facts.checkpoint else "the checkpoint"
    if facts.validation:
        saved = facts.validation.get("checkpoint_step")
        lines.append(
            f"Validation of these weights ({source}: the last validation before it was saved, "
            f"at optimizer step {facts.validation.get('step')}"
            + (f"; saved at step {saved}" if saved is not None else "")
            + "). Test metrics, if any, are the last the run logged. Scores are fractions.\n"
        )
    else:
        lines.append(
            f"Last value logged by the run (scores are fractions). This folder was exported "
            f"from {source}, which may be an earlier point of the run.\n"
        )
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(facts.card_metrics.items())]
    return "\n".join(lines) + "\n"


def _loading(facts: CardFacts, folder_name: str) -> str:
    auto = facts.auto_class or next(
        (f"AutoModel{s}" for s, _ in PIPELINE_TAGS if facts.model_class.endswith(s)),
        "AutoModel",
    )
    if facts.kind == "peft":
        kwargs = "".join(f", {k}={v!r}" for k, v in facts.base_kwargs.items())
        base = f'"{facts.base_model}"'
        where = ""
        if str(facts.base_model).startswith("package:"):  # a model folder from a PyPI package
            where = "from hadamard_lit.backbones import resolve_model_path\n"
            base = f'resolve_model_path("{facts.base_model}")'
        code = (
            f"from peft import PeftModel\nfrom transformers import {auto}\n{where}\n"
            f"base = {auto}.from_pretrained({base}{kwargs})\n"
            f'model = PeftModel.from_pretrained(base, "{folder_name}")'
        )
    else:
        code = (
            f"from transformers import {auto}, AutoTokenizer\n\n"
            f'model = {auto}.from_pretrained("{folder_name}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{folder_name}")'
        )
    return f"## Loading\n\n```python\n{code}\n```\n"


def write_card(folder: Path, facts: CardFacts, name: str | None = None) -> Path:
    """Write ``folder/README.md`` (``name``: the title, the folder's name by default)."""
    path = folder / CARD_FILE
    path.write_text(render(facts, name or folder.name))
    return path
