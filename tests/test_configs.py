"""Every YAML in ``configs/`` parses through the CLI parser, alone or stacked.

``--print_config`` parses and validates (class paths, argument names and types) without
building anything, so configs that name hub models run here offline.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hadamard_lit.cli import HadamardCLI

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUN_CONFIGS = sorted(CONFIGS.glob("*.yaml"))
METHODS = sorted((CONFIGS / "method").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when args= comes with pytest's own command line in sys.argv.
    monkeypatch.setattr(sys, "argv", ["hadamard_lit"])


def parsed(
    capsys: pytest.CaptureFixture[str], *configs: Path, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The full config ``fit --config A --config B ... --print_config`` prints."""
    args = ["fit"]
    for config in configs:
        args += ["--config", str(config)]
    with pytest.raises(SystemExit) as exited:
        HadamardCLI(args=[*args, *extra, "--print_config"])
    assert exited.value.code == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


def test_every_config_is_tested() -> None:
    assert {p.name for p in RUN_CONFIGS} >= {
        "t5_glue.yaml",
        "t5_superglue.yaml",
        "roberta_glue.yaml",
        "llama_math.yaml",
        "quickstart.yaml",
    }
    assert {p.stem for p in METHODS} == {"adadhp", "hut", "hadamard_adapter", "lora", "ia3", "full"}


@pytest.mark.parametrize("config", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_config_parses(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parsed(capsys, config)
    assert cfg["model"]["class_path"].startswith("hadamard_lit.modules.")
    assert cfg["model"]["init_args"]["adapter"]["class_path"].startswith("hadamard_lit.adapters.")
    assert cfg["data"]["class_path"].startswith("hadamard_lit.data.")
    assert cfg["checkpoint"]["monitor"] == "val/score"


@pytest.mark.parametrize("method", METHODS, ids=lambda p: p.stem)
def test_method_fragment_stacks(method: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parsed(capsys, CONFIGS / "t5_glue.yaml", method)
    adapter = cfg["model"]["init_args"]["adapter"]["class_path"].rsplit(".", 1)[-1]
    expected = {
        "adadhp": "AdaDHP",
        "hut": "HUT",
        "hadamard_adapter": "HadamardAdapter",
        "lora": "LoRA",
        "ia3": "IA3",
        "full": "FullFineTuning",
    }[method.stem]
    assert adapter == expected
    # The run config's other choices survive the stacking.
    assert cfg["data"]["init_args"]["task"] == "sst2"
    assert cfg["model"]["init_args"]["warmup_steps"] == 500


def test_t5_glue_is_the_papers_sst2_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parsed(capsys, CONFIGS / "t5_glue.yaml", extra=("--data.init_args.task", "rte"))
    model = cfg["model"]["init_args"]
    assert model["model_name_or_path"] == "google-t5/t5-base"
    assert model["optimizer"]["init_args"]["lr"] == pytest.approx(3e-2)
    assert model["lr_schedule"] == "linear" and model["warmup_steps"] == 500
    assert cfg["data"]["init_args"]["batch_size"] == 100
    assert cfg["data"]["init_args"]["max_length"] == 128
    assert cfg["trainer"]["max_epochs"] == 10
    assert cfg["data"]["init_args"]["task"] == "rte", "one override picks another task"
