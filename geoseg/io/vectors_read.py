"""Read a vector layer written by :func:`geoseg.io.vectors.write_vectors`."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import pyogrio

from geoseg.errors import InputNotFoundError

__all__ = ["is_parquet", "read_vectors"]


def is_parquet(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a GeoParquet file (read by pyarrow; this GDAL has no driver)."""
    return Path(path).suffix.lower() in (".parquet", ".geoparquet")


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
        return gpd.read_parquet(path)
    return pyogrio.read_dataframe(path, layer=layer)
