"""Send a picture the run drew (a PNG file) to whichever loggers are active.

Lightning has no logger-independent image call, so each kind gets its own: TensorBoard an
image summary, MLflow an artifact, loggers with ``log_image`` (Weights & Biases, Neptune)
that. The CSV logger has no place for images: the PNG beside its metrics is the record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def log_image_file(loggers: Iterable[Any], key: str, path: Path, step: int) -> list[str]:
    """Log the PNG at ``path`` under ``key`` to every logger that takes images.

    Returns:
        The names of the logger classes that received it.
    """
    sent = []
    for logger in loggers:
        kind = type(logger).__name__
        try:
            if kind == "TensorBoardLogger":
                logger.experiment.add_image(key, _pixels(path), step, dataformats="HWC")
            elif kind == "MLFlowLogger":
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="images")
            elif callable(getattr(logger, "log_image", None)):
                logger.log_image(key=key, images=[str(path)], step=step)
            else:
                continue
        except Exception as error:  # a picture must never fail the run that drew it
            log.warning("Could not log %s to %s: %s", path.name, kind, error)
            continue
        sent.append(kind)
    return sent


def _pixels(path: Path) -> Any:
    """The PNG as an (H, W, 3) uint8 array."""
    import numpy as np
    from matplotlib import image

    pixels = image.imread(str(path))[..., :3]  # RGBA floats in [0, 1] -> RGB bytes
    return (np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)
