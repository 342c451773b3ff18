"""Warn of predicted objects far larger than any the model was trained on.

An under-trained instance model (or one applied out of domain) can merge a whole
block into one "building" of 22,000 m² when the largest training building was
377 m², and the run succeeds. Training records the largest object
(:mod:`geoseg.training.object_sizes`); prediction counts each object's pixels while
writing the instance raster, so the check costs no extra pass. Checkpoints without
the record (older ones, imported models) are not checked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from geoseg.types import OBJECT_SIZES_KEY, ModelMeta

__all__ = ["OVERSIZE_FACTOR", "oversized_objects", "warn_if_oversized"]

log = logging.getLogger(__name__)

#: Objects over this many times the largest training object are reported.
OVERSIZE_FACTOR = 10.0


def _record(meta: ModelMeta) -> tuple[int, float | None] | None:
    """``(largest_px, largest_m2 or None)`` of the checkpoint's record, None without one."""
    rec = meta.provenance.get(OBJECT_SIZES_KEY)
    if not isinstance(rec, Mapping):
        return None
    try:
        px = int(rec["largest_px"])
        m2 = rec.get("largest_m2")
        return (px, None if m2 is None else float(m2)) if px > 0 else None
    except (KeyError, TypeError, ValueError):  # a damaged record: no check, no error
        return None


def oversized_objects(
    meta: ModelMeta, object_px: np.ndarray, pixel_m: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the objects over :data:`OVERSIZE_FACTOR` × the largest training object.

    Args:
        meta: the checkpoint's metadata.
        object_px: ``(count + 1,)`` pixels of each scene id; ``[0]`` (no object) is ignored.
        pixel_m: the scene's pixel size, metres (None: sizes are compared in pixels).

    Returns:
        ``(k,) int64`` ids and their ``(k,) float64`` sizes (m², or px without
        ``pixel_m`` or a training area); empty without a record.
    """
    rec = _record(meta)
    none = np.zeros(0, np.int64), np.zeros(0, np.float64)
    if rec is None or object_px.size < 2:
        return none
    in_m2 = pixel_m is not None and rec[1] is not None
    size = object_px.astype(np.float64) * (pixel_m**2 if in_m2 and pixel_m else 1.0)
    size[0] = 0.0
    limit = OVERSIZE_FACTOR * (rec[1] if in_m2 and rec[1] is not None else rec[0])
    ids = np.flatnonzero(size > limit)
    return ids.astype(np.int64), size[ids]


def warn_if_oversized(
    model: str, meta: ModelMeta, object_px: np.ndarray | None, pixel_m: float | None
) -> int:
    """Log one warning line when objects exceed 10× the largest training object.

    Args:
        model: the checkpoint's path (named in the line).
        meta, object_px, pixel_m: see :func:`oversized_objects`.

    Returns:
        How many objects were reported (0: no warning).
    """
    rec = _record(meta)
    if rec is None or object_px is None:
        return 0
    ids, sizes = oversized_objects(meta, object_px, pixel_m)
    if not ids.size:
        return 0
    worst = int(np.argmax(sizes))
    trained = f"{rec[0]:,} px" if rec[1] is None else f"{rec[1]:,.0f} m² / {rec[0]:,} px"
    unit = "m²" if pixel_m is not None and rec[1] is not None else "px"
    log.warning(
        "%s: %d %s larger than %g× the largest object the model was trained on "
        "(%s); the model may be under-trained or applied out of domain — check them "
        "(largest: id %d, %s %s)",
        model, ids.size, "object is" if ids.size == 1 else "objects are", OVERSIZE_FACTOR,
        trained, int(ids[worst]),
        f"{sizes[worst]:,.0f}", unit,
    )  # fmt: skip
    return int(ids.size)
