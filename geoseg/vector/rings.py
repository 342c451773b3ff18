"""Vertex-level edits of (multi)polygons, vectorized over coordinate arrays."""

from __future__ import annotations

import numpy as np
import shapely

__all__ = ["insert_vertices_on_lines", "nested_parts", "remove_collinear_vertices"]


def _rebuild(
    xy: np.ndarray, vert_ring: np.ndarray, ring_part: np.ndarray, part_geom: np.ndarray, n: int
) -> np.ndarray:
    """Polygons (or MultiPolygons where a geometry has several parts) from flat arrays."""
    rings = shapely.linearrings(xy, indices=vert_ring)
    parts = shapely.polygons(rings, indices=ring_part)
    multi = shapely.multipolygons(parts, indices=part_geom)
    counts = np.bincount(part_geom, minlength=n)
    out = np.asarray(multi, dtype=object)
    single = counts == 1
    out[single] = shapely.get_geometry(multi[single], 0)
    return out


def remove_collinear_vertices(geoms: np.ndarray) -> np.ndarray:
    """Drop ring vertices that lie on a straight line between their neighbours.

    For rectilinear pixel polygons this leaves exactly the corners, the form
    ``rasterio.features.shapes`` writes, so polygons dissolved across chunk
    seams get the same vertices as polygons from a single chunk.

    Args:
        geoms: ``(N,)`` non-empty Polygons/MultiPolygons.

    Returns:
        ``(N,)`` the same shapes with fewer vertices (Polygons stay Polygons).
    """
    geoms = np.asarray(geoms, dtype=object)
    parts, part_geom = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    xy, vert_ring = shapely.get_coordinates(rings, return_index=True)
    closing = np.r_[vert_ring[1:] != vert_ring[:-1], True]
    xy, vert_ring = xy[~closing], vert_ring[~closing]
    starts = np.flatnonzero(np.r_[True, vert_ring[1:] != vert_ring[:-1]])
    ends = np.r_[starts[1:], vert_ring.size] - 1
    ring_no = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, vert_ring.size]))
    i = np.arange(vert_ring.size)
    prev = np.where(i == starts[ring_no], ends[ring_no], i - 1)
    nxt = np.where(i == ends[ring_no], starts[ring_no], i + 1)
    d1, d2 = xy - xy[prev], xy[nxt] - xy
    turn = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    keep = turn != 0
    return _rebuild(xy[keep], vert_ring[keep], ring_part, part_geom, geoms.size)


def insert_vertices_on_lines(geoms: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Add a vertex at every integer point of edges lying on the lines ``x in xs``/``y in ys``.

    Pixel polygons cut by chunk seams meet along those lines; with a vertex at
    every pixel corner there, the parts form a properly noded coverage that
    ``shapely.coverage_union_all`` can dissolve (in linear time). Other edges
    are left alone.

    Args:
        geoms: ``(N,)`` Polygons/MultiPolygons with integer (pixel corner) vertices.
        xs: x of vertical lines (seam columns); ys: y of horizontal lines.
    """
    geoms = np.asarray(geoms, dtype=object)
    parts, part_geom = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    xy, vert_ring = shapely.get_coordinates(rings, return_index=True)
    same_ring = np.r_[vert_ring[1:] == vert_ring[:-1], False]
    nxt = np.minimum(np.arange(vert_ring.size) + 1, vert_ring.size - 1)
    d = xy[nxt] - xy
    on_x = same_ring & (d[:, 0] == 0) & np.isin(xy[:, 0], xs)
    on_y = same_ring & (d[:, 1] == 0) & np.isin(xy[:, 1], ys)
    steps = np.where(on_x, np.abs(d[:, 1]), 0) + np.where(on_y, np.abs(d[:, 0]), 0)
    count = np.maximum(steps.astype(np.int64), 1)
    src = np.repeat(np.arange(vert_ring.size), count)
    k = np.arange(src.size) - np.repeat(np.cumsum(count) - count, count)
    unit = np.sign(d) * (steps > 0)[:, None]
    out = xy[src] + k[:, None] * unit[src]
    return _rebuild(out, vert_ring[src], ring_part, part_geom, geoms.size)


def nested_parts(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parts of (multi)polygons, and which lie in a hole of another part of the same one.

    An 8-connected pixel region made valid is a MultiPolygon whose parts touch at
    pixel corners; a part can sit in a hole of another, touching it at a corner.
    The filled outlines of such parts overlap, so they are no coverage.

    Args:
        geoms: ``(N,)`` Polygons/MultiPolygons whose parts have disjoint interiors.

    Returns:
        ``(parts, part_geom, nested)``: ``(P,)`` the parts, the geometry each comes
        from, and ``(P,) bool`` True for a part inside another part's outline.
    """
    geoms = np.asarray(geoms, dtype=object)
    parts, part_geom = shapely.get_parts(geoms, return_index=True)
    nested = np.zeros(parts.size, bool)
    multi = np.flatnonzero(np.bincount(part_geom, minlength=geoms.size)[part_geom] > 1)
    if multi.size == 0:
        return parts, part_geom, nested
    outlines = shapely.polygons(shapely.get_exterior_ring(parts[multi]))
    # Parts' interiors are disjoint: a point inside one part that lies in another's
    # filled outline lies in a hole of it.
    inside = shapely.point_on_surface(parts[multi])
    pt, outline = shapely.STRtree(outlines).query(inside, predicate="within")
    hit = (pt != outline) & (part_geom[multi[pt]] == part_geom[multi[outline]])
    nested[multi[pt[hit]]] = True
    return parts, part_geom, nested
