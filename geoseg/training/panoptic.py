"""Per-window targets and training losses of Panoptic-DeepLab and Mask R-CNN models.

Both read the same instance labels as the bottom-up model (an id raster or a
polygon layer, see :mod:`geoseg.training.instances`). The window sampler cuts the
class-index target and the instance ids of each window together and turns them
with the same augmentation; the targets below are built from the turned window,
so offsets point the right way and an object cut by the window edge is centred
on its visible part, as at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from geoseg.errors import GeosegError
from geoseg.models.maskrcnn import maskrcnn_targets
from geoseg.models.panoptic import panoptic_loss, panoptic_targets
from geoseg.training.sampling import Batch
from geoseg.types import NODATA_LABEL, ClassSchema

__all__ = ["maskrcnn_step_loss", "panoptic_batch_targets", "panoptic_step_loss"]


def _ids(batch: Batch) -> np.ndarray:
    if batch.ids is None:
        raise GeosegError("panoptic and Mask R-CNN training need instance ids in the batch")
    return batch.ids


def panoptic_batch_targets(
    batch: Batch, things: Sequence[int], sigma_px: float = 8.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre heatmaps, offsets and offset masks of a batch (:func:`panoptic_targets`).

    Args:
        batch: windows with ``target`` (class index, 255 = ignore) and ``ids``.
        things: class indices (channels) of the thing classes.
        sigma_px: standard deviation of each centre's Gaussian, px.

    Returns:
        ``centre (B, W, W) float32`` in ``[0, 1]``, ``offset (B, 2, W, W) float32``
        px and ``thing (B, W, W) bool``: labelled thing pixels of an instance.
    """
    ids = _ids(batch)
    pairs = [
        panoptic_targets(i, t, things, sigma_px) for i, t in zip(ids, batch.target, strict=True)
    ]
    thing = np.isin(batch.target, list(things)) & (ids > 0) & (batch.target != NODATA_LABEL)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), thing


def panoptic_step_loss(
    model: nn.Module, x: torch.Tensor, batch: Batch, things: Sequence[int]
) -> torch.Tensor:
    """:func:`~geoseg.models.panoptic.panoptic_loss` of a Panoptic-DeepLab on one batch.

    Args:
        model: ``(B, C, W, W)`` -> ``(B, K + 3, W, W)``.
        x: ``(B, C, W, W) float32`` normalized windows, on the model's device.
        batch: the same windows' targets and instance ids.
        things: class indices of the thing classes.
    """
    centre, offset, thing = panoptic_batch_targets(batch, things)
    dev = x.device
    return panoptic_loss(
        model(x).float(), torch.from_numpy(batch.target).to(dev),
        torch.from_numpy(centre).to(dev), torch.from_numpy(offset).to(dev),
        torch.from_numpy(thing).to(dev),
    )  # fmt: skip


def maskrcnn_step_loss(
    model: nn.Module, x: torch.Tensor, batch: Batch, schema: ClassSchema
) -> torch.Tensor:
    """Sum of a torchvision Mask R-CNN's train-mode losses on one batch.

    Windows without objects go in with empty targets (background-only images,
    which torchvision trains the RPN and box classifier on). Unlabelled pixels
    (255) belong to no object.

    Args:
        model: from :func:`~geoseg.models.maskrcnn.build_maskrcnn`, in train mode.
        x: ``(B, C, W, W) float32`` normalized windows, on the model's device.
        batch: the same windows' class-index targets and instance ids.
        schema: classes (``is_thing`` in schema order gives the labels).
    """
    lut = np.array([*schema.ids, NODATA_LABEL], np.int64)  # index 255 -> last: stays 255
    class_ids = lut[np.minimum(batch.target, len(schema.ids))]
    targets = [
        {k: v.to(x.device) for k, v in maskrcnn_targets(i, c, schema).items()}
        for i, c in zip(
            np.where(batch.target == NODATA_LABEL, 0, _ids(batch)), class_ids, strict=True
        )
    ]
    losses = model(list(x), targets)
    return torch.stack([v.float() for v in losses.values()]).sum()
