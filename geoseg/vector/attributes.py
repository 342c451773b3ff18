"""Polygons in pixel coordinates -> a GeoDataFrame in the raster's CRS with attributes.

Every polygon leaves here by the right-hand rule in CRS coordinates: exterior rings
counter-clockwise, holes clockwise (OGC simple features, RFC 7946), whichever path
made it (chunks normalized in CRS coordinates, a simplified or merged coverage built
in pixel coordinates, whose north-up rows flip the sense). A signed ring area, such as
``pyproj.Geod.geometry_area_perimeter`` gives, is then the area, positive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from affine import Affine

from geoseg.areas import ACRE_M2, HECTARE_M2, polygon_area_perimeter_m
from geoseg.types import ClassSchema
from geoseg.vector.polygons import Polygons
from geoseg.vector.rings import nested_parts

log = logging.getLogger(__name__)

__all__ = [
    "ATTRIBUTES",
    "Georef",
    "UnknownClasses",
    "class_names",
    "georeference",
    "hole_area_perimeter_m",
    "pixel_to_crs",
    "pixel_xy_to_crs",
    "polygon_batch",
    "polygon_table",
    "right_hand_rule",
    "sort_table",
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


def hole_area_perimeter_m(
    geoms: np.ndarray, area_m2: np.ndarray, perim_m: np.ndarray, georef: Georef
) -> tuple[np.ndarray, np.ndarray]:
    """What of polygons' area and perimeter is not their filled outlines'.

    The outlines are the exterior rings of the parts that lie in no hole of another
    part (:func:`nested_parts`): what is left is their holes, less the parts nested
    in them (area), and the rings of both (length).

    Args:
        geoms: ``(N,)`` valid Polygons/MultiPolygons, pixel coordinates.
        area_m2, perim_m: ``(N,)`` their true areas and perimeters.
        georef: their grid and CRS.

    Returns:
        ``(hole_area_m2, hole_perim_m)``, each ``(N,) float64``.
    """
    parts, part_geom, nested = nested_parts(geoms)
    outer = shapely.polygons(shapely.get_exterior_ring(parts[~nested]))
    area, perim = polygon_area_perimeter_m(pixel_to_crs(outer, georef.transform), georef.crs_wkt)
    n = np.asarray(geoms).size
    outline_area = np.bincount(part_geom[~nested], weights=area, minlength=n)
    outline_perim = np.bincount(part_geom[~nested], weights=perim, minlength=n)
    return outline_area - area_m2, perim_m - outline_perim


def class_names(ids: np.ndarray, schema: ClassSchema | None) -> np.ndarray:
    """Class name per id from ``schema``; ids it lacks (or no schema) get ``str(id)``."""
    table = {} if schema is None else {c.id: c.name for c in schema.classes}
    uniq, inverse = np.unique(np.asarray(ids, dtype=np.int64), return_inverse=True)
    names = np.asarray([table.get(int(i), str(int(i))) for i in uniq] or [""], dtype=object)
    return names[inverse.reshape(-1)] if uniq.size else np.zeros(0, dtype=object)


def _columns(
    polygons: Polygons, area: np.ndarray, perim: np.ndarray, schema: ClassSchema | None
) -> dict[str, Any]:
    """The attribute columns of :data:`ATTRIBUTES`, in order (optional ones when present)."""
    cols: dict[str, Any] = {
        "class_id": polygons.class_id.astype(np.int32),
        "class_name": class_names(polygons.class_id, schema),
    }
    if polygons.instance_id is not None:
        cols["instance_id"] = polygons.instance_id.astype(np.int64)
    cols |= {
        "area_m2": np.asarray(area, np.float64),
        "area_ha": area / HECTARE_M2,
        "area_ac": area / ACRE_M2,
        "perim_m": np.asarray(perim, np.float64),
    }
    if (conf := polygons.conf_mean) is not None:
        cols["conf_mean"] = conf
    return cols


def right_hand_rule(geoms: np.ndarray) -> np.ndarray:
    """``geoms`` with exterior rings counter-clockwise and holes clockwise (CRS coordinates)."""
    return np.asarray(shapely.orient_polygons(geoms, exterior_cw=False))


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
    geoms = right_hand_rule(geoms)
    if polygons.area_m2 is None or polygons.perim_m is None or transform is not None:
        area, perim = polygon_area_perimeter_m(geoms, crs)
    else:
        area, perim = polygons.area_m2, polygons.perim_m
    cols = _columns(polygons, area, perim, schema)
    return gpd.GeoDataFrame(pd.DataFrame(cols), geometry=np.asarray(geoms), crs=crs)


def polygon_batch(polygons: Polygons, schema: ClassSchema | None = None) -> pa.RecordBatch:
    """Polygons in CRS coordinates with areas as a record batch (attributes, then WKB ``geometry``).

    The form :class:`geoseg.io.vectors.VectorWriter` streams; columns as
    :func:`polygon_table`.
    """
    if polygons.area_m2 is None or polygons.perim_m is None:
        raise ValueError("polygon_batch needs polygons measured in a worker (with a Georef)")
    cols = _columns(polygons, polygons.area_m2, polygons.perim_m, schema)
    arrays = [pa.array(v, pa.string() if k == "class_name" else None) for k, v in cols.items()]
    arrays.append(pa.array(shapely.to_wkb(right_hand_rule(polygons.geometry)), pa.binary()))
    return pa.RecordBatch.from_arrays(arrays, names=[*cols, "geometry"])


def sort_table(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Rows in :meth:`Polygons.sorted` order: class, instance, bounds, area."""
    b = shapely.bounds(np.asarray(frame.geometry.values)).reshape(-1, 4)
    inst = frame["instance_id"] if "instance_id" in frame else np.zeros(len(frame))
    order = np.lexsort(
        (shapely.area(np.asarray(frame.geometry.values)), b[:, 2], b[:, 3], b[:, 0], b[:, 1],
         inst, frame["class_id"])
    )  # fmt: skip
    return frame.iloc[order].reset_index(drop=True)


class UnknownClasses:
    """Tallies polygons whose class id is not in the schema, then warns once.

    Such polygons are written with their id as the class name; a value from
    another schema is a mistake worth a word, with how much ground it covers.

    Args:
        schema: the raster's class schema (None: nothing to check against).
    """

    def __init__(self, schema: ClassSchema | None) -> None:
        self._schema = schema
        self._ids = np.asarray(schema.ids if schema else (), np.int64)
        self.found: dict[int, tuple[int, float]] = {}  # id -> (polygons, area_m2)

    def add(self, class_id: np.ndarray, area_m2: np.ndarray) -> None:
        """Count ``(N,)`` polygons given by class id and area (m²)."""
        if self._schema is None:
            return
        ids = np.asarray(class_id, np.int64)
        outside = ~np.isin(ids, self._ids)
        for value in np.unique(ids[outside]).tolist():
            hit = ids == value
            n, a = self.found.get(int(value), (0, 0.0))
            self.found[int(value)] = (n + int(hit.sum()), a + float(np.asarray(area_m2)[hit].sum()))

    def warn(self, path: str) -> None:
        """Log one warning naming ``path``, the ids, polygon counts and areas (if any)."""
        if not self.found or self._schema is None:
            return
        parts = ", ".join(
            f"{v}: {n} polygon(s), {a:,.2f} m2" for v, (n, a) in sorted(self.found.items())
        )
        log.warning(
            "%s: values that are not classes of its schema (ids %s) were written with their "
            "id as the class name: %s; check the raster was written with this class schema",
            path, ", ".join(str(c) for c in self._schema.ids), parts,
        )  # fmt: skip
