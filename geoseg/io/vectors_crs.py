"""The CRS of an input vector layer (AOI, polygon labels): given, declared, assumed or refused.

GDAL gives every GeoJSON layer EPSG:4326 whether or not the file has a ``crs``
member, and a Shapefile without ``.prj`` has no CRS at all. Metres read as
degrees reproject to nowhere, so every area would silently be 0 ha. The rule
(:func:`layer_crs`), applied by :func:`read_input_layer` wherever geoseg reads
a vector layer as input:

1. a CRS the user gives (``--aoi-crs EPSG:32633``, or ``--aoi-crs raster`` for the
   raster's CRS) is used, whatever the file declares (with a warning if it differs);
2. else the CRS the file declares;
3. else, when the coordinates fit longitude/latitude (|x| <= 180, |y| <= 90),
   EPSG:4326 (GeoJSON's default), with a warning that it was assumed;
4. else the layer is refused, naming the file, its bounds and the option to use.

A longitude/latitude CRS whose coordinates cannot be degrees is refused as well.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import pyproj
import shapely

from geoseg.errors import InvalidVectorError
from geoseg.io.reproject import layer_in_crs
from geoseg.io.vectors_read import is_parquet, parquet_geo_metadata, read_vectors

__all__ = [
    "LONLAT",
    "RASTER_CRS",
    "declares_crs",
    "features_outside",
    "layer_crs",
    "read_input_layer",
    "read_layer_on_grid",
]

log = logging.getLogger(__name__)

#: What a layer without a CRS is read as when its coordinates fit.
LONLAT = "EPSG:4326"
#: The option value meaning "the raster's CRS".
RASTER_CRS = "raster"
_CRS_MEMBER = re.compile(rb'"crs"\s*:')
_SCAN_BYTES = 1 << 20


def _fits_lonlat(bounds: np.ndarray, lon_max: float) -> bool:
    """Whether ``(xmin, ymin, xmax, ymax)`` can be degrees (an empty layer always can)."""
    if not np.isfinite(bounds).all():
        return True
    x0, y0, x1, y1 = (float(v) for v in bounds)
    return x0 >= -180.0 and x1 <= lon_max and y0 >= -90.0 and y1 <= 90.0


def _bounds_text(bounds: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.10g}" for v in bounds) + ")"


def _given_crs(given: str, raster_crs: Any, option: str) -> pyproj.CRS:
    """The CRS named by the user's option value (``raster``: the raster's)."""
    if given.strip().lower() == RASTER_CRS:
        if raster_crs is None:
            raise InvalidVectorError(f"{option} raster: the raster has no CRS to take")
        return pyproj.CRS.from_user_input(raster_crs)
    try:
        return pyproj.CRS.from_user_input(given)
    except pyproj.exceptions.CRSError as exc:
        raise InvalidVectorError(
            f"{option} {given!r} is not a CRS ({exc}); give e.g. EPSG:32633, or 'raster'"
        ) from exc


def layer_crs(
    source: str,
    declared: pyproj.CRS | None,
    bounds: np.ndarray,
    given: str | None = None,
    raster_crs: Any = None,
    option: str = "--aoi-crs",
) -> pyproj.CRS:
    """The CRS to read a layer in, by the rule of this module.

    Args:
        source: the file, for messages.
        declared: the CRS the file itself declares (None: it declares none).
        bounds: ``(4,) float`` the layer's ``xmin, ymin, xmax, ymax`` as stored.
        given: the user's option value: a CRS, ``"raster"``, or None.
        raster_crs: the raster's CRS (any pyproj input), for ``"raster"``.
        option: the command's option, named in messages (``--aoi-crs``, ``--labels-crs``).

    Raises:
        InvalidVectorError: no CRS and coordinates that are not lon/lat, a
            lon/lat CRS with such coordinates, or an option value that is no CRS.
    """
    fix = f"give its CRS with {option} EPSG:XXXX (or {option} raster for the raster's CRS)"
    if given is not None:
        crs = _given_crs(given, raster_crs, option)
        if declared is not None and not declared.equals(crs, ignore_axis_order=True):
            log.warning("%s: declares %s; reading it as %s (%s)", source, declared.name,
                        crs.name, option)  # fmt: skip
    elif declared is not None:
        crs = declared
    elif _fits_lonlat(bounds, 180.0):
        log.warning(
            "%s: declares no CRS; its coordinates %s fit longitude/latitude, so they are read "
            "as %s; if they are not, %s", source, _bounds_text(bounds), LONLAT, fix,
        )  # fmt: skip
        return pyproj.CRS.from_user_input(LONLAT)
    else:
        raise InvalidVectorError(
            f"{source}: declares no CRS and its coordinates {_bounds_text(bounds)} are not "
            f"longitude/latitude; {fix}"
        )
    if crs.is_geographic and not _fits_lonlat(bounds, 360.0):
        raise InvalidVectorError(
            f"{source}: read as {crs.name} (longitude/latitude) but its coordinates "
            f"{_bounds_text(bounds)} are not degrees; {fix}"
        )
    return crs


def _geojson_declares_crs(path: Path) -> bool:
    """Whether a GeoJSON file has a ``crs`` member (scanned in 1 MiB pieces)."""
    tail = b""
    with path.open("rb") as f:
        while piece := f.read(_SCAN_BYTES):
            if _CRS_MEMBER.search(tail + piece):
                return True
            tail = piece[-64:]
    return False


def declares_crs(path: Path, driver: str) -> bool:
    """Whether the file itself names a CRS, where GDAL's ``driver`` may fill in a default.

    GeoJSON without a ``crs`` member and GeoJSON text sequences never do (GDAL
    reports EPSG:4326 for them regardless); other formats: when GDAL reports one.
    """
    if driver == "GeoJSONSeq":
        return False
    return driver != "GeoJSON" or _geojson_declares_crs(path)


def _declared_crs(path: Path, frame: gpd.GeoDataFrame, layer: str | None) -> pyproj.CRS | None:
    """The CRS ``path`` declares: GDAL's (geopandas'), except where it fills in a default."""
    if is_parquet(path):
        geo = parquet_geo_metadata(path) or {}
        columns = geo.get("columns")
        column = columns.get(geo.get("primary_column")) if isinstance(columns, dict) else None
        declared = isinstance(column, dict) and column.get("crs") is not None
        return frame.crs if declared else None
    driver = pyogrio.read_info(path, layer=layer)["driver"]
    return frame.crs if declares_crs(path, driver) else None


def spatial_layer(path: Path) -> str | None:
    """The one layer with geometries in an OGR file (None: let GDAL pick, e.g. one layer).

    A file of several layers (a GeoPackage of buildings and roads) used to be read as
    its first layer, whatever that was, with no word of the others.

    Raises:
        InvalidVectorError: more than one layer has geometries: naming them (with their
            feature counts) and the ``ogr2ogr`` that extracts one.
    """
    try:
        layers = pyogrio.list_layers(path)
    except (pyogrio.errors.DataSourceError, OSError):
        return None  # missing, or not a vector file: read_vectors says so in its own words
    spatial = [str(name) for name, kind in layers if kind is not None]
    if len(layers) <= 1 or not spatial:
        return None
    if len(spatial) == 1:
        return spatial[0]
    counts = []
    for name in spatial:
        n = pyogrio.read_info(path, layer=name).get("features", -1)
        counts.append(f"{name} ({n} features)" if n >= 0 else name)
    raise InvalidVectorError(
        f"{path}: holds {len(spatial)} layers with geometries ({', '.join(counts)}); geoseg "
        "reads one layer per file: extract the one you mean, e.g. `ogr2ogr "
        f"{spatial[-1]}.gpkg {path.name} {spatial[-1]}`, and give that file"
    )


def read_input_layer(
    path: str | os.PathLike[str],
    given: str | None = None,
    raster_crs: Any = None,
    option: str = "--aoi-crs",
) -> gpd.GeoDataFrame:
    """Read a vector layer given as input, its CRS set by :func:`layer_crs`.

    Args:
        path: any layer :func:`geoseg.io.vectors.read_vectors` reads.
        given, raster_crs, option: see :func:`layer_crs`.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        InvalidVectorError: not a vector layer, or see :func:`layer_crs`.
    """
    path = Path(path)
    try:
        layer = None if is_parquet(path) else spatial_layer(path)
        frame = read_vectors(path, layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise InvalidVectorError(
            f"{path}: not a vector layer geoseg can read ({exc}); give a GPKG, GeoJSON, "
            "Shapefile, FlatGeobuf or GeoParquet file"
        ) from exc
    crs = layer_crs(str(path), _declared_crs(path, frame, layer), frame.total_bounds, given,
                    raster_crs, option)  # fmt: skip
    return frame.set_crs(crs, allow_override=True)


def features_outside(geoms: Any, bounds: tuple[float, float, float, float]) -> np.ndarray:
    """``(N,) bool``: geometries (in the bounds' CRS) that miss the box ``bounds`` entirely.

    Missing and empty geometries count as outside.
    """
    geoms = np.asarray(geoms, dtype=object)
    return ~shapely.intersects(geoms, shapely.box(*bounds)) | shapely.is_missing(geoms)


def read_layer_on_grid(
    path: str | os.PathLike[str],
    grid_crs: Any,
    grid_bounds: tuple[float, float, float, float],
    given: str | None = None,
    option: str = "--labels-crs",
    raster: str = "the raster",
) -> gpd.GeoDataFrame:
    """An input layer (see :func:`read_input_layer`) reprojected to a raster grid's CRS.

    Logs a warning when no feature meets the grid: labels that miss the image
    make every pixel background, which is almost always a wrong CRS.

    Args:
        path: the layer.
        grid_crs: the raster's CRS (also what ``given="raster"`` means).
        grid_bounds: the raster's ``(west, south, east, north)`` in ``grid_crs``.
        given, option: see :func:`layer_crs`.
        raster: the raster, named in messages.

    Raises:
        InvalidVectorError: see :func:`read_input_layer`; or the layer's CRS cannot be
            transformed to ``grid_crs`` (:func:`geoseg.io.reproject.layer_in_crs`).
    """
    frame = layer_in_crs(
        read_input_layer(path, given, grid_crs, option), grid_crs, str(path), raster, option
    )
    if len(frame) and features_outside(frame.geometry.values, grid_bounds).all():
        log.warning(
            "%s: none of its %d features overlaps the raster (layer bounds %s, raster bounds "
            "%s, in the raster's CRS), so it labels no pixel; check the layer and its CRS (%s)",
            path, len(frame), _bounds_text(frame.total_bounds), _bounds_text(np.array(grid_bounds)),
            option,
        )  # fmt: skip
    return frame
