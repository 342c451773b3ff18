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

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.areas import polygon_area_perimeter_m
from geoseg.vector.attributes import Georef, pixel_to_crs
from geoseg.vector.chunk import ChunkPolygons
from geoseg.vector.polygons import Polygons
from geoseg.vector.rings import (
    insert_vertices_on_lines,
    nested_parts,
    remove_collinear_vertices,
)

__all__ = ["SeamMerger", "iter_merged", "merge_chunks", "merge_seams"]


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
    seams), then the parts' holes are put back. With 8-connectivity a part may
    sit in a hole of another part of its chunk's polygon, touching it at a corner
    (:func:`nested_parts`); such a part never reaches a seam either: it is left
    out of the union (its outline would overlap its host's) and added unchanged.

    Returns:
        ``(union, outline)``: the union with every hole, and the dissolved outlines
        of the parts that are not nested (with only the holes the union itself
        encloses), which is what the caller measures again; the rest (the parts'
        holes, nested parts) keeps the measure of its chunk (see
        :func:`geoseg.vector.chunk.polygonize_chunk`).
    """
    parts, _, nested = nested_parts(geoms)
    outer = parts[~nested]
    outlines = insert_vertices_on_lines(shapely.polygons(shapely.get_exterior_ring(outer)), xs, ys)
    try:
        union = shapely.coverage_union_all(outlines)
    except shapely.errors.GEOSException:  # pragma: no cover - outlines always form a coverage
        union = remove_collinear_vertices(np.array([shapely.union_all(geoms)]))[0]
        return union, union
    union = remove_collinear_vertices(np.array([union]))[0]
    if shapely.get_type_id(union) == 3 and not nested.any():  # always so with 4-connectivity
        return _with_holes(union, outer), union
    return _with_holes_multi(union, outer, parts[nested]), union


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


def _with_holes_multi(union: Any, parts: np.ndarray, nested: np.ndarray) -> Any:
    """As :func:`_with_holes` for 8-connected corner contacts: a MultiPolygon union,
    or parts ``nested`` in holes (added as they are)."""
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    is_hole = np.r_[False, ring_part[1:] == ring_part[:-1]]
    holes, hole_part = rings[is_hole], ring_part[is_hole]
    pieces = shapely.get_parts(union)
    if holes.size == 0:
        return shapely.multipolygons(np.concatenate([pieces, nested]))
    owner = shapely.STRtree(pieces).query(_pixel_inside(parts), predicate="within")
    piece_of_part = np.zeros(parts.size, np.int64)
    piece_of_part[owner[0]] = owner[1]
    rebuilt = []
    for k, piece in enumerate(pieces):
        extra = holes[piece_of_part[hole_part] == k]
        rings_k = np.concatenate([shapely.get_rings(piece), extra])
        rebuilt.append(shapely.polygons(rings_k, indices=np.zeros(rings_k.size, np.intp))[0])
    return shapely.multipolygons(np.concatenate([np.array(rebuilt, dtype=object), nested]))


def _pixel_inside(parts: np.ndarray) -> np.ndarray:
    """A pixel centre inside each pixel polygon: one of the four around its first vertex."""
    corner = shapely.get_coordinates(shapely.get_point(shapely.get_exterior_ring(parts), 0))
    offsets = np.array([[0.5, 0.5], [-0.5, 0.5], [0.5, -0.5], [-0.5, -0.5]])
    cand = corner[:, None, :] + offsets[None, :, :]
    inside = shapely.contains_xy(parts[:, None], cand[..., 0], cand[..., 1])
    pick = cand[np.arange(parts.size), np.argmax(inside, axis=1)]
    return np.asarray(shapely.points(pick))


class SeamMerger:
    """Dissolves seam polygons row of chunks by row, as the rows come in.

    Feed every chunk once, in row-major order (:meth:`add`). When a row of chunks
    is complete, its seam parts are joined with their neighbours (to the left,
    and across the seam above, diagonals included with 8-connectivity), and every
    group of parts that reaches no chunk of that row can grow no more: it is
    dissolved and yielded at once, and its parts are let go. So the merge runs
    while later chunks are still being polygonized, and memory holds about two
    rows of seam parts (plus regions still growing), not the scene's.
    :meth:`finish` yields the rest.

    The groups, and each union, are the same for any chunking; unions come out
    in a deterministic order (by their first part, in chunk order).

    Args:
        row_starts: first pixel row of each chunk row (``(n_rows,)``).
        col_starts: first pixel column of each chunk column (``(n_cols,)``).
        connectivity: the connectivity the chunks were polygonized with.
        georef: the :class:`Georef` the chunks were polygonized with, if any; the
            unions are then in CRS coordinates with areas and perimeters.
    """

    def __init__(
        self,
        row_starts: Sequence[int],
        col_starts: Sequence[int],
        connectivity: int = 4,
        georef: Georef | None = None,
    ) -> None:
        self._ncols = len(col_starts)
        self._nrows = len(row_starts)
        self._lines = (np.asarray(col_starts[1:]), np.asarray(row_starts[1:]))
        self._connectivity = connectivity
        self._georef = georef
        self._active: Polygons | None = None  # seam parts of open groups, in chunk order
        self._part_row = np.zeros(0, np.int64)
        self._pairs = np.zeros((0, 2), np.int64)
        self._row: list[ChunkPolygons] = []
        self._bottoms: list[np.ndarray] = []  # bottom strips of the last row (active ids)
        self._next = (0, 0)

    def add(self, ij: tuple[int, int], chunk: ChunkPolygons) -> Iterator[Polygons]:
        """Take chunk ``ij`` (row-major order); yields the unions it completes, in batches."""
        if ij != self._next:
            raise ValueError(f"chunks must come in row-major order: got {ij}, not {self._next}")
        self._row.append(chunk)
        i, j = ij
        self._next = (i, j + 1) if j + 1 < self._ncols else (i + 1, 0)
        if j + 1 == self._ncols:
            yield from self._row_done(i)

    def finish(self) -> Iterator[Polygons]:
        """Yield the unions still open once every chunk is in."""
        if self._next != (self._nrows, 0):
            raise ValueError(f"chunk {self._next} never came")
        if self._active is not None and len(self._active):
            yield from self._dissolve_done(np.ones(len(self._active), bool))
        self._active = None

    def _row_done(self, i: int) -> Iterator[Polygons]:
        row, self._row = self._row, []
        base = 0 if self._active is None else len(self._active)
        offsets = base + np.cumsum([0] + [len(c.seam) for c in row[:-1]])

        def strip(k: int, side: str) -> np.ndarray:
            s = row[k].strips.get(side)
            if s is None:
                return np.zeros(0, np.int64)
            return np.where(s >= 0, s + offsets[k], -1)

        pairs = [self._pairs]
        for k in range(1, len(row)):
            pairs.append(_seam_pairs(strip(k - 1, "right"), strip(k, "left"), self._connectivity))
        if i > 0:
            top = np.concatenate(self._bottoms)
            bottom = np.concatenate([strip(k, "top") for k in range(len(row))])
            pairs.append(_seam_pairs(top, bottom, self._connectivity))
        self._bottoms = [strip(k, "bottom") for k in range(len(row))]
        new = Polygons.concat([c.seam for c in row])
        self._active = new if self._active is None else Polygons.concat([self._active, new])
        self._part_row = np.r_[self._part_row, np.full(len(new), i)]
        p = np.concatenate(pairs)
        keys = self._active.keys()
        self._pairs = np.unique(p[(keys[p[:, 0]] == keys[p[:, 1]]).all(axis=1)], axis=0)
        if i + 1 < self._nrows and len(self._active):
            group = self._groups()
            in_row = np.zeros(group.max() + 1, bool)
            in_row[group[self._part_row == i]] = True
            done = ~in_row[group]
            if done.any():
                yield from self._dissolve_done(done)

    def _groups(self) -> np.ndarray:
        """Group number of each open part: parts that meet across seams with equal keys."""
        n = 0 if self._active is None else len(self._active)
        p = self._pairs
        graph = coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(n, n))
        return np.asarray(connected_components(graph, directed=False)[1])

    def _dissolve_done(self, done: np.ndarray) -> Iterator[Polygons]:
        """Dissolve the groups of the parts in ``done`` (whole groups) and let them go."""
        assert self._active is not None
        group = self._groups()
        parts = self._active.take(done)
        # Number groups by their first part: a deterministic order for any scheduler.
        first = np.full(group.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(first, group, np.arange(group.size))
        rank = np.argsort(np.argsort(first))
        keep = ~done
        index = np.cumsum(keep) - 1
        self._pairs = index[self._pairs[keep[self._pairs[:, 0]]]]
        self._bottoms = [np.where(b >= 0, index[np.maximum(b, 0)], -1) for b in self._bottoms]
        self._active = self._active.take(keep)
        self._part_row = self._part_row[keep]
        for merged in _merge_groups(parts, rank[group[done]], self._lines, self._georef):
            yield merged.replace(geometry=shapely.normalize(merged.geometry))


#: Seam parts dissolved per batch of :func:`iter_merged` (memory: one batch of unions).
_PARTS_PER_BATCH = 4096


def iter_merged(
    chunks: dict[tuple[int, int], ChunkPolygons],
    connectivity: int = 4,
    georef: Georef | None = None,
) -> Iterator[Polygons]:
    """Dissolve the seam polygons of all chunks (a :class:`SeamMerger` fed in order).

    Args:
        chunks: :class:`ChunkPolygons` by chunk ``(row, col)``, every chunk of a grid
            (their ``final`` polygons are not used).
        connectivity: the connectivity the chunks were polygonized with.
        georef: the :class:`Georef` the chunks were polygonized with, if any.

    Yields:
        Batches of dissolved polygons, normalized.
    """
    if not chunks:
        return
    order = sorted(chunks)
    rows = sorted({chunks[ij].window[0] for ij in order})
    cols = sorted({chunks[ij].window[1] for ij in order})
    merger = SeamMerger(rows, cols, connectivity, georef)
    for ij in order:
        yield from merger.add(ij, chunks[ij])
    yield from merger.finish()


def merge_seams(
    chunks: dict[tuple[int, int], ChunkPolygons],
    connectivity: int = 4,
    georef: Georef | None = None,
) -> Polygons:
    """:func:`iter_merged` as one :class:`Polygons`."""
    batches = list(iter_merged(chunks, connectivity, georef))
    return Polygons.concat(batches) if batches else Polygons.empty()


def merge_chunks(
    chunks: dict[tuple[int, int], ChunkPolygons],
    connectivity: int = 4,
    georef: Georef | None = None,
) -> Polygons:
    """Dissolve polygons across seams; all polygons of the raster in a deterministic order.

    Args:
        chunks: :class:`ChunkPolygons` by chunk ``(row, col)``, every chunk of a grid.
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
