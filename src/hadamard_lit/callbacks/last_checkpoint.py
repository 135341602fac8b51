"""The run's ``last.ckpt``: Lightning's ``ModelCheckpoint``, also written when fit ends.

``ModelCheckpoint`` writes at validation or epoch ends. A fit that stops between them (a
quickstart with ``--trainer.max_steps 10`` validates every 75 steps) ended with no
checkpoint at all, so there was nothing to resume, validate, predict or export. This one
writes once more at the end of a fit that completed (a crash or a divergence ends without
``on_train_end``, so only healthy states are written).
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (the CLI's ``last_checkpoint:``) that also saves as fit ends.

    Takes exactly ``ModelCheckpoint``'s arguments; meant for ``monitor=None``,
    ``save_top_k=1`` (one file, always the latest).
    """

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if (
            getattr(trainer, "fast_dev_run", False)
            or trainer.global_step == 0
            or not self.save_top_k
        ):
            return
        if self.monitor is not None or self.dirpath is None:
            return  # a ranked checkpoint is a choice among scores, not the latest state
        # A fit resumed from another run's folder restores that run's best_model_path:
        # never write there.
        ours = self.best_model_path and Path(self.best_model_path).parent == Path(self.dirpath)
        path = self.best_model_path if ours else self.format_checkpoint_name({})
        trainer.save_checkpoint(path, self.save_weights_only)
        self.best_model_path = self.last_model_path = path
