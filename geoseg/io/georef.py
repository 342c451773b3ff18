"""Rasters without georeferencing: opened quietly, refused in plain words.

GDAL gives a file with no geotransform (a PNG or JPEG renamed ``.tif``) the
identity transform, and rasterio warns with ``NotGeoreferencedWarning`` and a
library path. geoseg says what is wrong itself: such a file has no place on the
ground, which ``--assume-crs`` cannot give it (it used to be refused as "not
north-up", the identity's +1 row step).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from geoseg.errors import InvalidRasterError

__all__ = ["open_raster_quietly", "refuse_ungeoreferenced"]


def open_raster_quietly(path: str | os.PathLike[str]) -> Any:
    """``rasterio.open(path)`` without rasterio's warning about a missing geotransform."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def refuse_ungeoreferenced(path: str, src: Any) -> None:
    """Refuse an open dataset with no CRS, no GCPs and GDAL's identity transform.

    Raises:
        InvalidRasterError: the file has no georeferencing; the message says how to add it.
    """
    if src.crs is None and src.transform == Affine.identity() and not src.gcps[0]:
        raise InvalidRasterError(
            f"{path}: the file has no georeferencing (a {src.driver} image with pixel "
            "coordinates only, no geotransform or CRS; e.g. a PNG or JPEG renamed .tif); "
            "use the original georeferenced scene, or georeference it with `gdal_translate "
            "-a_srs EPSG:XXXX -a_ullr ULX ULY LRX LRY in.tif out.tif`"
        )
