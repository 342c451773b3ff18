"""Panoptic fusion: things from instances, stuff from a semantic label map."""

from __future__ import annotations

import numpy as np

from geoseg.types import NODATA_LABEL, ClassSchema

__all__ = ["panoptic_block"]


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
