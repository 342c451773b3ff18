"""Write stratified sample points (for reference labelling) as a point layer, atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np

from geoseg.change.sampling import SamplePoints
from geoseg.io.vectors import write_vectors

__all__ = ["write_sample_points"]


def write_sample_points(
    points: SamplePoints,
    path: str | os.PathLike[str],
    crs: Any,
    names: Mapping[int, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write sample points as GPKG (or any format of :func:`geoseg.io.vectors.write_vectors`).

    Columns: ``sample_id``, ``stratum`` (id), ``stratum_name``, ``row``, ``col`` and an
    empty ``reference`` column for the interpreter's class.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    names = names or {}
    frame = gpd.GeoDataFrame(
        {
            "sample_id": np.arange(points.stratum.size, dtype=np.int64),
            "stratum": points.stratum.astype(np.int64),
            "stratum_name": [names.get(int(s), str(int(s))) for s in points.stratum],
            "row": points.row.astype(np.int64),
            "col": points.col.astype(np.int64),
            "reference": [None] * points.stratum.size,
        },
        geometry=gpd.points_from_xy(points.x, points.y),
        crs=crs,
    )
    frame["reference"] = frame["reference"].astype("string")
    return write_vectors(frame, path, overwrite=overwrite)
