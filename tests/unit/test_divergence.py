"""DivergenceGuard on its own (a trained tensor that goes to inf while the loss is finite),
and LastCheckpoint's save as fit ends."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from hadamard_lit.callbacks import LastCheckpoint, TrainingDiverged
from hadamard_lit.callbacks.divergence import DivergenceGuard


class InfAfterStep(pl.LightningModule):
    """A finite loss at every step; optimizer step ``at + 1`` leaves one weight inf
    (``global_step`` counts the steps completed before this one)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.at = at
        self.losses: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch[0]).pow(2).mean()
        self.losses.append(float(loss))
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.trainer.global_step == self.at:
            with torch.no_grad():
                self.layer.weight[0, 0] = math.inf

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3)

    def train_dataloader(self) -> Any:
        data = torch.utils.data.TensorDataset(torch.randn(32, 4))
        return torch.utils.data.DataLoader(data, batch_size=4)


def test_an_inf_parameter_with_a_finite_loss_stops_the_run(tmp_path) -> None:
    model = InfAfterStep(at=3)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1)
    trainer = pl.Trainer(
        max_steps=8, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[DivergenceGuard(), checkpoints],
    )  # fmt: skip
    with pytest.raises(TrainingDiverged) as raised:
        trainer.fit(model)
    message = str(raised.value)
    assert "at optimizer step 4" in message
    assert "1 trained tensors are not finite (e.g. layer.weight)" in message
    assert f"Last good checkpoint: {tmp_path / 'last.ckpt'}." in message
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 3
    assert all(math.isfinite(loss) for loss in model.losses)  # the loss never said so
    for path in tmp_path.glob("*.ckpt"):  # nothing from the diverged step was saved
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(bool(torch.isfinite(t).all()) for t in state.values()), path


def test_without_the_parameter_check_only_the_loss_is_watched() -> None:
    model = InfAfterStep(at=3)
    trainer = pl.Trainer(
        max_steps=4, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
        callbacks=[DivergenceGuard(check_parameters=False)],
    )  # fmt: skip
    trainer.fit(model)  # the last step leaves the inf weight; only the parameter check sees it
    assert trainer.global_step == 4 and not bool(torch.isfinite(model.layer.weight).all())


class _SavingTrainer:
    """What LastCheckpoint.on_train_end reads of a trainer, recording where it saves."""

    fast_dev_run = False
    global_step = 7

    def __init__(self) -> None:
        self.saved: list[str] = []

    def save_checkpoint(self, path: str, weights_only: bool = False) -> None:
        self.saved.append(str(path))


def test_the_end_of_fit_save_stays_in_its_own_folder(tmp_path) -> None:
    # A fit resumed from another run's folder restores that run's best_model_path.
    callback = LastCheckpoint(dirpath=tmp_path / "new", filename="last", monitor=None)
    callback.best_model_path = str(tmp_path / "old" / "last.ckpt")
    trainer = _SavingTrainer()
    callback.on_train_end(trainer, None)  # type: ignore[arg-type]
    assert trainer.saved == [str(tmp_path / "new" / "last.ckpt")]
    assert callback.best_model_path == str(tmp_path / "new" / "last.ckpt")
    callback.on_train_end(trainer, None)  # type: ignore[arg-type]  # then its own file again
    assert trainer.saved[-1] == str(tmp_path / "new" / "last.ckpt")
