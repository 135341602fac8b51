"""The trainer a module is attached to, or ``None``, through Lightning's public property.

``LightningModule.trainer`` raises when no trainer is attached (a module built by
``load_from_checkpoint``, or in a notebook); the hooks here must work both ways.
"""

from __future__ import annotations

import lightning.pytorch as pl


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """``module.trainer``, or ``None`` when it is not attached to one."""
    try:
        return module.trainer
    except RuntimeError:  # "... is not attached to a `Trainer`"
        return None
