"""Chunked polygonization of label rasters with seam dissolve.

Each dask chunk is polygonized on its own with ``rasterio.features.shapes``
(nodata masked; :mod:`geoseg.vector.chunk`). Polygons that reach a chunk border
with a neighbouring chunk are dissolved with their neighbours of the same class
(and instance) across it once all chunks are in (:mod:`geoseg.vector.seams`).
So no polygon is cut at a chunk border, and the result is the same polygons,
vertex for vertex and in the same order, for any chunk size.

Memory: one chunk at a time per worker, plus the polygons on seams until the
merge; the final ones too with :class:`ChunkCollector`, not with
:class:`StreamingCollector`, which hands them on to a writer as chunks finish.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np
import pyarrow as pa

from geoseg.types import NODATA_LABEL, ClassSchema
from geoseg.vector.attributes import Georef, polygon_batch
from geoseg.vector.chunk import SIDES, ChunkPolygons, polygonize_chunk
from geoseg.vector.polygons import Polygons
from geoseg.vector.seams import SeamMerger, iter_merged, merge_chunks, merge_seams

__all__ = [
    "ChunkCollector",
    "ChunkPolygons",
    "SeamMerger",
    "StreamingCollector",
    "iter_merged",
    "merge_chunks",
    "merge_seams",
    "polygonize_array",
    "polygonize_blocks",
    "polygonize_chunk",
]


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


class StreamingCollector:
    """A sink for ``store_blocks`` that hands polygons on as chunks finish.

    Chunks must come with a ``batch`` (``polygonize_blocks(..., schema=...)``).
    Each chunk's final polygons go to ``emit`` in chunk order (row by row),
    whatever order the chunks finish in, and its seam polygons to a
    :class:`~geoseg.vector.seams.SeamMerger`, whose unions go to ``emit`` as soon
    as a row of chunks completes them; :meth:`finish` emits the last ones. The
    output is the same for any scheduler. Thread-safe.

    Args:
        row_starts, col_starts: first pixel row / column of each chunk row / column.
        emit: called with record batches, under a lock, in order.
        connectivity: the connectivity of the polygonization.
        georef: the :class:`Georef` the chunks were polygonized with.
        schema: class names for the unions' batches.
    """

    def __init__(
        self,
        row_starts: Sequence[int],
        col_starts: Sequence[int],
        emit: Callable[[pa.RecordBatch], None],
        connectivity: int,
        georef: Georef,
        schema: ClassSchema | None = None,
    ) -> None:
        self._cols = len(col_starts)
        self._emit = emit
        self._schema = schema
        self._merger = SeamMerger(row_starts, col_starts, connectivity, georef)
        self._pending: dict[int, ChunkPolygons] = {}
        self._next = 0
        self._lock = threading.Lock()

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        i, j = int(key[0].start or 0), int(key[1].start or 0)
        chunk = block.reshape(-1)[0]
        if chunk.batch is None:
            raise ValueError("StreamingCollector needs chunks polygonized with a schema")
        with self._lock:
            # Seam polygons wait as WKB (compact); see Polygons.packed.
            self._pending[i * self._cols + j] = dataclasses.replace(chunk, seam=chunk.seam.packed())
            while self._next in self._pending:
                ready = self._pending.pop(self._next)
                assert ready.batch is not None
                self._emit(ready.batch)
                ij = divmod(self._next, self._cols)
                for merged in self._merger.add(ij, dataclasses.replace(ready, batch=None)):
                    self._emit(polygon_batch(merged, self._schema))
                self._next += 1

    def finish(self) -> None:
        """Emit the unions of regions that reach the last row of chunks."""
        with self._lock:
            for merged in self._merger.finish():
                self._emit(polygon_batch(merged, self._schema))


def polygonize_blocks(
    labels: da.Array,
    valid: da.Array | None = None,
    *,
    instances: da.Array | None = None,
    confidence: da.Array | None = None,
    connectivity: int = 4,
    keep: Sequence[int] | None = None,
    georef: Georef | None = None,
    schema: ClassSchema | bool | None = False,
    nodata: int | None = NODATA_LABEL,
) -> da.Array:
    """Lazy polygonization: an object array with one :class:`ChunkPolygons` per chunk.

    Args:
        labels: ``(H, W)`` dask array of class ids (within int32; ``nodata`` is
            nodata); its chunks are the polygonization chunks.
        valid, instances, confidence: optional ``(H, W)`` dask arrays, rechunked
            like ``labels``.
        connectivity: 4 or 8.
        keep: class ids to polygonize (None: all).
        georef: compute areas in the workers and return polygons in CRS
            coordinates (see :func:`polygonize_chunk`).
        schema: with a ``georef``, also turn each chunk's final polygons into a
            record batch in the worker (class names from this schema; None: ids
            as names), for a :class:`StreamingCollector`. False: no batch.
        nodata: the label value that is no class (None: none is; see
            :func:`polygonize_chunk`).

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
        has = (i > 0, i < nby - 1, j > 0, j < nbx - 1)
        seams = [s for s, on in zip(SIDES, has, strict=True) if on]
        kw = dict(zip(names, blocks[1:], strict=True))
        out = np.empty((1, 1), dtype=object)
        chunk = polygonize_chunk(
            blocks[0], kw.get("valid"), instances=kw.get("instances"),
            confidence=kw.get("confidence"), offset=(y0, x0), seams=seams,
            connectivity=connectivity, keep=keep_ids, georef=georef, nodata=nodata,
        )  # fmt: skip
        if schema is not False and georef is not None:
            classes = None if schema is True else schema
            empty = chunk.final.take(np.zeros(0, np.int64))
            chunk = dataclasses.replace(
                chunk, final=empty, batch=polygon_batch(chunk.final, classes)
            )
        out[0, 0] = chunk
        return out

    return da.map_blocks(
        block, *arrays, chunks=((1,) * nby, (1,) * nbx), dtype=object,
        meta=np.empty((0, 0), dtype=object),
    )  # fmt: skip


def polygonize_array(
    labels: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    chunk: int | None = None,
    instances: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    connectivity: int = 4,
    keep: Sequence[int] | None = None,
    georef: Georef | None = None,
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
    lazy = polygonize_blocks(lab, **wrap, connectivity=connectivity, keep=keep, georef=georef)
    blocks = lazy.compute(scheduler="sync")
    chunks = {(i, j): blocks[i, j] for i, j in np.ndindex(blocks.shape)}
    return merge_chunks(chunks, connectivity, georef)
