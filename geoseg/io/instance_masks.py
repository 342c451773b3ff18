"""Tell a 0/1 mask from an instance id raster before it is read as ids.

A mask of buildings (1) on background (0) read as instance ids is one object 1
made of every building: evaluation would score it as one object, training would
teach that all of them are one. A raster whose only values are 0 and 1 with
several separate patches of 1 is refused, with how to give each object an id.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio

from geoseg.errors import InvalidRasterError
from geoseg.io.instances import instance_bands

__all__ = ["refuse_binary_mask"]


def refuse_binary_mask(path: str | os.PathLike[str], ids: np.ndarray | None = None) -> None:
    """Refuse an id raster that is a 0/1 mask: 1 on several separate patches.

    Read as ids, every patch of 1 is the same object 1, so scores and training
    would see one object where the user drew many. Only a raster whose values are
    all 0 and 1 is checked (any other id marks an id raster).

    Args:
        path: the ``--labels`` raster (named in the message).
        ids: its id band already in memory, ``(H, W)`` (0 = none); None: read band 1
            of ``path`` (values masked as nodata count as 0).

    Raises:
        InvalidRasterError: only 0 and 1, with more than one 8-connected patch of 1.
    """
    from scipy import ndimage

    if ids is None:
        ids = _mask_or_none(path)
        if ids is None:
            return
    if ids.size == 0 or ids.min() < 0 or ids.max() != 1:
        return
    _, patches = ndimage.label(ids == 1, structure=np.ones((3, 3), bool))
    if patches > 1:
        raise InvalidRasterError(
            f"{path}: holds only 0 and 1, with {patches} separate patches of 1: a mask, which "
            "would be read as ONE object; instance labels need one id per object (0 = none): "
            "give each patch its own id (e.g. scipy.ndimage.label), or make one polygon per "
            f"patch with `geoseg vectorize {Path(path).name} -o objects.gpkg --classes 1` and "
            "pass objects.gpkg as --labels"
        )


def _mask_or_none(path: str | os.PathLike[str]) -> np.ndarray | None:
    """The id band as ``(H, W) bool`` if all its values are 0 or 1, else None.

    Block by block, stopping at the first id over 1, so an id raster is not read whole.
    """
    with rasterio.open(path) as src:
        band = instance_bands(src, os.fspath(path))[0]
        for _, win in src.block_windows(band):
            block = src.read(band, window=win, masked=True)
            if block.count() and (block.max() > 1 or block.min() < 0):
                return None
        return np.asarray(src.read(band, masked=True).filled(0) == 1)
