"""Per-task setup of a training run: rasters, targets, checkpoint metadata and objective.

:func:`task_setup` gives the setup the registry names for ``cfg.task``/``cfg.arch``
(:attr:`geoseg.models.family.Family.training`): semantic (and change), bottom-up
instance, Mask R-CNN, SOLOv2 or CondInst instance (:func:`ap50_instance_setup`), or
Panoptic-DeepLab; each builds its model with its family's ``build``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from geoseg.errors import GeosegError
from geoseg.io.training_data import LabelledRaster
from geoseg.models.family import Family
from geoseg.models.instance import BottomUpInstancePredictor
from geoseg.models.maskrcnn import MaskRCNNPredictor, maskrcnn_targets
from geoseg.models.panoptic import PanopticPredictor
from geoseg.models.registry import training_family
from geoseg.models.solov2 import SOLOv2Predictor, scale_ranges
from geoseg.models.solov2_targets import grid_targets, solov2_loss
from geoseg.stitching.protocol import InstancePredictor
from geoseg.tiling.confusion import remap_values
from geoseg.training.calibration import calibrate_checkpoint, warn_unknown_val_ids
from geoseg.training.config import TrainConfig
from geoseg.training.data import (
    check_val_bands,
    class_targets,
    load_rasters,
    model_meta,
    train_normalization,
)
from geoseg.training.instances import (
    InstanceRaster,
    boundary_pos_weight,
    boundary_target,
    encode_targets,
    instance_loss,
    instance_scorer,
    read_instance_raster,
)
from geoseg.training.object_sizes import OBJECT_SIZES_KEY, object_size_record
from geoseg.training.objectives import (
    Objective,
    pixel_loss,
    semantic_loss,
    validate_miou,
    weighted_dice,
)
from geoseg.training.panoptic import maskrcnn_step_loss, panoptic_step_loss
from geoseg.training.sampling import Batch
from geoseg.types import NODATA_LABEL, ClassSchema, ModelMeta

__all__ = [
    "TaskSetup",
    "ap50_instance_setup",
    "batch_objects",
    "instance_setup",
    "maskrcnn_setup",
    "panoptic_setup",
    "read_instances",
    "semantic_setup",
    "solov2_setup",
    "solov2_step_loss",
    "task_setup",
]

#: Training rasters, their ``(H, W) uint8`` targets, the checkpoint metadata, the objective.
TaskSetup = tuple[list[LabelledRaster], list[np.ndarray], ModelMeta, Objective]


def task_setup(cfg: TrainConfig) -> Callable[[TrainConfig, torch.device], TaskSetup]:
    """The setup of the family that trains ``cfg.task`` with ``cfg.arch``.

    Raises:
        UnknownModelError: no family does; the message lists the valid architectures.
    """
    module, _, name = str(training_family(cfg.task, cfg.arch).training).partition(":")
    setup: Callable[[TrainConfig, torch.device], TaskSetup] = getattr(
        importlib.import_module(module), name
    )
    return setup


def _build(family: Family, meta: ModelMeta) -> Callable[[], torch.nn.Module]:
    """The family's untrained module for ``meta``, built when called (after seeding)."""
    if family.build is None:
        raise GeosegError(f"the {family.name} family builds no model to train")
    return partial(family.build, meta)


def semantic_setup(cfg: TrainConfig, device: torch.device) -> TaskSetup:
    """Rasters, class-index targets, metadata and CE + Dice / mIoU objective."""
    train = load_rasters(cfg.images, cfg.labels, cfg)
    val = load_rasters(cfg.val_images, cfg.val_labels, cfg) if cfg.val_images else []
    check_val_bands(train, val)
    meta = model_meta(cfg, train, train_normalization(cfg, train))
    for r, labels in zip(val, cfg.val_labels, strict=True):
        warn_unknown_val_ids(r, labels, meta.schema.ids)  # they fit T, as calibrate's do
        r.labels[:] = remap_values(r.labels, {c: c for c in meta.schema.ids})
    score = partial(validate_miou, meta=meta, device=device, val=val) if val else None
    weights = cfg.class_weight_vector()
    loss = partial(pixel_loss, loss=partial(semantic_loss, dice_weight=cfg.dice_weight,
                                            class_weights=weights))  # fmt: skip
    targets = [class_targets(r, cfg.classes) for r in train]
    build = _build(training_family(cfg.task, cfg.arch), meta)
    calibrate = partial(calibrate_checkpoint, val=val, device=str(device)) if val else None
    return train, targets, meta, Objective(loss, score, "val_miou", build, calibrate)


def read_instances(
    cfg: TrainConfig, **meta_changes: Any
) -> tuple[list[LabelledRaster], list[LabelledRaster], ModelMeta]:
    """Training and validation :class:`InstanceRaster` objects and the checkpoint metadata."""
    read = partial(read_instance_raster, schema=cfg.classes, class_field=cfg.class_field,
                   labels_crs=cfg.labels_crs)  # fmt: skip
    train = load_rasters(cfg.images, cfg.labels, cfg, read)
    val = load_rasters(cfg.val_images, cfg.val_labels, cfg, read) if cfg.val_images else []
    check_val_bands(train, val)
    meta = model_meta(cfg, train, train_normalization(cfg, train))
    sizes = object_size_record(train)
    if sizes is not None:  # prediction warns of objects far larger than these
        meta_changes["provenance"] = {**meta.provenance, OBJECT_SIZES_KEY: sizes}
    return train, val, dataclasses.replace(meta, **meta_changes)


def instance_setup(cfg: TrainConfig, device: torch.device) -> TaskSetup:
    """Rasters, class + boundary targets, metadata and the instance loss / AP50 objective."""
    train, val, meta = read_instances(cfg)
    k = len(cfg.classes)
    targets = [
        encode_targets(class_targets(r, cfg.classes), boundary_target(r.ids), k)
        for r in train
        if isinstance(r, InstanceRaster)
    ]
    dice = partial(weighted_dice, weight=cfg.dice_weight) if cfg.dice_weight else None
    pixel = partial(instance_loss, k=k, pos_weight=boundary_pos_weight(targets, k), dice=dice)
    score = instance_scorer(BottomUpInstancePredictor, "ap50", meta, device, val)
    build = _build(training_family(cfg.task, cfg.arch), meta)
    loss = partial(pixel_loss, loss=pixel)
    return train, targets, meta, Objective(loss, score, "val_ap50", build)


def panoptic_setup(cfg: TrainConfig, device: torch.device) -> TaskSetup:
    """Rasters, class-index targets (ids ride along), metadata, Panoptic-DeepLab loss / PQ."""
    family = training_family(cfg.task, cfg.arch)
    options = {"body": cfg.arch, **cfg.options}
    train, val, meta = read_instances(cfg, arch=family.stored_arch or cfg.arch, options=options)
    things = [k for k, c in enumerate(cfg.classes.classes) if c.is_thing]
    targets = [class_targets(r, cfg.classes) for r in train]
    loss = partial(panoptic_step_loss, things=things)
    score = instance_scorer(PanopticPredictor, "pq", meta, device, val)
    return train, targets, meta, Objective(loss, score, "val_pq", _build(family, meta))


def maskrcnn_setup(cfg: TrainConfig, device: torch.device) -> TaskSetup:
    """Rasters, class-index targets (ids ride along), metadata, Mask R-CNN losses / AP50."""
    if "window" in cfg.options:
        raise GeosegError("Mask R-CNN takes its input size from --window, not options.window")
    loss = partial(maskrcnn_step_loss, schema=cfg.classes)
    return ap50_instance_setup(cfg, device, MaskRCNNPredictor, loss)


def ap50_instance_setup(
    cfg: TrainConfig, device: torch.device,
    predictor: Callable[[torch.nn.Module, ModelMeta, torch.device], InstancePredictor],
    loss: Callable[..., torch.Tensor],
) -> TaskSetup:  # fmt: skip
    """The setup of an object model trained on whole windows with their instance ids
    (Mask R-CNN, SOLOv2, CondInst): class-index targets (ids ride along), the
    checkpoint metadata, ``loss(model, x, batch)`` and ``predictor``'s validation AP50."""
    train, val, meta = read_instances(cfg)
    targets = [class_targets(r, cfg.classes) for r in train]
    score = instance_scorer(predictor, "ap50", meta, device, val)
    build = _build(training_family(cfg.task, cfg.arch), meta)
    return train, targets, meta, Objective(loss, score, "val_ap50", build)


def solov2_setup(cfg: TrainConfig, device: torch.device) -> TaskSetup:
    """Rasters, class-index targets (ids ride along), metadata, SOLOv2 loss / AP50."""
    if "window" in cfg.options:
        raise GeosegError("SOLOv2 takes its default grids from --window, not options.window")
    loss = partial(solov2_step_loss, schema=cfg.classes, ranges=scale_ranges(cfg.options),
                   dice_weight=float(cfg.options.get("dice_weight", 3.0)))  # fmt: skip
    return ap50_instance_setup(cfg, device, SOLOv2Predictor, loss)


def batch_objects(
    batch: Batch, schema: ClassSchema, model: str
) -> list[list[tuple[np.ndarray, int]]]:
    """Each window's objects: ``(mask (H, W) bool, thing index)``.

    Objects are the window's instance ids (unlabelled pixels belong to none) whose
    most common class is a thing; ``model`` names the model in the error.

    Raises:
        GeosegError: the batch carries no instance ids.
    """
    if batch.ids is None:
        raise GeosegError(f"{model} training needs instance ids in the batch")
    lut = np.array([*schema.ids, NODATA_LABEL], np.int64)  # index 255 -> last: stays 255
    class_ids = lut[np.minimum(batch.target, len(schema.ids))]
    ids = np.where(batch.target == NODATA_LABEL, 0, batch.ids)
    out = []
    for i, c in zip(ids, class_ids, strict=True):
        found = maskrcnn_targets(i, c, schema)
        out.append([(m.numpy().astype(bool), int(t) - 1)
                    for m, t in zip(found["masks"], found["labels"], strict=True)])  # fmt: skip
    return out


def solov2_step_loss(
    model: torch.nn.Module, x: torch.Tensor, batch: Batch, schema: ClassSchema,
    ranges: tuple[tuple[float, float], ...], dice_weight: float = 3.0,
) -> torch.Tensor:  # fmt: skip
    """:func:`~geoseg.models.solov2_targets.solov2_loss` of a SOLOv2 on one batch
    (objects: :func:`batch_objects`); ``ranges`` are the levels' scale ranges, px."""
    grids: tuple[int, ...] = getattr(model, "grids")  # noqa: B009 (an nn.Module attribute)
    targets = [grid_targets(objects, grids, ranges)
               for objects in batch_objects(batch, schema, "SOLOv2")]  # fmt: skip
    return solov2_loss(model(x), targets, dice_weight)
