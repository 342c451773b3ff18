"""Polygonize one chunk of a label raster (runs in a Dask worker).

``rasterio.features.shapes`` gives the chunk's polygons in global pixel
coordinates. Those that reach a side of the chunk with a neighbouring chunk
(a *seam*) are kept apart, with a *strip* per seam telling which of them holds
each border pixel, for :mod:`geoseg.vector.seams` to dissolve. With a
:class:`~geoseg.vector.attributes.Georef`, true areas and perimeters are
measured here, in parallel, and the other (final) polygons are returned in CRS
coordinates, normalized.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import rasterio.features
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from geoseg.areas import ring_area_perimeter_m
from geoseg.types import NODATA_LABEL
from geoseg.vector.attributes import Georef, hole_area_perimeter_m, pixel_to_crs, pixel_xy_to_crs
from geoseg.vector.polygons import Polygons

__all__ = ["SIDES", "ChunkPolygons", "polygonize_chunk"]

# ``shapes`` and ``rasterize`` work on an in-memory dataset without a geotransform
# and warn about it on every call; the arrays here are pixel grids on purpose.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module=r"rasterio\.features")

#: Sides of a chunk, in the order of ``ChunkPolygons.strips``.
SIDES = ("top", "bottom", "left", "right")
#: Confidence values are ``round(254 p)``; 255 is nodata.
_CONF_SCALE = 254.0


@dataclass(frozen=True)
class ChunkPolygons:
    """What one chunk contributes.

    Attributes:
        window: ``(row, col, height, width)`` of the chunk in the raster.
        final: polygons that reach no interior seam: in CRS coordinates with
            areas when the chunk was polygonized with a :class:`Georef`, else in
            global pixel coordinates.
        seam: polygons that reach an interior seam, in global pixel coordinates
            (with areas and perimeters under a :class:`Georef`).
        strips: for each side with a neighbouring chunk (``"top"``, ...), the
            index into ``seam`` of the polygon holding each border pixel (left to
            right / top to bottom), -1 where the pixel is in no seam polygon.
        batch: the final polygons as a record batch ready for a vector writer
            (then ``final`` is empty), when the chunk was asked for one.
    """

    window: tuple[int, int, int, int]
    final: Polygons
    seam: Polygons
    strips: dict[str, np.ndarray]
    batch: pa.RecordBatch | None = None


@dataclass(frozen=True)
class _Shapes:
    """``shapes`` output as flat arrays (local pixel coordinates)."""

    xy: np.ndarray  # (V, 2) float64 vertices, ring after ring, rings closed
    vert_ring: np.ndarray  # (V,) ring of each vertex
    ring_poly: np.ndarray  # (R,) polygon of each ring (its first ring is the exterior)
    values: np.ndarray  # (P,) int64 pixel value of each polygon
    dicts: list[Any]  # GeoJSON-like geometries, kept only when asked for
    twin: np.ndarray | None = None  # (R,) a ring with the same area and length, or -1


_GC_LOCK = threading.Lock()
_GC_PAUSES = [0, True]  # threads inside _gc_paused, and whether the GC was enabled


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while ``shapes`` builds millions of tuples.

    Every few hundred new tuples the collector would traverse all the live ones
    again; pausing it halves the time of a ``shapes`` loop. Nothing made there is
    cyclic garbage. Counted, so concurrent worker threads restore it once.
    """
    with _GC_LOCK:
        if _GC_PAUSES[0] == 0:
            _GC_PAUSES[1] = gc.isenabled()
            gc.disable()
        _GC_PAUSES[0] += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_PAUSES[0] -= 1
            if _GC_PAUSES[0] == 0 and _GC_PAUSES[1]:
                gc.enable()


#: Neighbour offsets (row, col) of a pixel's 8-neighbourhood.
_RING8 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
#: Closed unit square, counter-clockwise in pixel coordinates (x = col, y = row).
_SQUARE = np.array([[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]], np.float64)


def _lone_pixels(key: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose 8 neighbours are all valid and share one value that is not theirs.

    Such a pixel is a one-pixel polygon and a one-pixel hole in the region around it
    whatever the connectivity (speckle in a class map). Returns ``(rows, cols)``,
    never on the chunk's border.
    """
    h, w = key.shape
    if h < 3 or w < 3:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    inner = key[1:-1, 1:-1]
    north = key[:-2, 1:-1]
    idx = np.flatnonzero((inner != north) & mask[1:-1, 1:-1])
    r, c = np.divmod(idx, w - 2)
    r, c = r + 1, c + 1
    ref = key[r - 1, c]
    for dy, dx in _RING8:
        ok = (key[r + dy, c + dx] == ref) & mask[r + dy, c + dx]
        r, c, ref = r[ok], c[ok], ref[ok]
    return r, c


def _shapes(
    key: np.ndarray, mask: np.ndarray, connectivity: int, keep_dicts: bool, offset: tuple[int, int]
) -> _Shapes:
    """Polygonize ``key`` where ``mask``: ``rasterio.features.shapes``, but lone pixels
    (see :func:`_lone_pixels`) are made here, as squares and as holes of the region
    around them, without a GeoJSON-like dict each: speckle costs next to nothing."""
    rows, cols = (np.zeros(0, np.intp),) * 2 if keep_dicts else _lone_pixels(key, mask)
    if rows.size:
        spot_values = key[rows, cols]
        key = key.copy()
        key[rows, cols] = key[rows - 1, cols]  # each lone pixel joins the region around it
    sh = _gdal_shapes(key, mask, connectivity, keep_dicts, offset)
    if rows.size == 0:
        return sh
    row0, col0 = offset
    corners = np.column_stack([cols + col0, rows + row0]).astype(np.float64)
    # The region each lone pixel sits in: the polygon containing its centre.
    regions, _ = _build(sh, np.ones(sh.values.size, bool), connectivity)
    # A tree of the points, queried with the regions: each region is prepared once.
    centre = shapely.points(corners + 0.5)
    owner_of, spot = shapely.STRtree(centre).query(regions, predicate="contains")
    if spot.size != rows.size:  # pragma: no cover - every lone pixel is inside one region
        raise AssertionError("a lone pixel lies in no region")
    owner = owner_of[np.argsort(spot)]
    n_rings, n_polys, k = sh.ring_poly.size, sh.values.size, rows.size
    square = (corners[:, None, :] + _SQUARE[None]).reshape(-1, 2)
    # Rings: the regions' own, then one hole per lone pixel, then the squares; sorted
    # by polygon (stable) so each hole follows its region's rings.
    ring_poly = np.concatenate([sh.ring_poly, owner, n_polys + np.arange(k)])
    order = np.argsort(ring_poly, kind="stable")
    ring_len = np.concatenate([np.bincount(sh.vert_ring, minlength=n_rings), np.full(2 * k, 5)])
    ring_start = np.concatenate([[0], np.cumsum(ring_len)[:-1]])
    xy_all = np.concatenate([sh.xy, square, square])
    lens = ring_len[order]
    first = np.repeat(ring_start[order] - np.r_[0, np.cumsum(lens)[:-1]], lens)
    xy = xy_all[first + np.arange(lens.sum())]
    # A lone pixel's hole and its square are the same ring: measured once.
    position = np.empty(order.size, np.int64)
    position[order] = np.arange(order.size)
    twin = np.full(order.size, -1, np.int64)
    twin[position[n_rings : n_rings + k]] = position[n_rings + k :]
    return _Shapes(
        xy,
        np.repeat(np.arange(order.size), lens),
        ring_poly[order],
        np.concatenate([sh.values, spot_values.astype(np.int64)]),
        sh.dicts,
        twin,
    )


def _gdal_shapes(
    key: np.ndarray, mask: np.ndarray, connectivity: int, keep_dicts: bool, offset: tuple[int, int]
) -> _Shapes:
    row0, col0 = offset
    shift = Affine.translation(col0, row0)  # global pixel coordinates
    with _gc_paused():
        found = list(
            rasterio.features.shapes(key, mask=mask, connectivity=connectivity, transform=shift)
        )
        polys = [geom["coordinates"] for geom, _ in found]
        rings = list(chain.from_iterable(polys))
        ring_len = np.fromiter(map(len, rings), np.int64, len(rings))
        n_vert = int(ring_len.sum())
        flat = chain.from_iterable(chain.from_iterable(rings))
        xy = np.fromiter(flat, np.float64, 2 * n_vert).reshape(-1, 2)
        rings_per_poly = np.fromiter(map(len, polys), np.int64, len(polys))
        values = np.fromiter((v for _, v in found), np.float64, len(found))
        dicts = [geom for geom, _ in found] if keep_dicts else []
        # Freed before the collector is back on, so it has no young tuples to scan.
        del found, polys, rings, flat
    vert_ring = np.repeat(np.arange(ring_len.size), ring_len)
    ring_poly = np.repeat(np.arange(rings_per_poly.size), rings_per_poly)
    return _Shapes(xy, vert_ring, ring_poly, values.astype(np.int64), dicts)


def _build(
    sh: _Shapes, select: np.ndarray, connectivity: int, georef: Georef | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Polygons ``select`` (boolean over polygons) of ``sh``; in CRS coordinates with ``georef``.

    Returns:
        ``(polygons, repaired)``: the polygons, and ``(n,) bool`` True where GDAL's
        rings (8-connected, touching themselves) were made valid.
    """
    rings = select[sh.ring_poly]
    verts = rings[sh.vert_ring]
    ring_ids = np.cumsum(rings) - 1
    poly_ids = np.cumsum(select) - 1
    xy = sh.xy[verts]
    if georef is not None and connectivity == 4:
        xy = pixel_xy_to_crs(xy, georef.transform)
    linear = shapely.linearrings(xy, indices=ring_ids[sh.vert_ring[verts]])
    polys = np.asarray(shapely.polygons(linear, indices=poly_ids[sh.ring_poly[rings]]))
    bad = np.zeros(polys.size, bool)
    if connectivity == 8 and polys.size:
        # Rings may touch themselves at a pixel corner; snap-rounding to the pixel
        # grid (exact: vertices are pixel corners) makes them valid, fastest.
        bad = ~shapely.is_valid(polys)
        polys[bad] = shapely.set_precision(polys[bad], 1.0)
        if georef is not None:
            polys = pixel_to_crs(polys, georef.transform)
    return polys, bad


def _polygon_bounds(sh: _Shapes) -> np.ndarray:
    """``(P, 4)`` (minx, miny, maxx, maxy) of each polygon (of its exterior ring)."""
    if sh.values.size == 0:
        return np.zeros((0, 4))
    starts = np.flatnonzero(np.r_[True, sh.vert_ring[1:] != sh.vert_ring[:-1]])
    exterior = np.r_[True, sh.ring_poly[1:] != sh.ring_poly[:-1]]
    s = starts[exterior]
    lo = np.minimum.reduceat(sh.xy, s, axis=0)
    hi = np.maximum.reduceat(sh.xy, s, axis=0)
    # reduceat over exterior starts spans holes too; holes lie inside, so no harm.
    return np.column_stack([lo, hi])


def _areas(
    crs_xy: np.ndarray, sh: _Shapes, georef: Georef
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per polygon: true area and perimeter, and the area and length of its holes alone."""
    n_rings = sh.ring_poly.size
    if sh.twin is None:
        area, length = ring_area_perimeter_m(crs_xy, sh.vert_ring, n_rings, georef.crs_wkt)
    else:
        own = sh.twin < 0
        renumber = np.cumsum(own) - 1
        verts = own[sh.vert_ring]
        area, length = np.zeros(n_rings), np.zeros(n_rings)
        area[own], length[own] = ring_area_perimeter_m(
            crs_xy[verts], renumber[sh.vert_ring[verts]], int(own.sum()), georef.crs_wkt
        )
        area[~own], length[~own] = area[sh.twin[~own]], length[sh.twin[~own]]
    hole = np.r_[False, sh.ring_poly[1:] == sh.ring_poly[:-1]][:n_rings]
    n = sh.values.size
    hole_area = np.bincount(sh.ring_poly[hole], weights=area[hole], minlength=n)
    hole_perim = np.bincount(sh.ring_poly[hole], weights=length[hole], minlength=n)
    signed = np.where(hole, -area, area)
    return (
        np.maximum(np.bincount(sh.ring_poly, weights=signed, minlength=n), 0.0),
        np.bincount(sh.ring_poly, weights=length, minlength=n),
        hole_area,
        hole_perim,
    )


def _keys(
    labels: np.ndarray, mask: np.ndarray, instances: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The image to polygonize, and how its values map to (class, instance) pairs.

    ``shapes`` reads uint8 and int32: class ids of any wider integer type are
    int32 here (values beyond int32 are refused before, by the caller).
    """
    if instances is None:
        return labels.astype(np.uint8 if labels.dtype == np.uint8 else np.int32, copy=False), None
    pair = (labels.astype(np.int64) << 32) | instances.astype(np.int64)
    uniq, inverse = np.unique(pair[mask], return_inverse=True)
    key = np.zeros(labels.shape, np.int32)
    key[mask] = inverse.astype(np.int32)
    return key, uniq


def _confidence_sums(
    dicts: list[Any], mask: np.ndarray, confidence: np.ndarray, offset: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per polygon: sum of confidence (0-1) and count of pixels that have one."""
    row0, col0 = offset
    n = len(dicts)
    if n == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    ids = rasterio.features.rasterize(
        zip(dicts, range(n), strict=True), out_shape=mask.shape, fill=-1, dtype="int32",
        transform=Affine.translation(col0, row0),
    )  # fmt: skip
    has = mask & (confidence != NODATA_LABEL) & (ids >= 0)
    total = np.bincount(ids[has], weights=confidence[has] / _CONF_SCALE, minlength=n)
    count = np.bincount(ids[has], minlength=n).astype(np.int64)
    return total, count


def _strips(
    seam: np.ndarray, sides: Sequence[str], window: tuple[int, int, int, int]
) -> dict[str, np.ndarray]:
    """For each side, which seam polygon (global pixel coordinates) holds each border pixel."""
    row0, col0, h, w = window
    centre = {"top": 0.5, "bottom": h - 0.5, "left": 0.5, "right": w - 0.5}
    xs, ys, owner = [], [], []
    for k, side in enumerate(sides):
        along = np.arange(w if side in ("top", "bottom") else h) + 0.5
        fixed = np.full_like(along, centre[side])
        xs.append(along if side in ("top", "bottom") else fixed)
        ys.append(fixed if side in ("top", "bottom") else along)
        owner.append(np.full(along.size, k))
    side_of = np.concatenate(owner) if owner else np.zeros(0, int)
    strip = np.full(side_of.size, -1, np.int64)
    if seam.size and side_of.size:
        x, y = np.concatenate(xs) + col0, np.concatenate(ys) + row0
        # Each polygon tests only the border pixel centres inside its bounding box.
        for k, (x0, y0, x1, y1) in enumerate(shapely.bounds(seam)):
            near = np.flatnonzero((x > x0) & (x < x1) & (y > y0) & (y < y1))
            if near.size:
                strip[near[shapely.contains_xy(seam[k], x[near], y[near])]] = k
    return {side: strip[side_of == k] for k, side in enumerate(sides)}


def polygonize_chunk(
    labels: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    instances: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    offset: tuple[int, int] = (0, 0),
    seams: Sequence[str] = (),
    connectivity: int = 4,
    keep: Sequence[int] | None = None,
    georef: Georef | None = None,
    nodata: int | None = NODATA_LABEL,
) -> ChunkPolygons:
    """Polygonize one chunk of a label raster.

    Args:
        labels: ``(h, w)`` integer class ids within int32; ``nodata`` is nodata.
        valid: ``(h, w) bool``, False where the raster has no data.
        instances: ``(h, w)`` instance ids (0 = none): pixels merge only with the
            same class and instance.
        confidence: ``(h, w) uint8`` confidence ``round(254 p)``, 255 = none.
        offset: ``(row, col)`` of the chunk's top-left pixel in the raster.
        seams: sides of the chunk that have a neighbouring chunk.
        connectivity: 4 or 8.
        keep: class ids to polygonize (None: all).
        georef: compute areas and perimeters here (in the worker), and return the
            final polygons in CRS coordinates.
        nodata: the label value that is no class (None: every value is a class id,
            e.g. a CORINE map's 111-523; ``valid`` masks the raster's nodata).
    """
    labels = np.asarray(labels)
    mask = np.ones(labels.shape, bool) if nodata is None else labels != nodata
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    if keep is not None:
        mask &= np.isin(labels, np.asarray(keep))
    key, pairs = _keys(labels, mask, instances)
    sh = _shapes(key, mask, connectivity, confidence is not None, offset)
    h, w = labels.shape
    row0, col0 = offset
    b = _polygon_bounds(sh)
    touch = {"top": b[:, 1] <= row0, "bottom": b[:, 3] >= row0 + h, "left": b[:, 0] <= col0,
             "right": b[:, 2] >= col0 + w}  # fmt: skip
    on_seam = np.zeros(sh.values.size, bool)
    for side in seams:
        on_seam |= touch[side]
    seam_geoms, repaired = _build(sh, on_seam, connectivity)
    strips = _strips(seam_geoms, seams, (row0, col0, h, w))
    conf_sum = conf_n = None
    if confidence is not None:
        conf_sum, conf_n = _confidence_sums(sh.dicts, mask, np.asarray(confidence), offset)
    if pairs is None:
        class_id, instance_id = sh.values, None
    else:
        class_id, instance_id = pairs[sh.values] >> 32, pairs[sh.values] & 0xFFFFFFFF
    found = Polygons(np.zeros(sh.values.size, object), class_id, instance_id, conf_sum, conf_n)
    if georef is not None:
        area, perim, hole_area, hole_perim = _areas(
            pixel_xy_to_crs(sh.xy, georef.transform), sh, georef
        )
        # A dissolve re-measures only a union's outline (geoseg.vector.seams); where
        # GDAL's rings touch themselves, its holes are those of the valid polygons.
        at = np.flatnonzero(on_seam)[repaired]
        hole_area[at], hole_perim[at] = hole_area_perimeter_m(
            seam_geoms[repaired], area[at], perim[at], georef
        )
        found = found.replace(
            area_m2=area, perim_m=perim, hole_area_m2=hole_area, hole_perim_m=hole_perim
        )
    # Normalized here, in parallel: merge_chunks normalizes only the dissolved ones.
    final_geoms = shapely.normalize(_build(sh, ~on_seam, connectivity, georef)[0])
    final = found.take(~on_seam).replace(geometry=final_geoms, hole_area_m2=None, hole_perim_m=None)
    seam = found.take(on_seam).replace(geometry=seam_geoms)
    return ChunkPolygons((row0, col0, h, w), final, seam, strips)
