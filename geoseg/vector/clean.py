"""Post-processing of a polygon coverage: minimum mapping unit, simplification, class filter.

All functions take and return :class:`~geoseg.vector.polygons.Polygons` in pixel
coordinates, where the coverage is exact (shared edges have identical vertices).

Minimum mapping unit (MMU): polygons smaller than the MMU are *merged*, never
deleted, so the total area is unchanged. Smallest first, each merges into the
neighbour with which it shares the longest boundary (ties: the larger
neighbour, then the first in order) and takes that neighbour's class; a merged
polygon still under the MMU merges again. Neighbours share an edge; a polygon
touching others only at corners, or none (an island in nodata), has no neighbour
and is kept as it is. Afterwards, polygons of the same class that now touch are
dissolved, so the result is what vectorizing the sieved raster would give.

Simplification keeps the coverage a coverage: ``shapely.coverage_simplify``
simplifies each shared edge once, so neighbours keep sharing it (no gaps, no
slivers, no overlaps).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.vector.polygons import Polygons
from geoseg.vector.rings import remove_collinear_vertices

__all__ = ["filter_classes", "merge_small_polygons", "simplify_coverage"]


def _unit_edges(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel edge on the polygons' rings: ``(E,)`` int64 keys and owning polygon.

    Vertices are pixel corners and edges axis-aligned, so each ring splits into
    unit edges; a key encodes an edge's position and direction (not its sense),
    so an edge shared by two polygons has one key, owned twice.
    """
    parts, part_geom = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    xy, vert_ring = shapely.get_coordinates(rings, return_index=True)
    i = np.flatnonzero(vert_ring[1:] == vert_ring[:-1])
    a, b = np.rint(xy[i]).astype(np.int64), np.rint(xy[i + 1]).astype(np.int64)
    steps = np.abs(b - a).sum(axis=1)
    start = np.minimum(a, b)
    vertical = (a[:, 0] == b[:, 0]).astype(np.int64)
    src = np.repeat(np.arange(i.size), steps)
    k = np.arange(src.size) - np.repeat(np.cumsum(steps) - steps, steps)
    x = start[src, 0] + k * (1 - vertical[src])
    y = start[src, 1] + k * vertical[src]
    keys = ((x + 1) << 33) | ((y + 1) << 1) | vertical[src]
    return keys, part_geom[ring_part[vert_ring[i[src]]]]


def _shared_boundaries(geoms: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` (i in ``index``) of polygons sharing edges, and the length in px."""
    keys, owner = _unit_edges(geoms)
    order = np.argsort(keys, kind="stable")
    keys, owner = keys[order], owner[order]
    twice = np.flatnonzero(keys[1:] == keys[:-1])
    pair = np.column_stack([owner[twice], owner[twice + 1]])
    pair = pair[pair[:, 0] != pair[:, 1]]
    pair = np.concatenate([pair, pair[:, ::-1]])
    pair = pair[np.isin(pair[:, 0], index)]
    if pair.size == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    uniq, count = np.unique(pair, axis=0, return_counts=True)
    return uniq, count.astype(np.float64)


def _merge_targets(
    n: int, area: np.ndarray, pairs: np.ndarray, length: np.ndarray, min_area: float
) -> np.ndarray:
    """Union-find parent of each polygon after merging small ones (see module doc)."""
    adj: dict[int, dict[int, float]] = {}
    for (i, j), shared in zip(pairs.tolist(), length.tolist(), strict=True):
        adj.setdefault(i, {})[j] = shared
        adj.setdefault(j, {})[i] = shared
    parent = np.arange(n)
    area = area.astype(np.float64).copy()
    heap = [(area[i], i) for i in np.flatnonzero(area < min_area).tolist()]
    heapq.heapify(heap)
    while heap:
        a, i = heapq.heappop(heap)
        if parent[i] != i or a != area[i] or not adj.get(i):
            continue
        nbrs = adj.pop(i)
        target = max(nbrs, key=lambda k: (nbrs[k], area[k], -k))
        parent[i] = target
        area[target] += area[i]
        into = adj.setdefault(target, {})
        into.pop(i, None)
        for k, shared in nbrs.items():
            adj[k].pop(i, None)
            if k != target:
                into[k] = into.get(k, 0.0) + shared
                adj[k][target] = adj[k].get(target, 0.0) + shared
        if area[target] < min_area:
            heapq.heappush(heap, (area[target], target))
    # Path compression: every polygon points at its group's surviving root.
    while True:
        up = parent[parent]
        if np.array_equal(up, parent):
            return parent
        parent = up


def _groups(parent: np.ndarray) -> np.ndarray:
    """Dense group number per element from a root array."""
    return np.unique(parent, return_inverse=True)[1]


def _union(geoms: np.ndarray) -> object:
    """Union of pixel polygons that form a coverage (a vertex at every pixel corner first)."""
    noded = shapely.transform(shapely.segmentize(geoms, 1.0), np.rint)
    try:
        return shapely.coverage_union_all(noded)
    except shapely.errors.GEOSException:  # pragma: no cover - a coverage by construction
        return shapely.union_all(geoms)


def _union_groups(polygons: Polygons, group: np.ndarray, root: np.ndarray) -> Polygons:
    """One polygon per group: union of the members, values of the group's root polygon."""
    n = int(group.max()) + 1 if group.size else 0
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    sizes = np.diff(np.r_[starts, order.size])
    geometry = polygons.geometry[order[starts]].copy()
    several = np.flatnonzero(sizes > 1)
    for g in several:
        geometry[g] = _union(polygons.geometry[order[starts[g] : starts[g] + sizes[g]]])
    if several.size:
        geometry[several] = remove_collinear_vertices(geometry[several])

    def total(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.bincount(group, weights=a, minlength=n)

    conf_n = total(polygons.conf_n)
    return Polygons(
        geometry,
        polygons.class_id[root],
        None if polygons.instance_id is None else polygons.instance_id[root],
        total(polygons.conf_sum),
        None if conf_n is None else np.rint(conf_n).astype(np.int64),
    )


def merge_small_polygons(
    polygons: Polygons, area_m2: np.ndarray, min_area_m2: float
) -> tuple[Polygons, np.ndarray]:
    """Merge polygons under ``min_area_m2`` into neighbours (see module doc).

    Args:
        polygons: a coverage in pixel coordinates.
        area_m2: ``(N,)`` true area of each polygon.
        min_area_m2: the minimum mapping unit.

    Returns:
        The merged coverage (sorted) and its ``(M,)`` areas (sums of the members).
    """
    small = np.flatnonzero(area_m2 < min_area_m2)
    if small.size == 0 or len(polygons) < 2:
        return polygons, area_m2
    pairs, length = _shared_boundaries(polygons.geometry, small)
    parent = _merge_targets(len(polygons), area_m2, pairs, length, min_area_m2)
    group = _groups(parent)
    roots = np.unique(parent)
    merged = _union_groups(polygons, group, roots)
    areas = np.bincount(group, weights=area_m2)
    # Polygons of one class that now touch become one (as for the sieved raster).
    changed = np.flatnonzero(np.bincount(group) > 1)
    if changed.size:
        merged, areas = _dissolve_same_class(merged, areas, changed)
    out_order = _sort_order(merged)
    return merged.take(out_order), areas[out_order]


def _dissolve_same_class(
    polygons: Polygons, areas: np.ndarray, index: np.ndarray
) -> tuple[Polygons, np.ndarray]:
    pairs, _ = _shared_boundaries(polygons.geometry, index)
    keys = polygons.keys()
    pairs = pairs[(keys[pairs[:, 0]] == keys[pairs[:, 1]]).all(axis=1)]
    if pairs.size == 0:
        return polygons, areas
    n = len(polygons)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    first = np.unique(group, return_index=True)[1]
    return _union_groups(polygons, group, first), np.bincount(group, weights=areas)


def _sort_order(polygons: Polygons) -> np.ndarray:
    b = shapely.bounds(polygons.geometry).reshape(-1, 4)
    k = polygons.keys()
    return np.lexsort((b[:, 2], b[:, 3], b[:, 0], b[:, 1], k[:, 1], k[:, 0]))


def simplify_coverage(
    polygons: Polygons,
    tolerance_px: float,
    min_area_m2: float = 0.0,
    area_m2: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Polygons:
    """Simplify the coverage with ``shapely.coverage_simplify``; shared edges stay shared.

    With a minimum mapping unit, a polygon that simplifying shrinks under it is
    merged (:func:`merge_small_polygons`) in the pixel-grid coverage, which is then
    simplified again, until none is left with a neighbour to merge into: merging
    simplified polygons would move their edges off their neighbours'.

    Args:
        polygons: a coverage in pixel coordinates (integer vertices).
        tolerance_px: simplification tolerance in pixels (Visvalingam-Whyatt:
            vertices whose triangle is smaller than about ``tolerance²`` go).
        min_area_m2: the minimum mapping unit (0: none).
        area_m2: true areas of ``(N,)`` polygons in pixel coordinates; needed with
            a ``min_area_m2``.
    """
    if tolerance_px <= 0 or len(polygons) == 0:
        return polygons
    simple = _simplify(polygons, tolerance_px)
    while min_area_m2 > 0 and area_m2 is not None:
        area = area_m2(simple.geometry)
        small = area < min_area_m2
        if not small.any():
            break
        # Only those simplifying shrank count as small; the rest cannot merge.
        grid_area = np.where(small, area, np.maximum(area_m2(polygons.geometry), min_area_m2))
        merged, _ = merge_small_polygons(polygons, grid_area, min_area_m2)
        if len(merged) == len(polygons):  # islands in nodata: nothing to merge into
            break
        polygons, simple = merged, _simplify(merged, tolerance_px)
    return simple


def _simplify(polygons: Polygons, tolerance_px: float) -> Polygons:
    # Every pixel corner on an edge becomes a vertex, so neighbours' shared edges
    # have the same vertices (a T-junction otherwise leaves a vertex on one side only).
    dense = shapely.transform(shapely.segmentize(polygons.geometry, 1.0), np.rint)
    simple = np.asarray(shapely.coverage_simplify(dense, tolerance_px, simplify_boundary=True))
    bad = ~shapely.is_valid(simple)
    if bad.any():
        simple[bad] = shapely.make_valid(simple[bad], method="structure")
    return polygons.replace(geometry=simple)


def filter_classes(polygons: Polygons, keep: Sequence[int] | None) -> Polygons:
    """Only the polygons whose class is in ``keep`` (None: all)."""
    if keep is None:
        return polygons
    return polygons.take(np.isin(polygons.class_id, np.asarray(list(keep))))
