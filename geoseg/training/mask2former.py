"""Training a Mask2Former (:mod:`geoseg.models.mask2former`) with geoseg's loop.

Every task is mask classification: each window's targets are binary masks with a
class each (:func:`window_segments`), matched to the queries by transformers'
Hungarian matcher (scipy) and scored by its loss (class cross-entropy with a
down-weighted "no object", point-sampled mask BCE and Dice, on every decoder
layer). Per task:

- ``semantic``: one mask per class present in the window;
- ``instance``: one mask per object (instance id) of a thing class;
- ``panoptic``: the objects, and one mask per stuff class present (its pixels
  outside the objects).

Unlabelled pixels (255: no label, nodata, a class outside the schema) belong to
no mask and are left out of the mask loss: the query masks are set to a confident
"no" (:data:`IGNORED_LOGIT`, no gradient) on the cells of the model's stride-4
mask grid that hold no labelled pixel, so neither the matcher nor the loss sees
them. Cells partly labelled are trained on their labelled pixels' values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.errors import GeosegError
from geoseg.models.hf import transformers_module
from geoseg.models.hf_masks import HFMaskPredictor
from geoseg.models.mask2former import mask2former_config
from geoseg.models.registry import training_family
from geoseg.training.config import TrainConfig
from geoseg.training.data import class_targets
from geoseg.training.instances import instance_scorer
from geoseg.training.objectives import Objective
from geoseg.training.sampling import Batch
from geoseg.training.tasks import TaskSetup, read_instances, semantic_setup
from geoseg.types import NODATA_LABEL, ModelMeta

__all__ = ["IGNORED_LOGIT", "mask2former_setup", "mask2former_step_loss", "window_segments"]

#: Mask logit of a query on unlabelled cells: sigmoid 2e-9, a "no" that costs nothing
#: against the all-zero targets there (large enough not to swamp the loss where the
#: point sampler blends it with a labelled neighbour).
IGNORED_LOGIT = -20.0

#: ``masks (n, H, W) bool``, ``classes (n,) int64`` (class index 0..K-1) and
#: ``ignore (H, W) bool`` of one window.
Segments = tuple[np.ndarray, np.ndarray, np.ndarray]


def window_segments(
    target: np.ndarray, ids: np.ndarray | None, task: str, things: Sequence[int]
) -> Segments:
    """The Mask2Former targets of one window.

    Args:
        target: ``(H, W)`` class index 0..K-1, 255 = unlabelled.
        ids: ``(H, W)`` instance ids (0 = none) for ``instance``/``panoptic``.
        task: ``semantic``, ``instance`` or ``panoptic``.
        things: class indices of the thing classes.

    Returns:
        Masks and classes in this order: semantic classes ascending; objects by
        ascending id (an object's class is the most common one under it; objects
        of stuff classes are left out); then (panoptic) stuff classes ascending.
        ``ignore`` is the unlabelled pixels, in no mask.

    Raises:
        GeosegError: an object task without instance ids.
    """
    ignore = target == NODATA_LABEL
    h, w = target.shape
    if task == "semantic":
        present = np.unique(target[~ignore]).astype(np.int64)
        return target[None] == present[:, None, None], present, ignore
    if ids is None:
        raise GeosegError(f"Mask2Former {task} training needs instance ids in the batch")
    objects = np.where(ignore, 0, ids)
    masks: list[np.ndarray] = []
    classes: list[int] = []
    for i in np.unique(objects[objects > 0]):
        mask = objects == i
        cls = int(np.bincount(target[mask].astype(np.int64)).argmax())
        if cls in things:
            masks.append(mask)
            classes.append(cls)
    if task == "panoptic":
        free = ~ignore & ~np.array(masks, bool).reshape(-1, h, w).any(axis=0)
        for s in np.unique(target[free]):
            if int(s) not in things:
                masks.append(free & (target == s))
                classes.append(int(s))
    return np.array(masks, bool).reshape(-1, h, w), np.array(classes, np.int64), ignore


def mask2former_step_loss(
    model: nn.Module, x: torch.Tensor, batch: Batch, task: str, things: Sequence[int]
) -> torch.Tensor:
    """transformers' Mask2Former loss of one batch, unlabelled pixels left out.

    Args:
        model: from :func:`~geoseg.models.mask2former.mask2former_model` (its
            ``model`` attribute is the ``Mask2FormerForUniversalSegmentation``).
        x: ``(B, C, W, W) float32`` normalized windows on the model's device.
        batch: their class-index targets (and instance ids for objects).
        task, things: as :func:`window_segments`.
    """
    hf: Any = model.model  # transformers' model: its loss API is untyped
    out = hf(pixel_values=x, output_auxiliary_logits=True)
    ids = batch.ids if batch.ids is not None else [None] * len(batch.target)
    segs = [window_segments(t, i, task, things) for t, i in zip(batch.target, ids, strict=True)]
    dev = x.device
    masks = [torch.from_numpy(s[0]).to(dev, torch.float32) for s in segs]
    classes = [torch.from_numpy(s[1]).to(dev) for s in segs]
    labelled = torch.from_numpy(~np.stack([s[2] for s in segs])).to(dev, torch.float32)
    grid = out.masks_queries_logits.shape[-2:]
    cells = F.adaptive_max_pool2d(labelled[:, None], grid)[:, 0] > 0  # (B, h, w)

    def own(logits: torch.Tensor) -> torch.Tensor:
        return logits.float().masked_fill(~cells[:, None], IGNORED_LOGIT)

    aux = [
        {"masks_queries_logits": own(a["masks_queries_logits"]),
         "class_queries_logits": a["class_queries_logits"].float()}
        for a in (out.auxiliary_logits or [])
    ] if hf.config.use_auxiliary_loss else None  # fmt: skip
    losses = hf.get_loss_dict(
        own(out.masks_queries_logits), out.class_queries_logits.float(), masks, classes, aux
    )
    loss: torch.Tensor = hf.get_loss(losses)
    return loss


def _with_config(meta: ModelMeta) -> ModelMeta:
    """``meta`` with its Mask2Former config stored (options checked on the way)."""
    return dataclasses.replace(
        meta, options={**meta.options, "hf_config": mask2former_config(meta)}
    )


def mask2former_setup(cfg: TrainConfig, device: torch.device) -> TaskSetup:
    """Rasters, class-index targets (ids ride along for objects), metadata, the
    Mask2Former loss and mIoU (semantic), AP50 (instance) or PQ (panoptic).

    Raises:
        CheckpointError: ``transformers`` is not installed (before any raster is read).
    """
    transformers_module()
    family = training_family(cfg.task, cfg.arch)
    if cfg.task == "semantic":  # the per-pixel models' data and mIoU; the loss is ours
        train, targets, meta, pixel = semantic_setup(cfg, device)
        meta, score, metric = _with_config(meta), pixel.score, pixel.metric
    else:
        train, val, meta = read_instances(cfg)
        meta = _with_config(meta)
        metric = "val_ap50" if cfg.task == "instance" else "val_pq"
        score = instance_scorer(HFMaskPredictor, metric[4:], meta, device, val)
        targets = [class_targets(r, cfg.classes) for r in train]
    things = [k for k, c in enumerate(cfg.classes.classes) if c.is_thing]
    loss = partial(mask2former_step_loss, task=cfg.task, things=things)
    assert family.build is not None  # the record builds its module
    return train, targets, meta, Objective(loss, score, metric, partial(family.build, meta))
