"""What a training run minimises and how it scores the validation rasters.

An :class:`Objective` bundles the step loss, the validation score and the model
builder of one task; the semantic losses (cross-entropy + Dice) and the mIoU
validation through the tiled-inference path live here too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.evaluation.metrics import metrics_from_confusion
from geoseg.io.training_data import LabelledRaster
from geoseg.models.runtime import TorchPredictor
from geoseg.tiling.confusion import tiled_confusion
from geoseg.training.sampling import Batch
from geoseg.types import NODATA_LABEL, ModelMeta, TileSpec

__all__ = [
    "InMemoryLoader",
    "Objective",
    "dice_loss",
    "pixel_loss",
    "semantic_loss",
    "validate_miou",
    "weighted_dice",
]


@dataclass(frozen=True)
class Objective:
    """What a run minimises and how it scores the validation rasters.

    Attributes:
        loss: the model (train mode), the ``(B, C, W, W) float32`` normalized windows
            on its device and their :class:`Batch` (targets, ids) -> scalar loss.
        score: the model -> validation score (higher is better); None = no validation.
        metric: checkpoint metrics key of the score.
        build: the untrained model (called after seeding torch).
        calibrate: the written checkpoint's path -> its temperature fitted on the
            validation rasters and stored (:func:`~geoseg.training.calibration.
            calibrate_checkpoint`); None = no calibration (no validation rasters, or
            not a per-pixel class model).
    """

    loss: Callable[[nn.Module, torch.Tensor, Batch], torch.Tensor]
    score: Callable[[nn.Module], float] | None
    metric: str
    build: Callable[[], nn.Module]
    calibrate: Callable[[Path], Any] | None = None


def pixel_loss(
    model: nn.Module, x: torch.Tensor, batch: Batch,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:  # fmt: skip
    """``loss(model(x), target)`` for models with one ``(B, K', W, W)`` output."""
    return loss(model(x), torch.from_numpy(batch.target).to(x.device))


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft multi-class Dice loss over labelled pixels (255 ignored)."""
    k = logits.shape[1]
    keep = (target != NODATA_LABEL).unsqueeze(1)
    prob = torch.softmax(logits.float(), dim=1) * keep
    onehot = F.one_hot(target.clamp(max=k - 1), k).permute(0, 3, 1, 2) * keep
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1.0 - dice[present].mean() if present.any() else logits.sum() * 0.0


def semantic_loss(
    logits: torch.Tensor, target: torch.Tensor, dice_weight: float,
    class_weights: Sequence[float] | None = None,
) -> torch.Tensor:  # fmt: skip
    """Cross-entropy (weighted per class by ``class_weights``) + ``dice_weight`` x Dice,
    255 ignored."""
    weight = None
    if class_weights is not None:
        weight = torch.tensor(class_weights, dtype=torch.float32, device=logits.device)
    loss = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=NODATA_LABEL)
    return loss + dice_weight * dice_loss(logits, target)


def weighted_dice(logits: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight`` x :func:`dice_loss` (the optional Dice term of the instance loss)."""
    return weight * dice_loss(logits, target)


class InMemoryLoader:
    """Hands the training model to the tiled-inference kernel (no file, no pickling)."""

    def __init__(self, predictor: TorchPredictor) -> None:
        self.predictor = predictor
        self.token = uuid.uuid4().hex

    def __call__(self) -> TorchPredictor:
        return self.predictor

    def __dask_tokenize__(self) -> str:
        return self.token


def validate_miou(
    module: nn.Module, meta: ModelMeta, device: torch.device, val: Sequence[LabelledRaster]
) -> float:
    """mIoU over all validation rasters, scored through the tiled-inference path."""
    predictor = TorchPredictor(module, meta, device)
    tile = TileSpec(window=meta.window, margin=meta.margin, chunk_windows=4, batch_size=8)
    conf = np.zeros((len(meta.schema),) * 2, np.int64)
    for r in val:
        chunks = (r.image.shape[0], tile.chunk, tile.chunk)
        conf += tiled_confusion(
            da.from_array(r.image, chunks=chunks), da.from_array(r.valid, chunks=chunks[1:]),
            da.from_array(r.labels, chunks=chunks[1:]), InMemoryLoader(predictor), tile,
            meta.schema.ids, meta.schema.ids, scheduler="sync",
        )  # fmt: skip
    module.train()
    return metrics_from_confusion(conf, meta.schema.names).miou
