"""Rasters without georeferencing: opened quietly, refused in plain words.

GDAL gives a file with no geotransform (a PNG or JPEG renamed ``.tif``) the
identity transform, and rasterio warns with ``NotGeoreferencedWarning`` and a
library path. geoseg says what is wrong itself: such a file has no place on the
ground, which ``--assume-crs`` cannot give it (it used to be refused as "not
north-up", the identity's +1 row step). A file placed only by ground control
points or RPCs (an unrectified product) also has the identity transform: it has a
place but no regular grid, and is refused with the ``gdalwarp`` that grids it.
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
    """Refuse an open dataset with GDAL's identity transform: no georeferencing at all, or
    georeferencing by ground control points or RPCs only (no regular grid to tile).

    Raises:
        InvalidRasterError: the message says what the file has and how to grid it.
    """
    if src.transform != Affine.identity():
        return
    gcps, gcp_crs = src.gcps
    if gcps:
        target = gcp_crs.to_string() if gcp_crs is not None else "EPSG:XXXX"
        raise InvalidRasterError(
            f"{path}: the file is placed by {len(gcps)} ground control points (GCPs), not by "
            "a geotransform, so it has no regular grid to tile (--assume-crs cannot give it "
            "one); warp it onto a grid first, e.g. `gdalwarp -t_srs "
            f"{target} -r bilinear {os.path.basename(path)} gridded.tif`"
        )
    if src.rpcs is not None:
        raise InvalidRasterError(
            f"{path}: the file is placed by rational polynomial coefficients (RPCs), not by a "
            "geotransform, so it has no regular grid to tile (--assume-crs cannot give it "
            "one); orthorectify it onto a grid first, e.g. `gdalwarp -rpc -t_srs EPSG:XXXX "
            f"-r bilinear {os.path.basename(path)} gridded.tif` (add `-to RPC_DEM=dem.tif` "
            "where the terrain is not flat)"
        )
    if src.crs is None:
        raise InvalidRasterError(
            f"{path}: the file has no georeferencing (a {src.driver} image with pixel "
            "coordinates only, no geotransform or CRS; e.g. a PNG or JPEG renamed .tif); "
            "use the original georeferenced scene, or georeference it with `gdal_translate "
            "-a_srs EPSG:XXXX -a_ullr ULX ULY LRX LRY in.tif out.tif`"
        )
