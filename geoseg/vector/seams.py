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

from typing import Any

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.vector.attributes import Georef, georeference, pixel_to_crs
from geoseg.vector.chunk import ChunkPolygons
from geoseg.vector.polygons import Polygons
from geoseg.vector.rings import insert_vertices_on_lines, remove_collinear_vertices

__all__ = ["merge_chunks"]


def _seam_pairs(a: np.ndarray, b: np.ndarray, connectivity: int) -> np.ndarray:
    """``(P, 2)`` pairs of ids facing each other across a seam (strips ``a`` | ``b``)."""
    out = [np.column_stack([a, b])]
    if connectivity == 8:
        out += [np.column_stack([a[:-1], b[1:]]), np.column_stack([a[1:], b[:-1]])]
    pairs = np.concatenate(out)
    return pairs[(pairs >= 0).all(axis=1)]


def _dissolve(geoms: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> Any:
    """Union of seam parts that form one region (exact pixel-corner coordinates).

    Holes of a part never reach its chunk's border, so they stay holes of the
    union unchanged: only the filled outlines are dissolved (a coverage union,
    linear in their size, after adding a vertex at every pixel corner on the
    seams), then the parts' holes are put back.
    """
    parts = shapely.get_parts(geoms)
    outlines = insert_vertices_on_lines(shapely.polygons(shapely.get_exterior_ring(parts)), xs, ys)
    try:
        union = shapely.coverage_union_all(outlines)
    except shapely.errors.GEOSException:  # pragma: no cover - outlines always form a coverage
        return remove_collinear_vertices(np.array([shapely.union_all(geoms)]))[0]
    union = remove_collinear_vertices(np.array([union]))[0]
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    is_hole = np.r_[False, ring_part[1:] == ring_part[:-1]]
    holes, hole_part = rings[is_hole], ring_part[is_hole]
    if holes.size == 0:
        return union
    pieces = shapely.get_parts(union)
    piece_of_part = np.zeros(parts.size, np.int64)
    if pieces.size > 1:  # 8-connectivity: pieces touching at corners
        owner = shapely.STRtree(pieces).query(_pixel_inside(parts), predicate="within")
        piece_of_part[owner[0]] = owner[1]
    rebuilt = []
    for k, piece in enumerate(pieces):
        extra = holes[piece_of_part[hole_part] == k]
        rings_k = np.concatenate([shapely.get_rings(piece), extra])
        rebuilt.append(shapely.polygons(rings_k, indices=np.zeros(rings_k.size, np.intp))[0])
    return rebuilt[0] if len(rebuilt) == 1 else shapely.multipolygons(rebuilt)


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
    order = sorted(chunks)
    seam = Polygons.concat([chunks[ij].seam for ij in order])
    lines = (
        np.unique([chunks[ij].window[1] for ij in order if ij[1] > 0]),
        np.unique([chunks[ij].window[0] for ij in order if ij[0] > 0]),
    )
    merged = _merge_groups(seam, _seam_groups(chunks, seam, connectivity), lines, georef)
    # Same ring starts and orientation whatever the chunking: byte-stable output
    # (final polygons come normalized from the chunks).
    merged = merged.replace(geometry=shapely.normalize(merged.geometry))
    return Polygons.concat([*(chunks[ij].final for ij in order), merged]).sorted()


def _merge_groups(
    seam: Polygons,
    group: np.ndarray,
    lines: tuple[np.ndarray, np.ndarray],
    georef: Georef | None,
) -> Polygons:
    """One polygon per group of seam parts (unions where a group has several)."""
    if len(seam) == 0:
        return seam if georef is None else seam.replace(geometry=seam.geometry)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    sizes = np.diff(np.r_[starts, order.size])
    first = order[starts]
    geometry = seam.geometry[first].copy()
    several = np.flatnonzero(sizes > 1)
    for k in several:
        geometry[k] = _dissolve(seam.geometry[order[starts[k] : starts[k] + sizes[k]]], *lines)

    def total(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.bincount(group, weights=a)[group[first]]

    conf_n = total(seam.conf_n)
    out = Polygons(
        geometry,
        seam.class_id[first],
        None if seam.instance_id is None else seam.instance_id[first],
        total(seam.conf_sum),
        None if conf_n is None else np.rint(conf_n).astype(np.int64),
    )
    if georef is None:
        return out
    # Unions are measured again from their own vertices (not as sums over parts, whose
    # densified seam edges differ with the chunking): the same region gets the same
    # area and perimeter whatever the chunk size.
    area, perim = (
        np.zeros(len(out)) if c is None else c[first] for c in (seam.area_m2, seam.perim_m)
    )
    crs_geoms = pixel_to_crs(geometry, georef.transform)
    if several.size:
        unions = georeference(out.take(several), georef)
        area[several], perim[several] = unions.area_m2, unions.perim_m
    return out.replace(geometry=crs_geoms, area_m2=area, perim_m=perim)
