"""Dissolve the polygons of neighbouring chunks across their seams.

Strips on both sides of each seam give the pairs of seam polygons whose pixels
are neighbours across it (side by side for 4-connectivity, also diagonally for
8); connected groups of pairs with the same class (and instance) are dissolved
into one polygon each: their filled outlines by a coverage union (after a vertex
is put at every pixel corner on the seams), then the parts' holes are put back.
Dissolved polygons lose the vertices the seams left on straight edges, so every
polygon has exactly the vertices of a whole-raster ``shapes`` call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.areas import polygon_area_perimeter_m
from geoseg.vector.attributes import Georef, pixel_to_crs
from geoseg.vector.chunk import ChunkPolygons
from geoseg.vector.polygons import Polygons
from geoseg.vector.rings import insert_vertices_on_lines, remove_collinear_vertices

__all__ = ["iter_merged", "merge_chunks", "merge_seams"]


def _seam_pairs(a: np.ndarray, b: np.ndarray, connectivity: int) -> np.ndarray:
    """``(P, 2)`` pairs of ids facing each other across a seam (strips ``a`` | ``b``)."""
    out = [np.column_stack([a, b])]
    if connectivity == 8:
        out += [np.column_stack([a[:-1], b[1:]]), np.column_stack([a[1:], b[:-1]])]
    pairs = np.concatenate(out)
    return pairs[(pairs >= 0).all(axis=1)]


def _dissolve(geoms: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[Any, Any]:
    """Union of seam parts that form one region (exact pixel-corner coordinates).

    Holes of a part never reach its chunk's border, so they stay holes of the
    union unchanged: only the filled outlines are dissolved (a coverage union,
    linear in their size, after adding a vertex at every pixel corner on the
    seams), then the parts' holes are put back.

    Returns:
        ``(union, outline)``: the union with every hole, and the dissolved
        outlines alone (with only the holes the union itself encloses), which is
        what the caller measures again; the parts' own holes keep their areas.
    """
    parts = shapely.get_parts(geoms)
    outlines = insert_vertices_on_lines(shapely.polygons(shapely.get_exterior_ring(parts)), xs, ys)
    try:
        union = shapely.coverage_union_all(outlines)
    except shapely.errors.GEOSException:  # pragma: no cover - outlines always form a coverage
        union = remove_collinear_vertices(np.array([shapely.union_all(geoms)]))[0]
        return union, union
    union = remove_collinear_vertices(np.array([union]))[0]
    if shapely.get_type_id(union) == 3:  # one polygon (always with 4-connectivity)
        return _with_holes(union, parts), union
    return _with_holes_multi(union, parts), union


def _with_holes(union: Any, parts: np.ndarray) -> Any:
    """``union`` (a Polygon) with the holes of ``parts`` added, built from flat arrays.

    No Python object per ring: regions with hundreds of thousands of speckle holes
    are rebuilt in one call.
    """
    _, u_xy, (u_ring, _) = shapely.to_ragged_array([union])
    _, xy, (ring_off, poly_off) = shapely.to_ragged_array(parts)
    hole = np.ones(ring_off.size - 1, bool)
    hole[poly_off[:-1]] = False
    if not hole.any():
        return union
    starts, ends = ring_off[:-1][hole], ring_off[1:][hole]
    size = ends - starts
    idx = np.repeat(starts - np.r_[0, np.cumsum(size)[:-1]], size) + np.arange(size.sum())
    coords = np.concatenate([u_xy, xy[idx]])
    rings = np.concatenate([u_ring, u_ring[-1] + np.cumsum(size)]).astype(np.int64)
    return shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, coords, (rings, np.array([0, rings.size - 1]))
    )[0]


def _with_holes_multi(union: Any, parts: np.ndarray) -> Any:
    """As :func:`_with_holes` for a MultiPolygon union (8-connected corner contacts)."""
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    is_hole = np.r_[False, ring_part[1:] == ring_part[:-1]]
    holes, hole_part = rings[is_hole], ring_part[is_hole]
    if holes.size == 0:
        return union
    pieces = shapely.get_parts(union)
    owner = shapely.STRtree(pieces).query(_pixel_inside(parts), predicate="within")
    piece_of_part = np.zeros(parts.size, np.int64)
    piece_of_part[owner[0]] = owner[1]
    rebuilt = []
    for k, piece in enumerate(pieces):
        extra = holes[piece_of_part[hole_part] == k]
        rings_k = np.concatenate([shapely.get_rings(piece), extra])
        rebuilt.append(shapely.polygons(rings_k, indices=np.zeros(rings_k.size, np.intp))[0])
    return shapely.multipolygons(rebuilt)


def _pixel_inside(parts: np.ndarray) -> np.ndarray:
    """A pixel centre inside each pixel polygon: one of the four around its first vertex."""
    corner = shapely.get_coordinates(shapely.get_point(shapely.get_exterior_ring(parts), 0))
    offsets = np.array([[0.5, 0.5], [-0.5, 0.5], [0.5, -0.5], [-0.5, -0.5]])
    cand = corner[:, None, :] + offsets[None, :, :]
    inside = shapely.contains_xy(parts[:, None], cand[..., 0], cand[..., 1])
    pick = cand[np.arange(parts.size), np.argmax(inside, axis=1)]
    return np.asarray(shapely.points(pick))


def _seam_groups(
    chunks: dict[tuple[int, int], ChunkPolygons], seam: Polygons, connectivity: int
) -> np.ndarray:
    """Group number of each seam part: parts that meet across seams with equal keys."""
    nby = 1 + max(i for i, _ in chunks)
    nbx = 1 + max(j for _, j in chunks)
    base, n = {}, 0
    for ij in sorted(chunks):
        base[ij] = n
        n += len(chunks[ij].seam)

    def strip(ij: tuple[int, int], side: str) -> np.ndarray:
        s = chunks[ij].strips[side]
        return np.where(s >= 0, s + base[ij], -1)

    pairs = [np.zeros((0, 2), np.int64)]
    for j in range(1, nbx):
        left = np.concatenate([strip((i, j - 1), "right") for i in range(nby)])
        right = np.concatenate([strip((i, j), "left") for i in range(nby)])
        pairs.append(_seam_pairs(left, right, connectivity))
    for i in range(1, nby):
        top = np.concatenate([strip((i - 1, j), "bottom") for j in range(nbx)])
        bottom = np.concatenate([strip((i, j), "top") for j in range(nbx)])
        pairs.append(_seam_pairs(top, bottom, connectivity))
    p = np.concatenate(pairs)
    keys = seam.keys()
    p = p[(keys[p[:, 0]] == keys[p[:, 1]]).all(axis=1)]
    graph = coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(n, n))
    return np.asarray(connected_components(graph, directed=False)[1])


#: Seam parts dissolved per batch of :func:`iter_merged` (memory: one batch of unions).
_PARTS_PER_BATCH = 4096


def iter_merged(
    chunks: dict[tuple[int, int], ChunkPolygons],
    connectivity: int = 4,
    georef: Georef | None = None,
) -> Iterator[Polygons]:
    """Dissolve the seam polygons of all chunks, in batches: one polygon per region.

    Consumes ``chunks`` (the dict is emptied: each batch's parts are let go once
    dissolved, so memory falls as the merge goes on).

    Args:
        chunks: :class:`ChunkPolygons` by chunk ``(row, col)``, every chunk of a grid
            (their ``final`` polygons are not used).
        connectivity: the connectivity the chunks were polygonized with.
        georef: the :class:`Georef` the chunks were polygonized with, if any; the
            result is then in CRS coordinates with areas and perimeters.

    Yields:
        Dissolved polygons, normalized (same ring starts and orientation whatever
        the chunking), in group order.
    """
    if not chunks:
        return
    order = sorted(chunks)
    seam = Polygons.concat([chunks[ij].seam for ij in order])
    lines = (
        np.unique([chunks[ij].window[1] for ij in order if ij[1] > 0]),
        np.unique([chunks[ij].window[0] for ij in order if ij[0] > 0]),
    )
    group = _seam_groups(chunks, seam, connectivity)
    chunks.clear()
    for merged in _merge_groups(seam, group, lines, georef):
        yield merged.replace(geometry=shapely.normalize(merged.geometry))


def merge_seams(
    chunks: dict[tuple[int, int], ChunkPolygons],
    connectivity: int = 4,
    georef: Georef | None = None,
) -> Polygons:
    """:func:`iter_merged` as one :class:`Polygons` (``chunks`` is consumed)."""
    batches = list(iter_merged(chunks, connectivity, georef))
    return Polygons.concat(batches) if batches else Polygons.empty()


def merge_chunks(
    chunks: dict[tuple[int, int], ChunkPolygons],
    connectivity: int = 4,
    georef: Georef | None = None,
) -> Polygons:
    """Dissolve polygons across seams; all polygons of the raster in a deterministic order.

    Args:
        chunks: :class:`ChunkPolygons` by chunk ``(row, col)``, every chunk of a grid
            (consumed: the dict is emptied).
        connectivity: the connectivity the chunks were polygonized with.
        georef: the :class:`Georef` the chunks were polygonized with, if any; the
            result is then in CRS coordinates with areas and perimeters.
    """
    if not chunks:
        return Polygons.empty()
    # Final polygons come normalized from the chunks.
    finals = [chunks[ij].final for ij in sorted(chunks)]
    merged = merge_seams(chunks, connectivity, georef)
    parts = [p.replace(hole_area_m2=None, hole_perim_m=None) for p in (*finals, merged)]
    if len(merged) == 0:
        parts = parts[:-1] or [merged]
    return Polygons.concat(parts).sorted()


def _merge_groups(
    seam: Polygons,
    group: np.ndarray,
    lines: tuple[np.ndarray, np.ndarray],
    georef: Georef | None,
) -> Iterator[Polygons]:
    """One polygon per group of seam parts (unions where a group has several), in batches.

    Each batch's parts are dropped from ``seam.geometry`` once dissolved.
    """
    if len(seam) == 0:
        return
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    sizes = np.diff(np.r_[starts, order.size])
    first = order[starts]

    def total(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.bincount(group, weights=a)[group[first]]

    conf_sum, conf_n = total(seam.conf_sum), total(seam.conf_n)
    holes_area, holes_perim = total(seam.hole_area_m2), total(seam.hole_perim_m)
    cum = np.cumsum(sizes)
    lo = 0
    while lo < sizes.size:
        hi = max(lo + 1, int(np.searchsorted(cum, cum[lo] - sizes[lo] + _PARTS_PER_BATCH)))
        ks = np.arange(lo, hi)
        geometry = seam.shapes(first[ks])
        several = np.flatnonzero(sizes[ks] > 1)
        outlines = np.empty(several.size, dtype=object)
        for n, k in enumerate(several):
            members = order[starts[lo + k] : starts[lo + k] + sizes[lo + k]]
            geometry[k], outlines[n] = _dissolve(seam.shapes(members), *lines)
        seam.geometry[order[starts[lo] : starts[hi - 1] + sizes[hi - 1]]] = None
        out = Polygons(
            geometry,
            seam.class_id[first[ks]],
            None if seam.instance_id is None else seam.instance_id[first[ks]],
            None if conf_sum is None else conf_sum[ks],
            None if conf_n is None else np.rint(conf_n[ks]).astype(np.int64),
        )
        lo = hi
        if georef is None:
            yield out
            continue
        # A union is measured again from its outline's vertices (not as the sum over its
        # parts, whose densified seam edges differ with the chunking), plus its parts'
        # holes, measured in the workers: the same region gets the same area and
        # perimeter whatever the chunk size.
        area, perim = (
            np.zeros(len(out)) if c is None else c[first[ks]] for c in (seam.area_m2, seam.perim_m)
        )
        if several.size:
            o_area, o_perim = polygon_area_perimeter_m(
                pixel_to_crs(outlines, georef.transform), georef.crs_wkt
            )
            area[several] = o_area - (0.0 if holes_area is None else holes_area[ks][several])
            perim[several] = o_perim + (0.0 if holes_perim is None else holes_perim[ks][several])
        yield out.replace(geometry=pixel_to_crs(geometry, georef.transform), area_m2=area,
                          perim_m=perim)  # fmt: skip
