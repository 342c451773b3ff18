"""Panoptic fusion: things from instances, stuff from a semantic label map."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from geoseg.errors import GeosegError
from geoseg.types import NODATA_LABEL, ClassSchema

__all__ = ["fuse_panoptic", "panoptic_block"]


def panoptic_block(
    instances: np.ndarray, stuff: np.ndarray | None, schema: ClassSchema
) -> np.ndarray:
    """Fuse one block per pixel: an instance wins; elsewhere a stuff class, else void.

    Args:
        instances: ``(2, h, w) uint32`` instance ids (0 = none) and classes.
        stuff: ``(h, w) uint8`` semantic labels (255 = nodata), or None. A thing
            class there without an instance is void: it was not detected.
        schema: tells stuff from things.

    Returns:
        ``(2, h, w) uint32``: class (255 = void/nodata), then instance id (0 = stuff).
    """
    ids, classes = instances[0], instances[1]
    out_cls = np.full(ids.shape, NODATA_LABEL, dtype=np.uint32)
    if stuff is not None:
        stuff_ids = np.array([c.id for c in schema.classes if not c.is_thing], dtype=np.int64)
        is_stuff = np.isin(stuff, stuff_ids)
        out_cls[is_stuff] = stuff[is_stuff]
    has = ids > 0
    out_cls[has] = classes[has]
    return np.stack([out_cls, ids.astype(np.uint32)])


def fuse_panoptic(
    semantic_labels: np.ndarray,
    instance_masks: np.ndarray,
    instance_classes: np.ndarray,
    instance_scores: np.ndarray,
    things: Collection[int],
    min_overlap: float = 0.5,
) -> np.ndarray:
    """Panoptic FPN-style fusion of a semantic label map with instance detections.

    Instances are pasted by decreasing score (ties: the earlier one first); a pixel
    taken by a higher-score instance is not reassigned, and an instance that keeps
    less than ``min_overlap`` of its (valid) mask is dropped. Nodata pixels (255 in
    ``semantic_labels``) stay nodata and belong to no instance. Pixels no instance
    took keep the semantic class if it is stuff; a thing class there without an
    instance is void (255), as in :func:`panoptic_block`: the thing was not
    detected, and PQ ignores void pixels.

    Args:
        semantic_labels: ``(H, W) uint8`` class ids, 255 = nodata.
        instance_masks: ``(n, H, W) bool``.
        instance_classes: ``(n,)`` class ids of the instances.
        instance_scores: ``(n,) float`` detection scores.
        things: class ids that are things.
        min_overlap: fraction of its mask an instance must keep, in ``[0, 1]``.

    Returns:
        ``(2, H, W) uint32``: class (255 = void/nodata), then instance id: ``1..m``
        for the kept instances in pasting order, 0 for stuff, void and nodata.
    """
    if not 0.0 <= min_overlap <= 1.0:
        raise GeosegError(f"min_overlap must be in [0, 1], got {min_overlap}")
    if instance_masks.shape[1:] != semantic_labels.shape:
        raise GeosegError(
            f"instance masks {instance_masks.shape[1:]} and semantic labels "
            f"{semantic_labels.shape} differ in shape"
        )
    valid = semantic_labels != NODATA_LABEL
    out_cls = np.full(semantic_labels.shape, NODATA_LABEL, dtype=np.uint32)
    is_stuff = valid & ~np.isin(semantic_labels, list(things))
    out_cls[is_stuff] = semantic_labels[is_stuff]
    ids = np.zeros(semantic_labels.shape, dtype=np.uint32)
    order = np.argsort(-np.asarray(instance_scores, dtype=np.float64), kind="stable")
    kept = 0
    for k in order:
        mask = np.asarray(instance_masks[k], dtype=bool) & valid
        area = np.count_nonzero(mask)
        free = mask & (ids == 0)
        if area == 0 or np.count_nonzero(free) < min_overlap * area:
            continue
        kept += 1
        ids[free] = kept
        out_cls[free] = instance_classes[k]
    return np.stack([out_cls, ids])
