"""Tell a mask (0/1, 0/255) from an instance id raster before it is read as ids.

A mask of buildings (1 or 255) on background (0) read as instance ids is one
object made of every building: evaluation would score it as one object, training
would teach that all of them are one. A raster whose only non-zero value is one
value, on several separate patches, is refused, with how to give each object an id.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio

from geoseg.errors import InvalidRasterError
from geoseg.io.instances import instance_bands
from geoseg.types import NODATA_LABEL

__all__ = ["refuse_binary_mask"]


def refuse_binary_mask(path: str | os.PathLike[str], ids: np.ndarray | None = None) -> None:
    """Refuse an id raster that is a mask: one value on several separate patches.

    Read as ids, every patch of that value (1 in a 0/1 mask, 255 in a LEVIR-style
    0/255 one) is the same object, so scores and training would see one object
    where the user drew many. Only a raster whose sole non-zero value is one
    value is checked (two or more ids mark an id raster).

    Args:
        path: the ``--labels`` raster (named in the message).
        ids: its id band already in memory, ``(H, W)`` (0 = none); None: read band 1
            of ``path`` (values masked as nodata count as 0).

    Raises:
        InvalidRasterError: one non-zero value, on more than one 8-connected patch.
    """
    from scipy import ndimage

    if ids is None:
        found = _mask_or_none(path)
        if found is None:
            return
        mask, value = found
    else:
        values = np.unique(ids[ids != 0])
        if values.size != 1:
            return
        value = int(values[0])
        mask = ids == value
    # 8-connected, as `geoseg vectorize --connectivity 8` (suggested below) draws them
    _, patches = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if patches > 1:
        raise InvalidRasterError(
            f"{path}: holds only 0 and {value}, with {patches} separate patches of {value}: "
            "a mask, which would be read as ONE object; instance labels need one id per "
            "object (0 = none): give each patch its own id (e.g. scipy.ndimage.label, "
            f"8-connected), or {_polygons_fix(Path(path).name, value)}"
        )


def _polygons_fix(name: str, value: int) -> str:
    """How to make one polygon per 8-connected patch of ``value`` (the count above)."""
    vectorize = "`geoseg vectorize {} -o objects.gpkg --classes {} --connectivity 8`"
    then = " and pass objects.gpkg as --labels"
    if 0 < value < NODATA_LABEL:
        return f"make one polygon per patch with {vectorize.format(name, value)}{then}"
    # vectorize reads 255 (and anything past it) as nodata: --classes 255 picks nothing
    return (
        f"make one polygon per patch: `geoseg vectorize` reads {value} as nodata, so "
        f"--classes {value} picks nothing; write the mask as 0/1 first (e.g. `gdal_calc.py "
        f'-A {name} --calc="A>0" --type=Byte --outfile=mask01.tif`, from GDAL, not '
        f"installed by geoseg), then {vectorize.format('mask01.tif', 1)}{then}"
    )


def _mask_or_none(path: str | os.PathLike[str]) -> tuple[np.ndarray, int] | None:
    """``(H, W) bool`` of the one non-zero value and that value, or None.

    None when the band holds no non-zero value or several. Block by block,
    stopping at the second distinct value, so an id raster is not read whole.
    """
    with rasterio.open(path) as src:
        band = instance_bands(src, os.fspath(path))[0]
        value: int | None = None
        for _, win in src.block_windows(band):
            block = np.ma.masked_equal(src.read(band, window=win, masked=True), 0)
            if not block.count():
                continue
            low, high = int(block.min()), int(block.max())
            if low != high or (value is not None and low != value):
                return None
            value = low
        if value is None:
            return None
        return np.asarray(src.read(band, masked=True).filled(0) == value), value
