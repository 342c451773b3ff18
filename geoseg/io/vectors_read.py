"""Read a vector layer written by :func:`geoseg.io.vectors.write_vectors`."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import pyogrio

from geoseg.errors import InputNotFoundError
from geoseg.io.vectors_formats import vector_format

__all__ = ["read_vectors"]


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
