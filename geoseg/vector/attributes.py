"""Polygons in pixel coordinates -> a GeoDataFrame in the raster's CRS with attributes."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine

from geoseg.areas import ACRE_M2, HECTARE_M2, polygon_area_perimeter_m
from geoseg.types import ClassSchema
from geoseg.vector.polygons import Polygons

__all__ = ["ATTRIBUTES", "class_names", "pixel_to_crs", "polygon_table"]

#: Columns of a vectorized label raster, in order (``instance_id`` and
#: ``conf_mean`` only when the raster has an instance / confidence band).
ATTRIBUTES = (
    "class_id", "class_name", "instance_id", "area_m2", "area_ha", "area_ac", "perim_m",
    "conf_mean",
)  # fmt: skip


def pixel_to_crs(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Geometries in pixel coordinates (x = column, y = row) -> CRS coordinates."""
    a, b, c, d, e, f = transform[:6]

    def apply(xy: np.ndarray) -> np.ndarray:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([c + a * col + b * row, f + d * col + e * row])

    return np.asarray(shapely.transform(geoms, apply))


def class_names(ids: np.ndarray, schema: ClassSchema | None) -> np.ndarray:
    """Class name per id from ``schema``; ids it lacks (or no schema) get ``str(id)``."""
    table = {} if schema is None else {c.id: c.name for c in schema.classes}
    return np.asarray([table.get(int(i), str(int(i))) for i in ids], dtype=object)


def polygon_table(
    polygons: Polygons,
    crs: Any,
    transform: Affine,
    schema: ClassSchema | None = None,
    geometry_crs: np.ndarray | None = None,
) -> gpd.GeoDataFrame:
    """A GeoDataFrame of the polygons with their attributes (see :data:`ATTRIBUTES`).

    Args:
        polygons: polygons in the raster's pixel coordinates.
        crs: the raster's CRS (written with the geometries).
        transform: the raster's pixel-to-CRS transform.
        schema: class names; without one the name is the id as text.
        geometry_crs: the geometries already in CRS coordinates, if at hand.

    Returns:
        Columns ``class_id`` (int), ``class_name``, [``instance_id``], ``area_m2``,
        ``area_ha``, ``area_ac`` (true ellipsoidal areas), ``perim_m`` (holes
        included), [``conf_mean`` (0-1, mean over the polygon's pixels)], geometry.
    """
    geoms = pixel_to_crs(polygons.geometry, transform) if geometry_crs is None else geometry_crs
    area, perim = polygon_area_perimeter_m(geoms, crs)
    cols: dict[str, Any] = {
        "class_id": polygons.class_id.astype(np.int32),
        "class_name": class_names(polygons.class_id, schema),
    }
    if polygons.instance_id is not None:
        cols["instance_id"] = polygons.instance_id.astype(np.int64)
    cols |= {
        "area_m2": area,
        "area_ha": area / HECTARE_M2,
        "area_ac": area / ACRE_M2,
        "perim_m": perim,
    }
    if (conf := polygons.conf_mean) is not None:
        cols["conf_mean"] = conf
    frame = pd.DataFrame(cols)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs)
