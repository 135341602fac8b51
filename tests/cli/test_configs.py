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

from hadamard_lit.adapters import AdaDHP
from hadamard_lit.cli import HadamardCLI
from helpers.methods import strategy_classes
from helpers.paths import REPO

CONFIGS = REPO / "configs"
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
    # One fragment per method of the package, named after its module.
    assert {p.stem for p in METHODS} == set(strategy_classes())


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
    adapter = cfg["model"]["init_args"]["adapter"]["class_path"]
    cls = strategy_classes()[method.stem]
    expected = {f"{cls.__module__}.{cls.__name__}", f"hadamard_lit.adapters.{cls.__name__}"}
    assert adapter in expected
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


TASK_RECIPES = sorted((CONFIGS / "t5_tasks").glob("*.yaml"))
STRATEGIES = sorted((CONFIGS / "strategy").glob("*.yaml"))
SLURM = REPO / "slurm"


def _selection(cfg: dict[str, Any]) -> dict[str, Any]:
    (callback,) = [
        c
        for c in cfg["trainer"]["callbacks"] or []
        if c["class_path"].endswith("AdaptiveSelection")
    ]
    return callback["init_args"]


def test_t5_glue_prunes_on_the_papers_sst2_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parsed(capsys, CONFIGS / "t5_glue.yaml")
    selection = _selection(cfg)
    assert (
        selection["target"],
        selection["t_init"],
        selection["t_final"],
        selection["delta_t"],
    ) == (96, 400, 3600, 500)


def test_there_is_a_recipe_for_each_of_the_17_tasks() -> None:
    from hadamard_lit.data.tasks import task_names

    assert {p.stem for p in TASK_RECIPES} == set(task_names())


@pytest.mark.parametrize("recipe", TASK_RECIPES, ids=lambda p: p.stem)
def test_task_recipe_stacks(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parsed(capsys, CONFIGS / "t5_glue.yaml", recipe)
    assert cfg["data"]["init_args"]["task"] == recipe.stem
    selection = _selection(cfg)
    assert selection["target"] == 96 and selection["t_init"] < selection["t_final"]


@pytest.mark.parametrize("method", METHODS, ids=lambda p: p.stem)
def test_only_adadhp_fragments_keep_the_selection(
    method: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # AdaDHP (and a method built on it) keeps the run config's selection; baselines drop it.
    cfg = parsed(capsys, CONFIGS / "t5_glue.yaml", method)
    if issubclass(strategy_classes()[method.stem], AdaDHP):
        assert _selection(cfg)["target"] == 96
    else:
        assert not cfg["trainer"]["callbacks"]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda p: p.stem)
def test_strategy_fragment_stacks(strategy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parsed(capsys, CONFIGS / "t5_glue.yaml", strategy)
    expected = yaml.safe_load(strategy.read_text())["trainer"]
    for key, value in expected.items():
        got = cfg["trainer"][key]
        if isinstance(value, dict):
            assert got["class_path"] == value["class_path"]
        else:
            assert got == value


@pytest.mark.parametrize(
    "sweep,run_config",
    [
        ("t5_nlu.yaml", "t5_glue.yaml"),
        ("llama_math.yaml", "llama_math.yaml"),
        ("quickstart.yaml", "quickstart.yaml"),
    ],
)
def test_slurm_sweeps_expand_to_valid_configs(
    sweep: str, run_config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from hadamard_lit.sweep import load_sweep

    points = load_sweep(SLURM / sweep).points
    assert len({p.name for p in points}) == len(points)
    for point in (points[0], points[-1]):
        with pytest.raises(SystemExit) as exited:
            HadamardCLI(
                args=[
                    "fit",
                    "--config",
                    str(CONFIGS / run_config),
                    *point.cli_args(),
                    "--print_config",
                ]
            )
        assert exited.value.code == 0, capsys.readouterr().err
        capsys.readouterr()


def test_t5_nlu_sweep_is_the_papers_grid() -> None:
    from hadamard_lit.sweep import load_sweep

    points = load_sweep(SLURM / "t5_nlu.yaml").points
    assert len(points) == 17 * 5 * 3
