"""Shapefile details of the vector writers: size estimate, moving a staged Shapefile in place."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import shapely

from geoseg.io.outputs import publish
from geoseg.io.vectors_formats import (
    GEOMETRY,
    SHAPEFILE_PARTS,
    SHAPEFILE_STALE,
    check_vector_output,
)

__all__ = ["replace_shapefile", "shapefile_bytes"]


def shapefile_bytes(batch: pa.RecordBatch, geoms: np.ndarray) -> tuple[int, int]:
    """Estimated bytes this batch adds to the ``.shp`` and ``.dbf`` files.

    Args:
        batch: the features, geometry column :data:`GEOMETRY` included.
        geoms: ``(n,) object`` their shapely geometries.
    """
    points = int(shapely.get_num_coordinates(geoms).sum())
    rings = int(np.sum(shapely.get_num_interior_rings(shapely.get_parts(geoms)) + 1))
    shp = batch.num_rows * 52 + rings * 4 + points * 16
    fields = [f for f in batch.schema if f.name != GEOMETRY]
    width = sum(24 if not pa.types.is_string(f.type) else 254 for f in fields)
    return shp, batch.num_rows * (1 + width)


def replace_shapefile(staged: Path, path: Path, overwrite: bool) -> None:
    """Move a Shapefile written in a staging folder to ``path`` (``.shp`` last)."""
    check_vector_output(path, "shp", overwrite)
    for suffix in SHAPEFILE_STALE:
        with contextlib.suppress(FileNotFoundError):
            path.with_suffix(suffix).unlink()
    for suffix in SHAPEFILE_PARTS:  # .shp last: a reader sees all sidecars or no .shp
        src = staged.with_suffix(suffix)
        if src.exists():
            publish(src, path.with_suffix(suffix))
