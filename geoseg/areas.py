"""True ground areas and lengths (WGS84 ellipsoid) of pixels and polygons in any CRS.

Every area geoseg reports is an ellipsoidal area, whatever the CRS of the data:
UTM, Web Mercator, an equal-area grid or plain longitude/latitude. The one
exception is a CRS without a datum (an engineering grid, ``LOCAL_CS[...]``): it has
no ellipsoid and no place on Earth, so its areas are planar, in its linear unit
converted to metres (:func:`area_method` says which applies; a CRS whose unit is
unknown, or that cannot be mapped to longitude/latitude, is refused).

How: coordinates are transformed to WGS84 longitude/latitude and mapped to the
cylindrical equal-area plane ``(lambda, A(phi))``, where ``A(phi)`` is the area of
the ellipsoid between the equator and latitude ``phi`` per radian of longitude
(the authalic-latitude closed form). Areas in that plane are true ellipsoidal
areas, so a polygon's area is a shoelace sum there:

* a cell bounded by two parallels and two meridians (a pixel of a geographic or
  normal-aspect cylindrical CRS: EPSG:4326, EPSG:3857, EPSG:6933) gets its exact
  ellipsoidal area;
* for other projections (UTM, EPSG:3035, ...) an edge that is straight in the CRS
  is a slight curve on the ellipsoid; edges are densified to at most
  ``max_segment`` (100 m by default) so the chord error is below 1e-7 relative.

Lengths (perimeters) sum, per edge, the ground length from the local radii of
curvature at the edge midpoint: exact along a parallel or a meridian (the edges
of geographic pixels), and within 1e-9 relative of the geodesic for edges of a
few hundred metres.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.database import get_units_map
from pyproj.exceptions import ProjError

from geoseg.errors import UnsupportedCRSError

__all__ = [
    "ACRE_M2",
    "DEFAULT_MAX_SEGMENT_M",
    "HECTARE_M2",
    "AreaMethod",
    "area_method",
    "crs_units_per_metre",
    "pixel_area_m2",
    "pixel_size_m",
    "polygon_area_m2",
    "polygon_area_perimeter_m",
    "polygon_perimeter_m",
    "pyproj_crs",
    "ring_area_perimeter_m",
]

#: One hectare and one international acre, in m².
HECTARE_M2 = 10_000.0
ACRE_M2 = 4046.8564224
#: Default densification of projected polygon edges before area/length, metres.
DEFAULT_MAX_SEGMENT_M = 100.0

_A = 6378137.0  # WGS84 semi-major axis, m
_F = 1 / 298.257223563
_E2 = _F * (2 - _F)
_E = np.sqrt(_E2)


def _authalic_m2(lat_rad: np.ndarray) -> np.ndarray:
    """Ellipsoid area between the equator and ``lat`` per radian of longitude, m²."""
    s = np.sin(lat_rad)
    q = (1 - _E2) * (s / (1 - _E2 * s * s) + np.arctanh(_E * s) / _E)
    return np.asarray(0.5 * _A * _A * q)


@functools.lru_cache(maxsize=32)
def _to_lonlat(crs_wkt: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(crs_wkt), CRS.from_epsg(4326), always_xy=True)


def pyproj_crs(crs: Any) -> CRS:
    """A pyproj CRS from a pyproj/rasterio CRS, EPSG code or string."""
    if isinstance(crs, CRS):
        return crs
    if hasattr(crs, "to_wkt"):
        return CRS.from_wkt(crs.to_wkt())
    return CRS.from_user_input(crs)


#: Linear-unit names as ESRI/older WKT spell them -> the PROJ database's name.
_UNIT_ALIASES = {
    "meter": "metre", "meters": "metre", "metres": "metre", "m": "metre",
    "foot_us": "US survey foot", "us_survey_foot": "US survey foot",
    "feet": "foot", "ft": "foot", "international foot": "foot", "foot (international)": "foot",
    "kilometer": "kilometre", "km": "kilometre",
}  # fmt: skip
#: Text of the ``area_method`` field of reports for an ellipsoidal CRS.
ELLIPSOIDAL = "ellipsoidal (WGS84) area of every pixel, geoseg.areas.pixel_area_m2"


@dataclass(frozen=True)
class AreaMethod:
    """How ground areas are measured in one CRS.

    Attributes:
        planar: False: true ellipsoidal (WGS84) areas. True: the CRS has no datum
            (an engineering/local grid), so areas are planar ``dx * dy`` in its
            linear unit, converted to m².
        unit: name of that linear unit (``metre``, ``US survey foot``), "" if not planar.
        metres_per_unit: metres in one CRS unit (1.0 if not planar).
    """

    planar: bool
    unit: str = ""
    metres_per_unit: float = 1.0

    @property
    def description(self) -> str:
        """One line for reports (the ``area_method`` field) and the CLI."""
        if not self.planar:
            return ELLIPSOIDAL
        return (
            f"planar, from the CRS's linear unit ({self.unit}, {self.metres_per_unit:.12g} m): "
            "a local CRS without a datum has no ellipsoid, so areas are not ellipsoidal"
        )


def area_method(crs: Any, source: str | None = None) -> AreaMethod:
    """How areas are measured in ``crs`` (see :class:`AreaMethod`).

    Args:
        crs: a pyproj/rasterio CRS, EPSG code or string.
        source: the file the CRS comes from, named in the error message.

    Raises:
        UnsupportedCRSError: a CRS without a datum whose linear unit is unknown,
            or a CRS that cannot be mapped to WGS84 longitude/latitude.
    """
    return _area_method(pyproj_crs(crs).to_wkt(), source or "")


@functools.lru_cache(maxsize=64)
def _area_method(wkt: str, source: str) -> AreaMethod:
    crs = CRS.from_wkt(wkt)
    where = f"{source}: " if source else ""
    if crs.is_engineering:
        return _planar_method(crs, where)
    try:
        _to_lonlat(wkt)
    except ProjError as exc:
        raise UnsupportedCRSError(
            f"{where}its CRS {crs.name!r} cannot be mapped to WGS84 longitude/latitude, so "
            f"ground areas cannot be measured ({exc}); reproject the file to an Earth CRS "
            "(`gdalwarp -t_srs EPSG:...`)"
        ) from None
    return AreaMethod(planar=False)


def _planar_method(crs: CRS, where: str) -> AreaMethod:
    """The planar method of an engineering CRS, if its linear unit is a known one."""
    fix = (
        'declare the unit, e.g. `gdal_edit.py -a_srs \'LOCAL_CS["grid",UNIT["metre",1]]\'`, '
        "or give the file its real CRS"
    )
    units = {(a.unit_name, a.unit_conversion_factor) for a in crs.axis_info}
    if len(units) != 1:
        raise UnsupportedCRSError(
            f"{where}its local CRS {crs.name!r} has no single linear unit "
            f"({sorted(u[0] for u in units) or 'none'}), so areas cannot be measured; {fix}"
        )
    name, factor = units.pop()
    known = get_units_map(category="linear")
    canonical = _UNIT_ALIASES.get(name.strip().lower(), name.strip())
    by_lower = {k.lower(): k for k in known}
    entry = known.get(by_lower.get(canonical.lower(), ""))
    if entry is None or not np.isclose(entry.conv_factor, factor, rtol=1e-9, atol=0):
        raise UnsupportedCRSError(
            f"{where}its local CRS {crs.name!r} (no datum, so areas are planar) has an unknown "
            f"linear unit {name!r} ({factor:g} m?), so areas cannot be measured; {fix}"
        )
    return AreaMethod(planar=True, unit=entry.name, metres_per_unit=float(factor))


def _lonlat_rad(crs: CRS, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon, lat = _to_lonlat(crs.to_wkt()).transform(x, y)
    return np.radians(lon), np.radians(lat)


def crs_units_per_metre(crs: Any) -> float:
    """CRS units in one metre of ground (for a geographic CRS: degrees, at the equator)."""
    crs = pyproj_crs(crs)
    if crs.is_geographic:
        return 180.0 / (np.pi * _A)
    if crs.is_engineering:
        return 1.0 / area_method(crs).metres_per_unit
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return 1.0 / float(factor or 1.0)


def _wrap(dlon: np.ndarray) -> np.ndarray:
    """Longitude differences into [-pi, pi) (edges crossing the antimeridian)."""
    return (dlon + np.pi) % (2 * np.pi) - np.pi


def pixel_area_m2(crs: Any, transform: Affine, rows: Any, cols: Any) -> np.ndarray:
    """True ground area of pixels of a north-up raster, in m².

    Args:
        crs: the raster's CRS (pyproj or rasterio CRS, or anything pyproj accepts).
        transform: the raster's affine pixel-to-CRS transform.
        rows: ``(R,)`` pixel row indices.
        cols: ``(C,)`` pixel column indices. Every pixel of a row of a geographic
            raster has the same area, but in a projected CRS the area varies along
            a row too (UTM), so both are needed.

    Returns:
        ``(R, C) float64``: the ellipsoidal area of pixel ``(rows[i], cols[j])``
        (planar, the same for every pixel, in a CRS without a datum: :func:`area_method`).

    Raises:
        UnsupportedCRSError: see :func:`area_method`.
    """
    crs = pyproj_crs(crs)
    rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    cols = np.atleast_1d(np.asarray(cols, dtype=np.int64))
    method = area_method(crs)
    if method.planar:
        side_m2 = abs(transform.a * transform.e - transform.b * transform.d)
        return np.full((rows.size, cols.size), side_m2 * method.metres_per_unit**2)
    # Corners shared by neighbouring pixels are transformed once.
    cr = np.unique(np.concatenate([rows, rows + 1]))
    cc = np.unique(np.concatenate([cols, cols + 1]))
    gx = transform.c + transform.a * cc[None, :] + transform.b * cr[:, None]
    gy = transform.f + transform.d * cc[None, :] + transform.e * cr[:, None]
    lon, lat = _lonlat_rad(crs, gx.ravel(), gy.ravel())
    lon, ya = lon.reshape(gx.shape), _authalic_m2(lat).reshape(gx.shape)
    r0, c0 = np.searchsorted(cr, rows)[:, None], np.searchsorted(cc, cols)[None, :]
    r1, c1 = np.searchsorted(cr, rows + 1)[:, None], np.searchsorted(cc, cols + 1)[None, :]
    ring = [(r0, c0), (r0, c1), (r1, c1), (r1, c0), (r0, c0)]
    ref = ya[r0, c0]
    total = np.zeros((rows.size, cols.size))
    for (ra, ca), (rb, cb) in itertools.pairwise(ring):
        dlon = _wrap(lon[rb, cb] - lon[ra, ca])
        total += dlon * ((ya[ra, ca] - ref) + (ya[rb, cb] - ref)) * 0.5
    return np.abs(total)


def pixel_size_m(crs: Any, transform: Affine, shape: tuple[int, int]) -> float:
    """Ground sample distance of a north-up ``(H, W)`` raster, in metres.

    Projected or local CRS: the pixel width in its linear unit converted to metres.
    Geographic CRS: the side of a square of the true ellipsoidal area of the
    scene's centre pixel (a 8.98e-05 degree pixel at 38 N is about 10 m N-S by
    7.9 m E-W: 8.9 m).

    Raises:
        UnsupportedCRSError: see :func:`area_method`.
    """
    crs = pyproj_crs(crs)
    if not crs.is_geographic:
        return float(abs(transform.a)) / crs_units_per_metre(crs)
    h, w = shape
    return float(np.sqrt(pixel_area_m2(crs, transform, [h // 2], [w // 2])[0, 0]))


def _densify(
    xy: np.ndarray, vert_ring: np.ndarray, max_len: float
) -> tuple[np.ndarray, np.ndarray]:
    """Split ring edges longer than ``max_len`` (CRS units) into equal pieces."""
    same = np.r_[vert_ring[1:] == vert_ring[:-1], False]
    nxt = np.minimum(np.arange(vert_ring.size) + 1, vert_ring.size - 1)
    d = xy[nxt] - xy
    pieces = np.where(same, np.ceil(np.hypot(d[:, 0], d[:, 1]) / max_len), 1.0)
    count = np.maximum(pieces, 1).astype(np.int64)
    if (count == 1).all():
        return xy, vert_ring
    src = np.repeat(np.arange(vert_ring.size), count)
    frac = (np.arange(src.size) - np.repeat(np.cumsum(count) - count, count)) / count[src]
    return xy[src] + frac[:, None] * d[src], vert_ring[src]


def ring_area_perimeter_m(
    xy: np.ndarray,
    vert_ring: np.ndarray,
    n_rings: int,
    crs: Any,
    max_segment_m: float | None = DEFAULT_MAX_SEGMENT_M,
) -> tuple[np.ndarray, np.ndarray]:
    """Ellipsoidal area enclosed by, and ground length of, closed rings given as flat arrays.

    Args:
        xy: ``(V, 2) float64`` vertices in ``crs``, ring after ring, each ring
            closed (last vertex = first).
        vert_ring: ``(V,)`` ring number of each vertex, ascending from 0.
        n_rings: number of rings.
        crs: the CRS of ``xy``.
        max_segment_m: densify projected edges to this ground length first (see
            the module doc); None or 0 uses the edges as they are.

    Returns:
        ``(area_m2, length_m)``, each ``(n_rings,) float64``; areas are unsigned
        (planar in a CRS without a datum: :func:`area_method`).

    Raises:
        UnsupportedCRSError: see :func:`area_method`.
    """
    crs = pyproj_crs(crs)
    if xy.size == 0:
        return np.zeros(n_rings), np.zeros(n_rings)
    method = area_method(crs)
    if method.planar:
        return _planar_rings(xy, vert_ring, n_rings, method.metres_per_unit)
    if not crs.is_geographic and max_segment_m and np.isfinite(max_segment_m):
        xy, vert_ring = _densify(xy, vert_ring, max_segment_m * crs_units_per_metre(crs))
    lon, lat = _lonlat_rad(crs, xy[:, 0], xy[:, 1])
    i = np.flatnonzero(vert_ring[1:] == vert_ring[:-1])
    edge_ring = vert_ring[i]
    dlon = _wrap(lon[i + 1] - lon[i])
    ya = _authalic_m2(lat)
    start = np.searchsorted(vert_ring, np.arange(n_rings))
    ref = ya[np.minimum(start, ya.size - 1)][edge_ring]
    term = dlon * ((ya[i] - ref) + (ya[i + 1] - ref)) * 0.5
    area = np.abs(np.bincount(edge_ring, weights=term, minlength=n_rings))
    mid = 0.5 * (lat[i] + lat[i + 1])
    w = 1 - _E2 * np.sin(mid) ** 2
    east = _A / np.sqrt(w) * np.cos(mid) * dlon
    north = _A * (1 - _E2) / w**1.5 * (lat[i + 1] - lat[i])
    length = np.bincount(edge_ring, weights=np.hypot(east, north), minlength=n_rings)
    return area, length


def _planar_rings(
    xy: np.ndarray, vert_ring: np.ndarray, n_rings: int, metres_per_unit: float
) -> tuple[np.ndarray, np.ndarray]:
    """Shoelace areas (m²) and lengths (m) of closed rings in a planar CRS."""
    i = np.flatnonzero(vert_ring[1:] == vert_ring[:-1])
    edge_ring = vert_ring[i]
    # Coordinates relative to each ring's first vertex keep the cross products small.
    start = np.searchsorted(vert_ring, np.arange(n_rings))
    origin = xy[np.minimum(start, len(xy) - 1)][edge_ring]
    a, b = xy[i] - origin, xy[i + 1] - origin
    cross = a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]
    area = np.abs(np.bincount(edge_ring, weights=cross, minlength=n_rings)) * 0.5
    d = b - a
    length = np.bincount(edge_ring, weights=np.hypot(d[:, 0], d[:, 1]), minlength=n_rings)
    return area * metres_per_unit**2, length * metres_per_unit


def polygon_area_perimeter_m(
    geoms: Any, crs: Any, max_segment_m: float | None = DEFAULT_MAX_SEGMENT_M
) -> tuple[np.ndarray, np.ndarray]:
    """Ellipsoidal area (m²) and perimeter (m, holes included) of (multi)polygons.

    Args:
        geoms: ``(N,)`` shapely Polygons/MultiPolygons in ``crs`` (None/empty -> 0).
        crs: their CRS.
        max_segment_m: densify projected edges to this ground length first; None
            uses edges as they are (exact for cells of cylindrical projections).

    Returns:
        ``(area_m2, perimeter_m)``, each ``(N,) float64``.
    """
    geoms = np.atleast_1d(np.asarray(geoms, dtype=object))
    n = geoms.size
    parts, part_geom = shapely.get_parts(geoms, return_index=True)
    keep = ~shapely.is_empty(parts)
    parts, part_geom = parts[keep], part_geom[keep]
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    xy, vert_ring = shapely.get_coordinates(rings, return_index=True)
    area, length = ring_area_perimeter_m(xy, vert_ring, rings.size, crs, max_segment_m)
    hole = np.r_[False, ring_part[1:] == ring_part[:-1]]
    ring_geom = part_geom[ring_part]
    signed = np.where(hole, -area, area)
    total = np.bincount(ring_geom, weights=signed, minlength=n)
    return np.maximum(total, 0.0), np.bincount(ring_geom, weights=length, minlength=n)


def polygon_area_m2(
    geoms: Any, crs: Any, max_segment_m: float | None = DEFAULT_MAX_SEGMENT_M
) -> np.ndarray:
    """``(N,) float64`` ellipsoidal areas in m² of (multi)polygons in ``crs``."""
    return polygon_area_perimeter_m(geoms, crs, max_segment_m)[0]


def polygon_perimeter_m(
    geoms: Any, crs: Any, max_segment_m: float | None = DEFAULT_MAX_SEGMENT_M
) -> np.ndarray:
    """``(N,) float64`` ground perimeters in m (exterior and holes) of polygons in ``crs``."""
    return polygon_area_perimeter_m(geoms, crs, max_segment_m)[1]
