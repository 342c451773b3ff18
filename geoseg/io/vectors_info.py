"""What a vector file holds, without reading its features: layers, CRS, counts, fields, bounds.

The summary ``ogrinfo -so`` prints, for ``geoseg info``. GeoParquet (which this
GDAL build does not read) is summarised from its ``geo`` metadata and columns.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pyproj

from geoseg.errors import InvalidVectorError
from geoseg.io.gdal_errors import quiet_gdal_errors
from geoseg.io.vectors_crs import declares_crs
from geoseg.io.vectors_read import is_parquet, parquet_geo_metadata

__all__ = ["LayerInfo", "is_vector_file", "vector_layers"]


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a vector file.

    Attributes:
        name: layer name.
        geometry_type: e.g. ``"Polygon"`` (``None``: a table without geometry).
        features: feature count.
        crs: the CRS the file declares (``None``: it declares none; GeoJSON
            without a ``crs`` member counts as none, see :mod:`geoseg.io.vectors_crs`).
        fields: ``(name, dtype)`` of each attribute, in file order.
        bounds: ``(xmin, ymin, xmax, ymax)`` in the layer's coordinates (NaN: no geometry).
    """

    name: str
    geometry_type: str | None
    features: int
    crs: pyproj.CRS | None
    fields: tuple[tuple[str, str], ...]
    bounds: tuple[float, float, float, float]


def is_vector_file(path: str | os.PathLike[str]) -> bool:
    """Whether GDAL (or, for ``.parquet``, pyarrow) opens ``path`` as a vector dataset."""
    if is_parquet(path):
        import pyarrow.parquet as pq

        try:
            return b"geo" in (pq.read_schema(path).metadata or {})
        except (OSError, ValueError):
            return False
    try:  # GDAL's notes (a GeoPackage named .tif) are not the caller's message
        with quiet_gdal_errors(), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return len(pyogrio.list_layers(path)) > 0
    except (pyogrio.errors.DataSourceError, OSError):
        return False


def vector_layers(path: str | os.PathLike[str]) -> list[LayerInfo]:
    """Every layer of a vector file (see :func:`is_vector_file`), in file order."""
    if is_parquet(path):
        return [_parquet_layer(Path(path))]
    out = []
    for name, _ in pyogrio.list_layers(path):
        info = pyogrio.read_info(path, layer=name, force_feature_count=True,
                                 force_total_bounds=True)  # fmt: skip
        declared = info["crs"] is not None and declares_crs(Path(path), info["driver"])
        bounds = info["total_bounds"]
        out.append(
            LayerInfo(
                name=str(name),
                geometry_type=info["geometry_type"],
                features=int(info["features"]),
                crs=pyproj.CRS.from_user_input(info["crs"]) if declared else None,
                fields=tuple(zip(map(str, info["fields"]), map(str, info["dtypes"]), strict=True)),
                bounds=_bounds(bounds),
            )
        )
    return out


def _bounds(values: Any) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` as floats; all NaN when there are none."""
    x0, y0, x1, y1 = (float(v) for v in (values if values is not None else [np.nan] * 4))
    return x0, y0, x1, y1


def _parquet_layer(path: Path) -> LayerInfo:
    import geopandas as gpd
    import pyarrow.parquet as pq

    geo = parquet_geo_metadata(path) or {}
    try:
        column = str(geo["primary_column"])
        meta = dict(geo["columns"][column])
    except (KeyError, TypeError, ValueError):
        raise InvalidVectorError(
            f"{path}: malformed GeoParquet 'geo' metadata: no primary column; rewrite the file"
        ) from None
    file = pq.ParquetFile(path)
    frame = gpd.read_parquet(path, columns=[column])
    types = meta.get("geometry_types") or []
    return LayerInfo(
        name=path.stem,
        geometry_type=types[0]
        if len(types) == 1
        else ("Unknown" if not types else "/".join(types)),
        features=int(file.metadata.num_rows),
        crs=frame.crs if meta.get("crs") is not None else None,
        fields=tuple(
            (f.name, str(f.type)) for f in file.schema_arrow if f.name not in (column, "bbox")
        ),
        bounds=_bounds(frame.total_bounds),
    )
