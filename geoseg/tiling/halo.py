"""Chunks with a halo of their neighbours' pixels, holding no neighbour chunk alive.

``dask.array.overlap.overlap`` cuts each neighbour's strip with a ``getitem`` task
whose result is a *view*: a 32 x 32 corner keeps its whole (4, 992, 992) source
chunk in memory until the chunk that needs the corner runs. On the threads
scheduler that pinned about 45 read chunks (340 MB) of an 8 000² scene and made
``predict``'s peak RSS grow with the scene (1.57x from 2 000² to 8 000²).

:func:`with_halo` gives the same arrays, but each chunk's rim (the strips its
neighbours need) is copied in one task right after the chunk is read, so the chunk
is freed once its own halo'd block is made; what waits for the neighbours is the
rim, a few percent of the chunk.

In row-major order (:mod:`geoseg.tiling.readahead`) a chunk's rim is needed by the
neighbour above it, a row before the chunk itself. With ``rims_from`` the rim comes
from a second read of the chunk, so the chunk is not held for that row: what waits
is its rim, about two rows long (until the neighbour below is done). Taking only
the strips for the neighbours above from the second read, and the rest from the
chunk's own read, would keep half as much rim, but dask's local scheduler runs that
second rim task when its priority says, a row later, holding the chunk meanwhile.
"""

from __future__ import annotations

import itertools
from typing import Any, cast

import dask.array as da
import numpy as np
from dask._task_spec import convert_legacy_graph
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

__all__ = ["recomputed", "with_halo"]

#: Neighbour offsets ``(dy, dx)``, in the order :func:`_rim` lists its strips.
_DIRS = [(dy, dx) for dy, dx in itertools.product((-1, 0, 1), repeat=2) if (dy, dx) != (0, 0)]


def _part(n: int, d: int, side: int) -> slice:
    """Rows (or columns) of a chunk of ``n`` px that the neighbour on ``side`` (-1, 0, 1) needs."""
    return slice(0, d) if side < 0 else slice(n - d, n) if side > 0 else slice(0, n)


def _rim(block: np.ndarray, d: int) -> list[np.ndarray]:
    """Copies of the ``d``-px strips of a ``(C, h, w)`` block, one per neighbour in ``_DIRS``.

    A copy, not a view, so that the strips do not keep ``block`` alive.
    """
    _, h, w = block.shape
    return [block[:, _part(h, d, dy), _part(w, d, dx)].copy() for dy, dx in _DIRS]


def _assemble(block: np.ndarray, rims: list[list[np.ndarray] | None]) -> np.ndarray:
    """``block`` with the strips of its neighbours around it; ``rims[k]``: the rim of the
    neighbour at ``_DIRS[k]`` (None past the array's edge)."""
    rows = []
    for dy in (-1, 0, 1):
        row = []
        for dx in (-1, 0, 1):
            if (dy, dx) == (0, 0):
                row.append(block)
                continue
            rim = rims[_DIRS.index((dy, dx))]
            if rim is not None:  # the neighbour's strip facing us: its direction is (-dy, -dx)
                row.append(rim[_DIRS.index((-dy, -dx))])
        if dy == 0 or rims[_DIRS.index((dy, 0))] is not None:
            rows.append(np.concatenate(row, axis=2) if len(row) > 1 else row[0])
    return np.concatenate(rows, axis=1) if len(rows) > 1 else rows[0]


def recomputed(*arrays: da.Array) -> list[da.Array]:
    """``arrays`` again, computed by new tasks: a copy of their whole graph under new keys.

    What ``dask.graph_manipulation.clone`` is for; in dask 2026.8 that leaves the keys
    inside the tasks of some layers (``rechunk``) unrenamed, which breaks the graph.
    The arrays share the copied tasks, as the originals share theirs.
    """
    token = tokenize(*arrays, "recomputed")

    def rename(key: Any) -> Any:
        if isinstance(key, tuple):
            return (f"{key[0]}-again-{token}", *key[1:])
        return f"{key}-again-{token}"

    graph: dict[Any, Any] = {}
    for arr in arrays:
        graph.update(arr.__dask_graph__())
    dsk = convert_legacy_graph(graph)
    subs = {key: rename(key) for key in dsk}
    copied = {subs[key]: node.substitute(subs, key=subs[key]) for key, node in dsk.items()}
    names = [rename(arr.name) for arr in arrays]
    graphs = [HighLevelGraph.from_collections(name, copied) for name in names]
    return [
        da.Array(graph, name, arr.chunks, meta=arr._meta)
        for arr, name, graph in zip(arrays, names, graphs, strict=True)
    ]


def with_halo(arr: da.Array, depth: int, rims_from: da.Array | None = None) -> da.Array:
    """``dask.array.overlap.overlap(arr, {0: 0, 1: depth, 2: depth}, boundary="none")``.

    The same values and chunks, without neighbour chunks held alive by views (see
    the module docstring).

    Args:
        arr: ``(C, H, W)`` array in one band chunk; every chunk at least ``depth`` px
            along ``y`` and ``x``.
        depth: halo width, px (none is added at the array's outer edges).
        rims_from: the same array computed by other tasks (:func:`recomputed`), whose
            chunks give the rims (see the module docstring); default ``arr``.

    Returns:
        ``(C, H', W')`` array whose block ``(0, i, j)`` is block ``(0, i, j)`` of ``arr``
        grown by ``depth`` px on each side that has a neighbour.
    """
    _, ny, nx = arr.numblocks
    if arr.numblocks[0] != 1 or min(*arr.chunks[1], *arr.chunks[2]) < depth:
        raise ValueError(f"with_halo needs one band chunk and chunks of at least {depth} px")
    if depth == 0:
        return arr
    src = arr if rims_from is None else rims_from
    if src.chunks != arr.chunks:
        raise ValueError("with_halo needs rims_from chunked as arr")
    token = tokenize(arr, depth, src)
    rim, name = f"halo-rim-{token}", f"halo-{token}"
    dsk: dict[Any, Any] = {}
    for i, j in itertools.product(range(ny), range(nx)):
        dsk[(rim, i, j)] = (_rim, (src.name, 0, i, j), depth)
    for i, j in itertools.product(range(ny), range(nx)):
        near = [
            (rim, i + dy, j + dx) if 0 <= i + dy < ny and 0 <= j + dx < nx else None
            for dy, dx in _DIRS
        ]
        dsk[(name, 0, i, j)] = (_assemble, (arr.name, 0, i, j), near)
    sources = [cast(Any, arr)] if src is arr else [cast(Any, arr), cast(Any, src)]
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=sources)
    grow = [
        tuple(c + depth * ((k > 0) + (k < len(axis) - 1)) for k, c in enumerate(axis))
        for axis in arr.chunks[1:]
    ]
    return da.Array(graph, name, (arr.chunks[0], *grow), meta=arr._meta)
