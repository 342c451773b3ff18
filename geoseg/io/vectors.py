"""Write polygon layers: GeoPackage, Shapefile, GeoParquet, FlatGeobuf, GeoJSON; atomically.

The format comes from the output's extension (or is given): ``.gpkg`` (default
when the extension says nothing), ``.shp``, ``.parquet``, ``.fgb``, ``.geojson``.

* The CRS is always written (a frame without one is refused).
* Shapefile: field names are mapped deliberately to at most 10 characters
  (:data:`SHAPEFILE_FIELDS`), ``.prj`` and ``.cpg`` (UTF-8) are written, and a
  warning is logged when the ``.shp`` or ``.dbf`` would pass 2 GB.
* GeoJSON is reprojected to EPSG:4326 and written as RFC 7946.
* GeoParquet is written by geopandas/pyarrow with a bbox covering column.
* Layer name (GeoPackage, FlatGeobuf, GeoJSON, Shapefile inside): ``layer``.

Each output is written under a temporary name beside the target (a Shapefile
into a temporary folder) and renamed when complete; an existing output,
including any Shapefile sidecar, is refused unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from geoseg.errors import GeosegError, InputNotFoundError, OutputExistsError
from geoseg.io.atomic import atomic_output, check_output_path

__all__ = [
    "FORMATS",
    "SHAPEFILE_FIELDS",
    "check_vector_output",
    "read_vectors",
    "vector_files",
    "vector_format",
    "write_vectors",
]

log = logging.getLogger(__name__)

#: Format name -> (extension, OGR driver; None = written by geopandas/pyarrow).
FORMATS: dict[str, tuple[str, str | None]] = {
    "gpkg": (".gpkg", "GPKG"),
    "shp": (".shp", "ESRI Shapefile"),
    "parquet": (".parquet", None),
    "fgb": (".fgb", "FlatGeobuf"),
    "geojson": (".geojson", "GeoJSON"),
}
_BY_EXTENSION = {ext: name for name, (ext, _) in FORMATS.items()} | {
    ".geoparquet": "parquet",
    ".json": "geojson",
}
#: Column -> Shapefile field name (DBF names hold at most 10 characters).
SHAPEFILE_FIELDS = {
    "class_id": "class_id",
    "class_name": "class_name",
    "instance_id": "inst_id",
    "area_m2": "area_m2",
    "area_ha": "area_ha",
    "area_ac": "area_ac",
    "perim_m": "perim_m",
    "conf_mean": "conf_mean",
}
#: Files of a Shapefile that geoseg writes, and others that belong to an old one.
_SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg", ".shp")
_SHAPEFILE_STALE = (".qix", ".sbn", ".sbx", ".shp.xml", ".aux.xml", ".qmd")
_SHAPEFILE_LIMIT = 2**31
#: Features per write call, for drivers that can append to a layer.
_BATCH = 200_000
_APPENDABLE = ("GPKG", "ESRI Shapefile")


def vector_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The format name (a key of :data:`FORMATS`) for ``path``, or ``fmt`` if given.

    Raises:
        GeosegError: ``fmt`` or the extension is not a known format.
    """
    names = ", ".join(FORMATS)
    if fmt is not None:
        key = fmt.lower().lstrip(".")
        key = _BY_EXTENSION.get(f".{key}", key)
        if key not in FORMATS:
            raise GeosegError(f"unknown vector format {fmt!r}; use one of {names}")
        return key
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "gpkg"
    if suffix not in _BY_EXTENSION:
        raise GeosegError(
            f"{path}: unknown vector format {suffix!r}; use an extension of {names} "
            "(.gpkg, .shp, .parquet, .fgb, .geojson) or pass --format"
        )
    return _BY_EXTENSION[suffix]


def vector_files(path: str | os.PathLike[str], fmt: str | None = None) -> list[Path]:
    """Every file the output ``path`` is made of (a Shapefile's sidecars included)."""
    path = Path(path)
    if vector_format(path, fmt) != "shp":
        return [path]
    return [path.with_suffix(s) for s in (*_SHAPEFILE_PARTS, *_SHAPEFILE_STALE)]


def check_vector_output(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    overwrite: bool = False,
    inputs: Sequence[Path] = (),
) -> str:
    """Check an output can be written before any work; returns its format name.

    Raises:
        GeosegError: unknown format, missing folder, or the output is an input.
        OutputExistsError: the output (or a Shapefile sidecar) exists, no ``overwrite``.
    """
    key = vector_format(path, fmt)
    path = Path(path)
    check_output_path(path, overwrite, inputs)
    if not overwrite:
        for part in vector_files(path, key):
            if part.exists():
                raise OutputExistsError(f"{part}: exists; pass --overwrite to replace it")
    return key


def _shapefile_bytes(frame: gpd.GeoDataFrame) -> tuple[int, int]:
    """Estimated sizes of the ``.shp`` and ``.dbf`` files."""
    geoms = np.asarray(frame.geometry.values)
    points = int(shapely.get_num_coordinates(geoms).sum())
    rings = int(sum(shapely.get_num_interior_rings(shapely.get_parts(geoms)) + 1))
    shp = 100 + len(frame) * 52 + rings * 4 + points * 16
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns if c != "geometry"]
    width = sum(24 if n else 254 for n in numeric)
    return shp, 33 + 32 * (frame.shape[1] - 1) + len(frame) * (1 + width)


def _write_shapefile(frame: gpd.GeoDataFrame, path: Path, layer: str, overwrite: bool) -> None:
    frame = frame.rename(columns=SHAPEFILE_FIELDS)
    shp, dbf = _shapefile_bytes(frame)
    if max(shp, dbf) > _SHAPEFILE_LIMIT:
        log.warning(
            "%s: the Shapefile would be about %.1f GB (.shp) / %.1f GB (.dbf); files over "
            "2 GB are not read by many programs, write .gpkg or .parquet instead",
            path, shp / 1e9, dbf / 1e9,
        )  # fmt: skip
    stage = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp")
    stage.mkdir()
    try:
        _write_batches(frame, stage / path.name, layer, "ESRI Shapefile", encoding="UTF-8")
        check_vector_output(path, "shp", overwrite)
        for suffix in _SHAPEFILE_STALE:
            with contextlib.suppress(FileNotFoundError):
                path.with_suffix(suffix).unlink()
        for suffix in _SHAPEFILE_PARTS:  # .shp last: a reader sees all sidecars or no .shp
            src = (stage / path.name).with_suffix(suffix)
            if src.exists():
                os.replace(src, path.with_suffix(suffix))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_batches(
    frame: gpd.GeoDataFrame, path: Path, layer: str, driver: str, **options: str
) -> None:
    """Write with pyogrio, appending :data:`_BATCH` features at a time where the driver can.

    Each call converts its features to WKB at once: batches keep that copy small.
    """
    step = _BATCH if driver in _APPENDABLE else max(len(frame), 1)
    kind = "MultiPolygon" if frame.geom_type.eq("MultiPolygon").any() else None
    for start in range(0, max(len(frame), 1), step):
        pyogrio.write_dataframe(
            frame.iloc[start : start + step], path, layer=layer, driver=driver,
            append=start > 0, promote_to_multi=kind is not None, **options,
        )  # fmt: skip


def _write_parquet(frame: gpd.GeoDataFrame, path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise GeosegError(
            f"{path}: writing GeoParquet needs pyarrow; `pip install pyarrow` or choose .gpkg"
        ) from exc
    frame.to_parquet(path, index=False, write_covering_bbox=True)


def write_vectors(
    frame: gpd.GeoDataFrame,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    layer: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``frame`` to ``path`` atomically (see module doc); returns ``path``.

    Args:
        frame: polygons with a CRS.
        path: output file; its extension picks the format unless ``fmt`` is given.
        fmt: ``gpkg``, ``shp``, ``parquet``, ``fgb`` or ``geojson``.
        layer: layer name (default: the output's stem).
        overwrite: replace an existing output.

    Raises:
        GeosegError: unknown format, no CRS, or the output exists (no ``overwrite``).
    """
    out = Path(path)
    key = check_vector_output(out, fmt, overwrite)
    if frame.crs is None:
        raise GeosegError(f"{out}: the polygons have no CRS; geoseg writes no layer without one")
    layer = layer or out.stem
    if key == "shp":
        _write_shapefile(frame, out, layer, overwrite)
        return out
    with atomic_output(out, overwrite) as tmp:
        tmp.unlink()  # the drivers create the file themselves
        if key == "parquet":
            _write_parquet(frame, tmp)
        elif key == "geojson":
            pyogrio.write_dataframe(
                frame.to_crs(4326), tmp, layer=layer, driver="GeoJSON",
                layer_options={"RFC7946": "YES"},
            )  # fmt: skip
        else:
            _write_batches(frame, tmp, layer, str(FORMATS[key][1]))
    return out


def read_vectors(path: str | os.PathLike[str], layer: str | None = None) -> gpd.GeoDataFrame:
    """Read a layer written by :func:`write_vectors` (GeoParquet through geopandas).

    Raises:
        InputNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file; check the path")
    if vector_format(path) == "parquet":
        return gpd.read_parquet(path)
    return pyogrio.read_dataframe(path, layer=layer)
