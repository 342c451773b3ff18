"""Bring a raster's extent or a vector layer into another CRS, or refuse in one line.

A local engineering CRS (``LOCAL_CS[...]``, no datum) has no place on Earth, so
PROJ finds no operation between it and any other CRS: rasterio raises a GDAL
``CPLE_NotSupportedError`` (and GDAL prints the CRS's whole PROJJSON on stderr),
pyproj a ``ProjError``. Both are turned here into one error naming both files
and saying what to do; GDAL's own message is kept off stderr.
"""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd
import numpy as np
import pyproj
import rasterio
import shapely
from rasterio._err import CPLE_BaseError  # GDAL's errors: rasterio exports no public name
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds

from geoseg.areas import pyproj_crs
from geoseg.errors import InvalidRasterError, InvalidVectorError

__all__ = ["bounds_in_crs", "layer_in_crs", "not_finite"]

log = logging.getLogger(__name__)


def _why(src: Any, dst: Any) -> str:
    """Why no transformation exists between ``src`` and ``dst`` (both named)."""
    a, b = pyproj_crs(src), pyproj_crs(dst)
    local = [c.name for c in (a, b) if c.is_engineering]
    if local:
        return (
            f"no transformation from {a.name!r} to {b.name!r}: a local CRS without a datum "
            f"({', '.join(repr(n) for n in local)}) has no place on Earth"
        )
    return f"no transformation from {a.name!r} to {b.name!r}"


def bounds_in_crs(
    src_crs: Any, dst_crs: Any, bounds: tuple[float, float, float, float], source: str,
    target: str, fix: str,
) -> tuple[float, float, float, float]:  # fmt: skip
    """``bounds`` (west, south, east, north) of ``source`` in ``dst_crs``, the CRS of ``target``.

    Raises:
        InvalidRasterError: no transformation between the two CRSs; the message
            names both files and ends with ``fix``.
    """
    try:
        with rasterio.Env():  # GDAL's error goes into the exception, not onto stderr
            west, south, east, north = transform_bounds(src_crs, dst_crs, *bounds)
    except (CPLE_BaseError, CRSError):
        raise InvalidRasterError(
            f"{source}: cannot be put on the grid of {target}: {_why(src_crs, dst_crs)}; {fix}"
        ) from None
    return west, south, east, north


def layer_in_crs(
    frame: gpd.GeoDataFrame, crs: Any, source: str, target: str, option: str
) -> gpd.GeoDataFrame:
    """``frame`` (which has a CRS) reprojected to ``crs``, the CRS of the raster ``target``.

    Features whose coordinates become infinite or NaN in ``crs`` keep their row but
    lose their geometry (None), and a warning counts them.

    Raises:
        InvalidVectorError: no transformation between the two CRSs; the message names
            both files and ``option`` (``raster`` when the layer's coordinates are
            in the raster's own grid).
    """
    try:
        moved = frame.to_crs(crs)
    except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError):
        raise InvalidVectorError(
            f"{source}: cannot be reprojected onto {target}: {_why(frame.crs, crs)}; if its "
            f"coordinates are in the grid of {target}, pass {option} raster, else give the "
            "layer in that raster's CRS"
        ) from None
    lost = not_finite(moved.geometry.values) & ~not_finite(frame.geometry.values)
    if lost.any():
        log.warning(
            "%s: %d of %d features cannot be put in the CRS of %s (%s): their coordinates "
            "become infinite there, as they lie too far from the area that CRS is made for; "
            "they are left out", source, int(lost.sum()), len(frame), target,
            pyproj_crs(crs).name,
        )  # fmt: skip
        geoms = np.asarray(moved.geometry.values, dtype=object)
        geoms[lost] = None
        moved = moved.set_geometry(gpd.GeoSeries(geoms, index=moved.index, crs=moved.crs))
    return moved


def not_finite(geoms: Any) -> np.ndarray:
    """``(N,) bool``: geometries with an infinite or NaN coordinate (missing ones: False)."""
    geoms = np.asarray(geoms, dtype=object)
    xy, index = shapely.get_coordinates(geoms, return_index=True)
    bad = np.zeros(geoms.size, bool)
    np.logical_or.at(bad, index, ~np.isfinite(xy).all(axis=1))
    return bad
