"""The sizes of the objects an instance or panoptic model was trained on.

A weakly trained model can return "objects" hundreds of times larger than any it
saw (a whole field as one building) with no error. Training records the largest
object and a high percentile in the checkpoint's provenance under
:data:`OBJECT_SIZES_KEY`; prediction compares the objects it found against it
(:func:`geoseg.pipelines.object_sizes.warn_if_oversized`). The sizes come from the
instance id rasters already in memory, no extra read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.types import OBJECT_SIZES_KEY

if TYPE_CHECKING:
    from geoseg.io.training_data import LabelledRaster

__all__ = ["OBJECT_SIZES_KEY", "object_pixel_counts", "object_size_record"]

#: The high percentile recorded beside the largest object.
_PERCENTILE = 99.0


def object_pixel_counts(ids: np.ndarray) -> np.ndarray:
    """``(n,) int64`` pixel count of each instance id > 0 present in ``ids`` (any shape)."""
    present = ids[ids > 0]
    if not present.size:
        return np.zeros(0, np.int64)
    if int(present.max()) <= 4 * ids.size:  # dense ids: one counting pass
        counts = np.bincount(present.astype(np.int64))
        return counts[counts > 0].astype(np.int64)
    return np.unique(present, return_counts=True)[1].astype(np.int64)


def object_size_record(rasters: Sequence[LabelledRaster]) -> dict[str, Any] | None:
    """The training objects' sizes, or None when no raster holds an object.

    Args:
        rasters: training rasters; those with an ``ids`` attribute (``(H, W) uint32``,
            0 = none) count, each at its own ground sample distance ``gsd_m``.

    Returns:
        ``objects`` (count), ``largest_px`` and ``largest_m2`` (the largest object by
        ground area), ``pixel_m`` (its raster's pixel size, m), ``p99_px`` and
        ``p99_m2`` (99th percentile of the objects' sizes).
    """
    px_parts, gsd_parts = [], []
    for r in rasters:
        ids = getattr(r, "ids", None)
        if ids is not None:
            px_parts.append(object_pixel_counts(ids))
            gsd_parts.append(np.full(px_parts[-1].size, float(r.gsd_m)))
    px = np.concatenate(px_parts) if px_parts else np.zeros(0, np.int64)
    if not px.size:
        return None
    gsd = np.concatenate(gsd_parts)
    m2 = px * gsd**2
    i = int(np.argmax(m2))
    return {
        "objects": int(px.size),
        "largest_px": int(px[i]), "largest_m2": round(float(m2[i]), 2),
        "pixel_m": round(float(gsd[i]), 4),
        "p99_px": round(float(np.percentile(px, _PERCENTILE)), 1),
        "p99_m2": round(float(np.percentile(m2, _PERCENTILE)), 2),
    }  # fmt: skip
