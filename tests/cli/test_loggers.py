"""The shipped logger configs (configs/logger/) offline: TensorBoard into a local folder,
MLflow into a local SQLite store. Metrics arrive, AdaDHP's selection picture arrives as an
image, and every run keeps a folder of its own for its config and checkpoints."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.cli import bert_config, run
from helpers.paths import REPO

SELECTION = {
    "class_path": "hadamard_lit.callbacks.AdaptiveSelection",
    "init_args": {"target": 2, "t_init": 0.25, "t_final": 0.75, "delta_t": 1},
}


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["hadamard_lit"])


def needs(package: str, install: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed: pip install {install}")


def with_logger(tmp_path: Path, shared_data: Path, minilm: str, fragment: str) -> dict[str, Any]:
    """The tiny BERT run with selection and the shipped logger fragment, paths in tmp."""
    config = bert_config(tmp_path, shared_data, minilm, callbacks=[SELECTION])
    shipped = yaml.safe_load((REPO / "configs" / "logger" / fragment).read_text())["trainer"]
    config["trainer"]["logger"] = shipped["logger"]
    if "default_root_dir" in shipped:
        config["trainer"]["default_root_dir"] = str(tmp_path / shipped["default_root_dir"])
    return config


def test_tensorboard_gets_metrics_and_the_selection_picture(
    tmp_path: Path, shared_data: Path, minilm: str
) -> None:
    needs("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = with_logger(tmp_path, shared_data, minilm, "tensorboard.yaml")
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    fitted = run("fit", config, tmp_path)
    log_dir = Path(fitted.trainer.log_dir or "")
    assert log_dir == tmp_path / "runs" / "tensorboard" / "version_0"
    assert (log_dir / "config.yaml").is_file() and (log_dir / "checkpoints" / "last.ckpt").is_file()
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    assert "val/score" in events.Tags()["scalars"]
    assert "selection/picture" in events.Tags()["images"]
    (image,) = events.Images("selection/picture")
    assert image.width > 200 and image.height > 200


def test_mlflow_gets_metrics_and_the_picture_and_each_run_has_its_own_folder(
    tmp_path: Path, shared_data: Path, minilm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs("mlflow", "mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # the shipped config's store is relative: runs/mlflow.db
    (tmp_path / "runs").mkdir()
    config = with_logger(tmp_path, shared_data, minilm, "mlflow.yaml")
    folders = []
    for _ in range(2):
        fitted = run("fit", config, tmp_path)
        folders.append(Path(fitted.trainer.log_dir or ""))
    assert folders[0] != folders[1], "a second run must not share (or be refused) the first's"
    for folder in folders:
        assert (folder / "config.yaml").is_file()
        assert (folder / "checkpoints" / "last.ckpt").is_file()

    client = MlflowClient(tracking_uri="sqlite:///runs/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "hadamard_lit"]
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_id for r in runs} == {f.name for f in folders}
    for record in runs:
        assert "val/score" in record.data.metrics
        images = [a.path for a in client.list_artifacts(record.info.run_id, "images")]
        assert images == ["images/adaptive_selection.png"]
