"""Shared by the training tests: the saved checkpoint is the best epoch's model; change masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg.io.checkpoint import load_checkpoint
from geoseg.training.config import TrainConfig
from geoseg.training.loop import TrainResult
from geoseg.training.tasks import task_setup


def assert_saved_model_is_the_best(cfg: TrainConfig, result: TrainResult) -> None:
    """The recorded best is the best validation score of the history, the checkpoint
    records it, and the checkpoint's weights score it again on the validation rasters."""
    scores = [h.val_miou for h in result.history]
    assert None not in scores and len(scores) == cfg.epochs
    assert result.best_miou == max(s for s in scores if s is not None), scores
    tensors, meta = load_checkpoint(result.output)
    assert meta.metrics[result.metric] == pytest.approx(result.best_miou, abs=1e-12)
    objective = task_setup(cfg)(cfg, torch.device("cpu"))[3]
    assert objective.score is not None
    model = objective.build()
    model.load_state_dict(tensors, strict=True)
    assert objective.score(model) == pytest.approx(result.best_miou, abs=1e-9)


def write_change_mask(before: Path, after: Path, path: Path) -> Path:
    """The change labels of two class maps: 1 where the class differs, 0 where it does not,
    255 where either map is nodata (255); ``before``'s profile (uint8, one band)."""
    with rasterio.open(before) as a, rasterio.open(after) as b:
        t0, t1, profile = a.read(1), b.read(1), a.profile
    mask = np.where((t0 == 255) | (t1 == 255), 255, (t0 != t1).astype(np.uint8))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask[None])
    return path
