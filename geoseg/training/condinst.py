"""Training setup of CondInst (``geoseg train --task instance --arch condinst``)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from geoseg.models.condinst import HEAD_STRIDES, CondInstPredictor, size_ranges
from geoseg.models.condinst_targets import condinst_loss, location_targets
from geoseg.training.config import TrainConfig
from geoseg.training.sampling import Batch
from geoseg.training.tasks import TaskSetup, ap50_instance_setup, batch_objects
from geoseg.types import ClassSchema

__all__ = ["condinst_setup", "condinst_step_loss"]


def condinst_setup(cfg: TrainConfig, device: torch.device) -> TaskSetup:
    """Rasters, class-index targets (ids ride along), metadata, CondInst loss / AP50."""
    loss = partial(
        condinst_step_loss, schema=cfg.classes, ranges=size_ranges(cfg.options),
        dice_weight=float(cfg.options.get("dice_weight", 1.0)),
        max_proposals=int(cfg.options.get("max_proposals", 500)),
    )  # fmt: skip
    return ap50_instance_setup(cfg, device, CondInstPredictor, loss)


def condinst_step_loss(
    model: torch.nn.Module, x: torch.Tensor, batch: Batch, schema: ClassSchema,
    ranges: Sequence[tuple[float, float]], dice_weight: float = 1.0, max_proposals: int = 500,
) -> torch.Tensor:  # fmt: skip
    """:func:`~geoseg.models.condinst_targets.condinst_loss` of a CondInst on one batch.

    Objects: :func:`~geoseg.training.tasks.batch_objects`; ``ranges`` are the head
    levels' ``[low, high)`` box sides, px.
    """
    outputs = model(x)
    shapes = [(int(c.shape[-2]), int(c.shape[-1])) for c in outputs[0]]
    targets = [location_targets(objects, shapes, HEAD_STRIDES, ranges)
               for objects in batch_objects(batch, schema, "CondInst")]  # fmt: skip
    stride: int = getattr(model, "mask_stride")  # noqa: B009 (an nn.Module attribute)
    channels: int = getattr(model, "dynamic_channels")  # noqa: B009
    return condinst_loss(outputs, targets, HEAD_STRIDES, stride, channels, dice_weight,
                         max_proposals)  # fmt: skip
