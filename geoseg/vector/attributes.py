"""Polygons in pixel coordinates -> a GeoDataFrame in the raster's CRS with attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine

from geoseg.areas import ACRE_M2, HECTARE_M2, polygon_area_perimeter_m
from geoseg.types import ClassSchema
from geoseg.vector.polygons import Polygons

__all__ = [
    "ATTRIBUTES",
    "Georef",
    "class_names",
    "georeference",
    "pixel_to_crs",
    "pixel_xy_to_crs",
    "polygon_table",
]

#: Columns of a vectorized label raster, in order (``instance_id`` and
#: ``conf_mean`` only when the raster has an instance / confidence band).
ATTRIBUTES = (
    "class_id", "class_name", "instance_id", "area_m2", "area_ha", "area_ac", "perim_m",
    "conf_mean",
)  # fmt: skip


@dataclass(frozen=True)
class Georef:
    """Where pixel coordinates are on the ground (picklable, for workers).

    Attributes:
        crs_wkt: the raster's CRS as WKT.
        transform: the raster's pixel-to-CRS affine transform.
    """

    crs_wkt: str
    transform: Affine


def pixel_xy_to_crs(xy: np.ndarray, transform: Affine) -> np.ndarray:
    """``(V, 2)`` pixel coordinates (x = column, y = row) -> CRS coordinates.

    The one formula used everywhere, so a pixel corner gets bit-identical CRS
    coordinates in every polygon and chunk that has it.
    """
    t = transform
    col, row = xy[:, 0], xy[:, 1]
    return np.column_stack([t.c + t.a * col + t.b * row, t.f + t.d * col + t.e * row])


def pixel_to_crs(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Geometries in pixel coordinates (x = column, y = row) -> CRS coordinates."""
    return np.asarray(shapely.transform(geoms, lambda xy: pixel_xy_to_crs(xy, transform)))


def georeference(polygons: Polygons, georef: Georef) -> Polygons:
    """Polygons in CRS coordinates, with ``area_m2`` and ``perim_m`` filled in."""
    geoms = pixel_to_crs(polygons.geometry, georef.transform)
    area, perim = polygon_area_perimeter_m(geoms, georef.crs_wkt)
    return polygons.replace(geometry=geoms, area_m2=area, perim_m=perim)


def class_names(ids: np.ndarray, schema: ClassSchema | None) -> np.ndarray:
    """Class name per id from ``schema``; ids it lacks (or no schema) get ``str(id)``."""
    table = {} if schema is None else {c.id: c.name for c in schema.classes}
    return np.asarray([table.get(int(i), str(int(i))) for i in ids], dtype=object)


def polygon_table(
    polygons: Polygons,
    crs: Any,
    transform: Affine | None = None,
    schema: ClassSchema | None = None,
) -> gpd.GeoDataFrame:
    """A GeoDataFrame of the polygons with their attributes (see :data:`ATTRIBUTES`).

    Args:
        polygons: polygons in the raster's pixel coordinates (with ``transform``)
            or in ``crs`` (``transform`` None); ``area_m2``/``perim_m`` are
            computed where missing.
        crs: the raster's CRS (written with the geometries).
        transform: the raster's pixel-to-CRS transform.
        schema: class names; without one the name is the id as text.

    Returns:
        Columns ``class_id`` (int), ``class_name``, [``instance_id``], ``area_m2``,
        ``area_ha``, ``area_ac`` (true ellipsoidal areas), ``perim_m`` (holes
        included), [``conf_mean`` (0-1, mean over the polygon's pixels)], geometry.
    """
    geoms = polygons.geometry if transform is None else pixel_to_crs(polygons.geometry, transform)
    if polygons.area_m2 is None or polygons.perim_m is None or transform is not None:
        area, perim = polygon_area_perimeter_m(geoms, crs)
    else:
        area, perim = polygons.area_m2, polygons.perim_m
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
    return gpd.GeoDataFrame(pd.DataFrame(cols), geometry=np.asarray(geoms), crs=crs)
