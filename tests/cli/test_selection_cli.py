"""AdaDHP's adaptive selection end to end through ``python -m hadamard_lit`` on a tiny T5
(real tokenizer, real SST-2 rows): the budget follows the cubic curve in the logs, exactly
``n_T`` matrices stay active, removed ones are exact identities that later steps leave
alone, the heat map is written, and the merged export of the pruned model matches it."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM

from hadamard_lit.adapters import adapter_layers
from hadamard_lit.callbacks import AdaptiveSelection, cubic_budget
from helpers.cli import metrics_rows, run, t5_config

TARGET, T_INIT, T_FINAL, DELTA_T = 6, 2, 12, 3  # (12 - 2) is not a multiple of 3


def test_selection_through_the_cli(tmp_path: Path, shared_data: Path, t5_tokenizer: str) -> None:
    config = t5_config(tmp_path, shared_data, t5_tokenizer)
    config["trainer"].update(
        max_epochs=4,  # 6 steps an epoch: pruning ends in epoch 2, training goes on after
        callbacks=[
            {
                "class_path": "hadamard_lit.callbacks.AdaptiveSelection",
                "init_args": {
                    "target": TARGET,
                    "t_init": T_INIT,
                    "t_final": T_FINAL,
                    "delta_t": DELTA_T,
                },
            }
        ],
    )
    fitted = run("fit", config, tmp_path)
    (selection,) = [c for c in fitted.trainer.callbacks if isinstance(c, AdaptiveSelection)]
    model = fitted.model.model
    layers = adapter_layers(model)
    total = len(layers)
    assert total == 32  # tiny T5: 2 encoder blocks x 6 matrices + 2 decoder blocks x 10

    # Exactly n_T active after t_final; removed ones exactly identity although training
    # (AdamW, 12 more steps) went on after their removal.
    assert fitted.trainer.global_step == 24
    assert len(selection.active_modules) == TARGET
    assert len(selection.removed_modules) == total - TARGET
    assert all(T_INIT < step <= T_FINAL for step in selection.removed_modules.values())
    for name in selection.removed_modules:
        for param in layers[name].adapter_parameters().values():
            assert torch.equal(param, torch.ones_like(param)), name
    moved = [
        n
        for n in selection.active_modules
        if not torch.equal(layers[n].row_scale, torch.ones_like(layers[n].row_scale))
    ]
    assert moved, "the surviving matrices trained"

    # The logged budget follows the closed form; the active count meets it at every
    # selection step and holds between them.
    log_dir = Path(fitted.trainer.log_dir or "")
    logged = [r for r in metrics_rows(log_dir) if r.get("selection/budget")]
    assert logged
    for row in logged:
        # Logged while optimizer step t is taken; the CSV row's step is t or t - 1
        # depending on when Lightning flushes it.
        step = int(row["step"])
        budget, active = float(row["selection/budget"]), float(row["selection/active"])
        t = next(
            t for t in (step + 1, step) if cubic_budget(t, total, TARGET, T_INIT, T_FINAL) == budget
        )
        assert active >= budget
        if selection.is_selection_step(t):
            assert active == budget
    budgets = [float(r["selection/budget"]) for r in logged]
    assert budgets == sorted(budgets, reverse=True) and budgets[-1] == TARGET

    assert (log_dir / "adaptive_selection.png").stat().st_size > 10_000

    # The merged export of the pruned model computes what the adapted model computes.
    last = log_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "merged"
    run(
        "export",
        log_dir / "config.yaml",
        tmp_path,
        "--ckpt_path",
        str(last),
        "--output_dir",
        str(out),
    )
    merged = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    card = (out / "README.md").read_text()  # the model card says what the selection kept
    assert f"{TARGET} of {len(selection.modules)} weight matrices kept" in card
    assert all(f"- `{name}`" in card for name in selection.active_modules)
    ids = fitted.model.tokenizer(["sst2 sentence: a gorgeous film ."], return_tensors="pt")
    labels = fitted.model.tokenizer(["positive"], return_tensors="pt").input_ids
    model.eval()
    with torch.no_grad():
        want = model(**ids, labels=labels).logits
        got = merged(**ids, labels=labels).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
