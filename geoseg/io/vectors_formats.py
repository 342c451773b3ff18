"""Vector output formats: names, extensions, the files an output is made of, output checks.

See :mod:`geoseg.io.vectors` for what each format is written with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from geoseg.errors import GeosegError, OutputExistsError
from geoseg.io.atomic import check_output_path

__all__ = [
    "FORMATS",
    "GEOMETRY",
    "SHAPEFILE_FIELDS",
    "SHAPEFILE_PARTS",
    "SHAPEFILE_STALE",
    "check_vector_output",
    "vector_files",
    "vector_format",
]

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
    "score": "score",
    "area_m2": "area_m2",
    "area_ha": "area_ha",
    "area_ac": "area_ac",
    "perim_m": "perim_m",
    "conf_mean": "conf_mean",
}
#: Files of a Shapefile that geoseg writes, and others that belong to an old one.
SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg", ".shp")
SHAPEFILE_STALE = (".qix", ".sbn", ".sbx", ".shp.xml", ".aux.xml", ".qmd")
#: Name of the geometry column (WKB) in the record batches written.
GEOMETRY = "geometry"


def vector_format(
    path: str | os.PathLike[str], fmt: str | None = None, format_option: str | None = None
) -> str:
    """The format name (a key of :data:`FORMATS`) for ``path``, or ``fmt`` if given.

    Args:
        format_option: the caller's option naming a format (``--format``), offered
            for a name without a known extension; None: it has none, none is offered.

    Raises:
        GeosegError: ``fmt`` or the extension is not a known format, or ``fmt``
            contradicts a known extension (``-o x.gpkg --format parquet``).
    """
    names = ", ".join(FORMATS)
    if fmt is not None:
        key = fmt.lower().lstrip(".")
        key = _BY_EXTENSION.get(f".{key}", key)
        if key not in FORMATS:
            raise GeosegError(f"unknown vector format {fmt!r}; use one of {names}")
        named = _BY_EXTENSION.get(Path(path).suffix.lower(), key)
        if named != key:  # a Parquet file called .gpkg opens nowhere as a GeoPackage
            raise GeosegError(
                f"{path}: --format {fmt} writes a {key} file but the name ends in "
                f"{Path(path).suffix!r} ({named}); name it {Path(path).stem}{FORMATS[key][0]} "
                "or drop --format"
            )
        return key
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "gpkg"
    if suffix not in _BY_EXTENSION:
        offer = f" or pass {format_option}" if format_option else ""
        raise GeosegError(
            f"{path}: unknown vector format {suffix!r}; use an extension of {names} "
            f"(.gpkg, .shp, .parquet, .fgb, .geojson){offer}"
        )
    return _BY_EXTENSION[suffix]


def vector_files(path: str | os.PathLike[str], fmt: str | None = None) -> list[Path]:
    """Every file the output ``path`` is made of (a Shapefile's sidecars included)."""
    path = Path(path)
    if vector_format(path, fmt) != "shp":
        return [path]
    return [path.with_suffix(s) for s in (*SHAPEFILE_PARTS, *SHAPEFILE_STALE)]


def check_vector_output(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    overwrite: bool = False,
    inputs: Sequence[Path] = (),
    format_option: str | None = None,
) -> str:
    """Check an output can be written before any work; returns its format name
    (``format_option``: as :func:`vector_format`'s).

    Raises:
        GeosegError: unknown format, missing folder, or the output is an input.
        OutputExistsError: the output (or a Shapefile sidecar) exists, no ``overwrite``.
    """
    key = vector_format(path, fmt, format_option)
    path = Path(path)
    check_output_path(path, overwrite, inputs)
    if not overwrite:
        for part in vector_files(path, key):
            if part.exists():
                raise OutputExistsError(f"{part}: exists; pass --overwrite to replace it")
    return key
