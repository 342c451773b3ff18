"""GeoParquet (1.1) details of the vector writers: the ``bbox`` covering column, geo metadata."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyproj
import shapely

from geoseg.io.vectors_formats import GEOMETRY

__all__ = ["geo_metadata", "with_bbox"]

_BBOX = ("xmin", "ymin", "xmax", "ymax")


def with_bbox(batch: pa.RecordBatch, geoms: np.ndarray) -> pa.RecordBatch:
    """``batch`` with a ``bbox`` struct column (float64 bounds) before its geometry column.

    Args:
        batch: features whose last column is :data:`GEOMETRY`.
        geoms: ``(n,) object`` their shapely geometries.
    """
    if not len(geoms):
        kind = pa.struct([(k, pa.float64()) for k in _BBOX])
        bbox = pa.array([], kind)
    else:
        b = shapely.bounds(geoms)
        bbox = pa.StructArray.from_arrays([pa.array(b[:, i]) for i in range(4)], names=list(_BBOX))
    return pa.RecordBatch.from_arrays(
        [*batch.columns[:-1], bbox, batch.column(GEOMETRY)],
        names=[*batch.schema.names[:-1], "bbox", GEOMETRY],
    )


def geo_metadata(crs: pyproj.CRS, geometry_type: str) -> dict[str, Any]:
    """The file's ``geo`` metadata (GeoParquet 1.1) for a layer in ``crs``.

    Written when the file is opened: the optional ``bbox`` of the whole layer is
    left out (the per-row ``bbox`` covering column serves spatial filters).
    """
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": [] if geometry_type == "Unknown" else [geometry_type],
        "crs": crs.to_json_dict(),
        "covering": {"bbox": {k: ["bbox", k] for k in _BBOX}},
    }
    return {"version": "1.1.0", "primary_column": GEOMETRY, "columns": {GEOMETRY: column}}
