"""Chunked polygonization of label rasters with seam dissolve.

Each dask chunk is polygonized on its own with ``rasterio.features.shapes``
(nodata masked). Polygons that do not reach an interior chunk border (a *seam*)
are final. Polygons that do are kept with the polygon id of every pixel along
that border (a *strip*); after all chunks are in, strips on both sides of each
seam give the pairs of polygons whose pixels are neighbours across it (side by
side for 4-connectivity, also diagonally for 8), and each connected group of
pairs with the same class (and instance) is dissolved with ``unary_union``.
So no polygon is cut at a chunk border, and the result is the same polygons,
in the same order, for any chunk size.

Memory: one chunk at a time per worker, plus the polygons (the final ones, and
those on seams until the merge).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import rasterio.features
import shapely
from affine import Affine
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.types import NODATA_LABEL
from geoseg.vector.polygons import Polygons

__all__ = [
    "ChunkCollector",
    "ChunkPolygons",
    "merge_chunks",
    "polygonize_array",
    "polygonize_blocks",
    "polygonize_chunk",
]

#: Sides of a chunk, in the order of ``ChunkPolygons.strips``.
SIDES = ("top", "bottom", "left", "right")
#: Confidence values are ``round(254 p)``; 255 is nodata.
_CONF_SCALE = 254.0


@dataclass(frozen=True)
class ChunkPolygons:
    """What one chunk contributes.

    Attributes:
        polygons: every polygon of the chunk, in global pixel coordinates.
        on_seam: ``(N,) bool``, True for polygons that reach an interior seam.
        strips: for each side with a neighbouring chunk (``"top"``, ...), the
            index into ``polygons`` of the polygon holding each border pixel
            (left to right / top to bottom), -1 where the pixel is nodata.
    """

    polygons: Polygons
    on_seam: np.ndarray
    strips: dict[str, np.ndarray]


def _shapes_to_polygons(
    key: np.ndarray, mask: np.ndarray, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    """``shapes`` of ``key`` as shapely polygons in local pixel coordinates, and their values."""
    coords: list[tuple[float, float]] = []
    ring_len: list[int] = []
    ring_poly: list[int] = []
    values: list[float] = []
    for k, (geom, value) in enumerate(
        rasterio.features.shapes(key, mask=mask, connectivity=connectivity)
    ):
        for ring in geom["coordinates"]:
            coords.extend(ring)
            ring_len.append(len(ring))
            ring_poly.append(k)
        values.append(value)
    if not values:
        return np.zeros(0, dtype=object), np.zeros(0, np.int64)
    xy = np.asarray(coords, dtype=np.float64)
    rings = shapely.linearrings(xy, indices=np.repeat(np.arange(len(ring_len)), ring_len))
    polys = np.asarray(shapely.polygons(rings, indices=np.asarray(ring_poly)))
    bad = ~shapely.is_valid(polys)
    if bad.any():  # 8-connectivity: rings that touch themselves at a pixel corner
        polys[bad] = shapely.make_valid(polys[bad], method="structure", keep_collapsed=False)
    return polys, np.asarray(values).astype(np.int64)


def _keys(
    labels: np.ndarray, mask: np.ndarray, instances: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The image to polygonize, and how its values map to (class, instance) pairs."""
    if instances is None:
        return labels.astype(np.uint8, copy=False), None
    pair = (labels.astype(np.int64) << 32) | instances.astype(np.int64)
    uniq, inverse = np.unique(pair[mask], return_inverse=True)
    key = np.zeros(labels.shape, np.int32)
    key[mask] = inverse.astype(np.int32)
    return key, uniq


def _confidence_sums(
    polys: np.ndarray, mask: np.ndarray, confidence: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per polygon: sum of confidence (0-1) and count of pixels that have one."""
    ids = rasterio.features.rasterize(
        ((g, i) for i, g in enumerate(polys)), out_shape=mask.shape, fill=-1, dtype="int32",
        transform=Affine.identity(),
    )  # fmt: skip
    has = mask & (confidence != NODATA_LABEL) & (ids >= 0)
    n = polys.size
    total = np.bincount(ids[has], weights=confidence[has] / _CONF_SCALE, minlength=n)
    count = np.bincount(ids[has], minlength=n).astype(np.int64)
    return total, count


def _strips(
    polys: np.ndarray, on_seam: np.ndarray, sides: Sequence[str], shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    """For each side, which seam polygon holds each border pixel (-1: none)."""
    h, w = shape
    seam_index = np.flatnonzero(on_seam)
    tree = shapely.STRtree(polys[seam_index])
    out = {}
    for side in sides:
        along = np.arange(w if side in ("top", "bottom") else h) + 0.5
        fixed = {"top": 0.5, "bottom": h - 0.5, "left": 0.5, "right": w - 0.5}[side]
        if side in ("top", "bottom"):
            pts = shapely.points(along, np.full_like(along, fixed))
        else:
            pts = shapely.points(np.full_like(along, fixed), along)
        strip = np.full(along.size, -1, np.int64)
        pt, poly = tree.query(pts, predicate="intersects")
        strip[pt] = seam_index[poly]
        out[side] = strip
    return out


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
) -> ChunkPolygons:
    """Polygonize one chunk of a label raster.

    Args:
        labels: ``(h, w)`` integer class ids; 255 is nodata.
        valid: ``(h, w) bool``, False where the raster has no data.
        instances: ``(h, w)`` instance ids (0 = none): pixels merge only with the
            same class and instance.
        confidence: ``(h, w) uint8`` confidence ``round(254 p)``, 255 = none.
        offset: ``(row, col)`` of the chunk's top-left pixel in the raster.
        seams: sides of the chunk that have a neighbouring chunk.
        connectivity: 4 or 8.
        keep: class ids to polygonize (None: all).
    """
    labels = np.asarray(labels)
    mask = labels != NODATA_LABEL
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    if keep is not None:
        mask &= np.isin(labels, np.asarray(keep))
    key, pairs = _keys(labels, mask, instances)
    polys, values = _shapes_to_polygons(key, mask, connectivity)
    h, w = labels.shape
    b = shapely.bounds(polys).reshape(-1, 4)
    touch = {"top": b[:, 1] <= 0, "bottom": b[:, 3] >= h, "left": b[:, 0] <= 0,
             "right": b[:, 2] >= w}  # fmt: skip
    on_seam = np.zeros(polys.size, bool)
    for side in seams:
        on_seam |= touch[side]
    strips = _strips(polys, on_seam, seams, (h, w)) if polys.size else {}
    for side in seams:
        strips.setdefault(side, np.full(w if side in ("top", "bottom") else h, -1, np.int64))
    conf_sum = conf_n = None
    if confidence is not None:
        conf_sum, conf_n = _confidence_sums(polys, mask, np.asarray(confidence))
    if pairs is None:
        class_id, instance_id = values, None
    else:
        class_id, instance_id = pairs[values] >> 32, pairs[values] & 0xFFFFFFFF
    row0, col0 = offset
    geometry = shapely.transform(polys, lambda xy: xy + np.array([col0, row0], np.float64))
    return ChunkPolygons(
        Polygons(np.asarray(geometry), class_id, instance_id, conf_sum, conf_n), on_seam, strips
    )


class ChunkCollector:
    """A sink for ``store_blocks``: ``collector[(i:i+1, j:j+1)] = [[ChunkPolygons]]``.

    Thread-safe; keeps what each chunk returns, by chunk position.
    """

    def __init__(self) -> None:
        self.chunks: dict[tuple[int, int], ChunkPolygons] = {}
        self._lock = threading.Lock()

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        i, j = int(key[0].start or 0), int(key[1].start or 0)
        with self._lock:
            self.chunks[(i, j)] = block.reshape(-1)[0]


def polygonize_blocks(
    labels: da.Array,
    valid: da.Array | None = None,
    *,
    instances: da.Array | None = None,
    confidence: da.Array | None = None,
    connectivity: int = 4,
    keep: Sequence[int] | None = None,
) -> da.Array:
    """Lazy polygonization: an object array with one :class:`ChunkPolygons` per chunk.

    Args:
        labels: ``(H, W)`` dask array of class ids (255 = nodata); its chunks are
            the polygonization chunks.
        valid, instances, confidence: optional ``(H, W)`` dask arrays, rechunked
            like ``labels``.
        connectivity: 4 or 8.
        keep: class ids to polygonize (None: all).

    Returns:
        ``(n_chunk_rows, n_chunk_cols) object`` dask array, chunks of 1 x 1; feed
        it to ``store_blocks`` with a :class:`ChunkCollector`, then :func:`merge_chunks`.
    """
    extras = {"valid": valid, "instances": instances, "confidence": confidence}
    names = [k for k, v in extras.items() if v is not None]
    arrays = [labels] + [da.asarray(extras[k]).rechunk(labels.chunks) for k in names]
    nby, nbx = len(labels.chunks[0]), len(labels.chunks[1])
    keep_ids = None if keep is None else tuple(int(k) for k in keep)

    def block(*blocks: np.ndarray, block_info: Any = None) -> np.ndarray:
        info = block_info[0]
        (y0, _), (x0, _) = info["array-location"]
        i, j = info["chunk-location"]
        seams = [s for s, on in zip(SIDES, (i > 0, i < nby - 1, j > 0, j < nbx - 1)) if on]
        kw = dict(zip(names, blocks[1:], strict=True))
        out = np.empty((1, 1), dtype=object)
        out[0, 0] = polygonize_chunk(
            blocks[0], kw.get("valid"), instances=kw.get("instances"),
            confidence=kw.get("confidence"), offset=(y0, x0), seams=seams,
            connectivity=connectivity, keep=keep_ids,
        )  # fmt: skip
        return out

    return da.map_blocks(
        block, *arrays, chunks=((1,) * nby, (1,) * nbx), dtype=object,
        meta=np.empty((0, 0), dtype=object),
    )  # fmt: skip


def _seam_pairs(a: np.ndarray, b: np.ndarray, connectivity: int) -> np.ndarray:
    """``(P, 2)`` pairs of ids facing each other across a seam (strips ``a`` | ``b``)."""
    out = [np.column_stack([a, b])]
    if connectivity == 8:
        out += [np.column_stack([a[:-1], b[1:]]), np.column_stack([a[1:], b[:-1]])]
    pairs = np.concatenate(out)
    return pairs[(pairs >= 0).all(axis=1)]


def _dissolve(geoms: np.ndarray) -> Any:
    merged = shapely.union_all(geoms)
    # Drop the vertices left where the seam crossed a straight edge.
    merged = shapely.simplify(merged, 0.0, preserve_topology=True)
    return merged if shapely.is_valid(merged) else shapely.make_valid(merged, method="structure")


def merge_chunks(
    chunks: dict[tuple[int, int], ChunkPolygons], connectivity: int = 4
) -> Polygons:
    """Dissolve polygons across seams; all polygons of the raster in a deterministic order.

    Args:
        chunks: :class:`ChunkPolygons` by chunk ``(row, col)``, every chunk of a grid.
        connectivity: the connectivity the chunks were polygonized with.
    """
    if not chunks:
        return Polygons.empty()
    nby = 1 + max(i for i, _ in chunks)
    nbx = 1 + max(j for _, j in chunks)
    finals, seam_parts, offsets = [], [], {}
    n_seam = 0
    for ij in sorted(chunks):
        c = chunks[ij]
        finals.append(c.polygons.take(~c.on_seam))
        seam_parts.append(c.polygons.take(c.on_seam))
        # local polygon index -> global seam-part id
        local = np.full(len(c.polygons) + 1, -1, np.int64)
        local[np.flatnonzero(c.on_seam)] = n_seam + np.arange(int(c.on_seam.sum()))
        offsets[ij] = local
        n_seam += int(c.on_seam.sum())
    seam = Polygons.concat(seam_parts)

    def strip(ij: tuple[int, int], side: str) -> np.ndarray:
        return offsets[ij][chunks[ij].strips[side]]  # -1 indexes the trailing -1

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
    graph = coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(n_seam, n_seam))
    _, group = connected_components(graph, directed=False)
    merged = _merge_groups(seam, group)
    return Polygons.concat([*finals, merged]).sorted()


def _merge_groups(seam: Polygons, group: np.ndarray) -> Polygons:
    """One polygon per group of seam parts (unions where a group has several)."""
    if len(seam) == 0:
        return seam
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    first = order[starts]
    sizes = np.diff(np.r_[starts, order.size])
    geometry = seam.geometry[first].copy()
    for k in np.flatnonzero(sizes > 1):
        members = order[starts[k] : starts[k] + sizes[k]]
        geometry[k] = _dissolve(seam.geometry[members])

    def total(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.bincount(group, weights=a)[group[first]]

    conf_n = total(seam.conf_n)
    return Polygons(
        geometry,
        seam.class_id[first],
        None if seam.instance_id is None else seam.instance_id[first],
        total(seam.conf_sum),
        None if conf_n is None else np.rint(conf_n).astype(np.int64),
    )


def polygonize_array(
    labels: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    chunk: int | None = None,
    instances: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    connectivity: int = 4,
    keep: Sequence[int] | None = None,
) -> Polygons:
    """Polygonize an in-memory ``(H, W)`` label array in chunks of ``chunk`` px (sync).

    A convenience for small arrays and tests; scenes go through
    :func:`polygonize_blocks` and ``store_blocks``.
    """
    size = chunk or max(labels.shape)
    lab = da.from_array(np.asarray(labels), chunks=size)
    wrap = {
        k: None if v is None else da.from_array(np.asarray(v), chunks=size)
        for k, v in {"valid": valid, "instances": instances, "confidence": confidence}.items()
    }
    lazy = polygonize_blocks(lab, **wrap, connectivity=connectivity, keep=keep)
    blocks = lazy.compute(scheduler="sync")
    chunks = {(i, j): blocks[i, j] for i, j in np.ndindex(blocks.shape)}
    return merge_chunks(chunks, connectivity)
