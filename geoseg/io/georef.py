"""Rasters without georeferencing: opened quietly, refused in plain words.

GDAL gives a file with no geotransform (a PNG or JPEG renamed ``.tif``) the
identity transform, and rasterio warns with ``NotGeoreferencedWarning`` and a
library path. geoseg says what is wrong itself: such a file has no place on the
ground, which ``--assume-crs`` cannot give it (it used to be refused as "not
north-up", the identity's +1 row step). A file placed only by ground control
points or RPCs (an unrectified product) also has the identity transform: it has a
place but no regular grid, and is refused with the ``gdalwarp`` that grids it.

:func:`scene_crs` is where ``--assume-crs`` applies: to a scene without a CRS only.
A scene with its own keeps it, with one warning per file (a batch may mix both kinds).
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from typing import Any

import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from geoseg.errors import InvalidRasterError

__all__ = ["open_raster_quietly", "refuse_ungeoreferenced", "scene_crs"]

log = logging.getLogger(__name__)


class _Held(logging.Filter):
    """Holds back the records of a logger while attached."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


def open_raster_quietly(path: str | os.PathLike[str]) -> Any:
    """``rasterio.open(path)`` without rasterio's warning about a missing geotransform.

    GDAL's warnings while opening (``CPLE_AppDefined ... non conformant file
    extension`` for a GeoPackage named ``.tif``) are shown only if the file opens: a
    file that does not gets geoseg's one message about it, not GDAL's lines first.
    """
    held, logger = _Held(), logging.getLogger("rasterio._env")
    logger.addFilter(held)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
    finally:
        logger.removeFilter(held)
    for record in held.records:
        logger.handle(record)
    return src


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


def _assumed(assume_crs: str) -> CRS:
    try:
        return CRS.from_user_input(assume_crs)
    except ValueError as exc:  # CRSError, or a bare ValueError for "EPSG:abc"
        raise InvalidRasterError(f"--assume-crs {assume_crs!r} is not a CRS: {exc}") from exc


@functools.lru_cache(maxsize=256)
def _warn_crs_kept(path: str, own: str, assume_crs: str) -> None:
    """Say once per file and process (a pipeline opens a scene more than once) that
    ``--assume-crs`` left it alone."""
    log.warning(
        "%s: has its own CRS (%s), kept; --assume-crs %s applies only to scenes without "
        "one (fix a wrong CRS with `gdal_edit.py -a_srs`)", path, own, assume_crs,
    )  # fmt: skip


def scene_crs(path: str, src: Any, assume_crs: str | None) -> CRS:
    """The CRS of an open scene: its own, else ``assume_crs``.

    ``assume_crs`` given for a scene with a CRS (a different one) is ignored with a
    warning naming both, once per file.

    Raises:
        InvalidRasterError: no CRS and no ``assume_crs``, or ``assume_crs`` not a CRS.
    """
    if src.crs is None:
        if assume_crs is None:
            raise InvalidRasterError(
                f"{path}: the raster has no CRS; set one with `gdal_edit.py -a_srs EPSG:XXXX` "
                "(predict, vectorize, prompt, track, evaluate and calibrate also take "
                "--assume-crs EPSG:XXXX)"
            )
        return _assumed(assume_crs)
    own = CRS.from_user_input(src.crs)
    if assume_crs is not None and _assumed(assume_crs) != own:
        _warn_crs_kept(path, own.to_string(), assume_crs)
    return own
