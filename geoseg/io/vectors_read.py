"""Read a vector layer written by :func:`geoseg.io.vectors.write_vectors`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio

from geoseg.errors import InputNotFoundError, InvalidVectorError
from geoseg.io.json_text import parse_json

__all__ = ["is_parquet", "parquet_geo_metadata", "read_vectors"]


def is_parquet(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a GeoParquet file (read by pyarrow; this GDAL has no driver)."""
    return Path(path).suffix.lower() in (".parquet", ".geoparquet")


def parquet_geo_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``geo`` metadata of a Parquet file (None: it has none, so it is no GeoParquet).

    Read here, bounded, before geopandas parses it again: a hand-made file may
    nest it 200 000 deep.

    Raises:
        InvalidVectorError: not a Parquet file, or ``geo`` is not a JSON object.
    """
    import pyarrow.parquet as pq

    try:
        raw = (pq.read_schema(path).metadata or {}).get(b"geo")
    except (OSError, ValueError) as exc:
        raise InvalidVectorError(f"{path}: not a Parquet file ({str(exc)[:200]})") from None
    if raw is None:
        return None
    fix = "rewrite the file (e.g. with geopandas to_parquet or ogr2ogr)"
    geo = parse_json(raw, path, "GeoParquet 'geo' metadata", InvalidVectorError, fix)
    if not isinstance(geo, dict):
        raise InvalidVectorError(
            f"{path}: malformed GeoParquet 'geo' metadata: not a JSON object; {fix}"
        )
    return geo


def read_vectors(path: str | os.PathLike[str], layer: str | None = None) -> gpd.GeoDataFrame:
    """Read a layer written by :func:`write_vectors` (GeoParquet through geopandas).

    Any other format GDAL reads (KML, GML, ``.json`` ...) is read by pyogrio too.

    Raises:
        InputNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file; check the path")
    if is_parquet(path):
        parquet_geo_metadata(path)  # bounded before geopandas parses it
        return gpd.read_parquet(path)
    return pyogrio.read_dataframe(path, layer=layer)
