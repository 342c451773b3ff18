"""store_blocks on the local schedulers: row-major with a bounded read-ahead, resumable."""

from __future__ import annotations

import threading
import time
from typing import Any

import dask.array as da
import numpy as np
import pytest

from geoseg.tiling import execute, predict_blocks
from geoseg.tiling.execute import block_slices, store_blocks
from geoseg.tiling.halo import recomputed, with_halo
from geoseg.types import TileSpec
from tests.tiling.test_infer import SCHEMA, BoxModel, make_scene

SPEC = TileSpec(window=32, margin=2, chunk_windows=2, batch_size=4)  # 56 px chunks
WORKERS = 2
FILL = 77


class Chunks:
    """A ``(C, H, W)`` in-memory array-like read in ``c`` px chunks; logs each read."""

    def __init__(self, array: np.ndarray, c: int, log: list[tuple[str, int, int]]) -> None:
        self.array, self.c, self.log = array, c, log
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.lock = threading.Lock()

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        with self.lock:
            self.log.append(("read", key[-2].start // self.c, key[-1].start // self.c))
        return self.array[key].copy()


class ArraySink:
    """``sink[slices] = block`` into an array; logs each write as ``c`` px block ``(i, j)``."""

    def __init__(self, shape: tuple[int, ...], c: int = 1) -> None:
        self.array = np.full(shape, FILL, np.uint8)
        self.c = c
        self.log: list[tuple[str, int, int]] = []

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        self.array[key] = block
        self.log.append(("write", key[1].start // self.c, key[2].start // self.c))


def _slow_sum(block: np.ndarray) -> np.ndarray:
    """A halo'd block -> ``(1, 16, 16) uint8`` filled with its sum mod 251; slower than a read."""
    time.sleep(0.002)
    return np.full((1, 16, 16), block.astype(np.int64).sum() % 251, np.uint8)


def earliest_read_too_soon(log: list[tuple[str, int, int]], nx: int, lookahead: int) -> int:
    """How many blocks too early the worst read came, if each chunk may be read once all
    blocks up to ``lookahead`` before the first one needing it are written (<= 0: none)."""
    written: set[int] = set()
    prefix, worst = 0, -lookahead
    for event, i, j in log:
        if event == "write":
            written.add(i * nx + j)
            while prefix in written:
                prefix += 1
        else:  # the first block needing chunk (i, j) is its neighbour up and left
            first = max(i - 1, 0) * nx + max(j - 1, 0)
            worst = max(worst, first - lookahead + 1 - prefix)
    return worst


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_chunks_are_read_a_bounded_number_of_blocks_ahead(scheduler: str) -> None:
    ny, nx, c = 4, 20, 16
    values = np.random.default_rng(0).integers(0, 200, (2, ny * c, nx * c), dtype=np.uint8)
    log: list[tuple[str, int, int]] = []
    x = da.from_array(Chunks(values, c, log), chunks=(2, c, c), meta=np.array((), np.uint8))
    out = with_halo(x, 2).map_blocks(_slow_sum, chunks=((1,), *x.chunks[1:]), dtype=np.uint8)
    sink = ArraySink(out.shape, c)
    sink.log = log
    store_blocks(out, sink, scheduler, WORKERS)

    threads = 1 if scheduler == "sync" else WORKERS
    # before: dask's threads scheduler read 53 blocks ahead of this bound
    assert earliest_read_too_soon(log, nx, execute.BLOCKS_PER_THREAD * threads) <= 0
    assert sorted(e for e in log if e[0] == "read") == [
        ("read", i, j) for i in range(ny) for j in range(nx)
    ]  # each chunk read once
    plain = da.overlap.overlap(da.from_array(values, chunks=(2, c, c)), {1: 2, 2: 2}, "none")
    want = plain.map_blocks(_slow_sum, chunks=((1,), *x.chunks[1:]), dtype=np.uint8)
    np.testing.assert_array_equal(sink.array, want.compute(scheduler="sync"))
    assert len(np.unique(sink.array)) > 20


class SlowModel(BoxModel):
    """:class:`BoxModel`, slower than a read, as a real model is."""

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        time.sleep(0.002)
        return super().predict(batch, valid)


_MODEL = SlowModel()


def slow_model() -> SlowModel:
    return _MODEL


def predict(scene: np.ndarray, valid: np.ndarray, chunk: int, scheduler: str) -> Any:
    """Labels ``(H, W)`` of ``scene`` read in ``chunk`` px chunks, and the chunks read."""
    log: list[tuple[str, int, int]] = []
    source = Chunks(scene, chunk, log)
    data = da.from_array(source, chunks=(3, chunk, chunk), meta=np.array((), scene.dtype))
    lazy = predict_blocks(data, da.from_array(valid, chunks=chunk), slow_model, SPEC, SCHEMA.ids)
    sink = ArraySink(lazy.shape)
    store_blocks(lazy, sink, scheduler, WORKERS)
    return sink.array[0], log


def test_predict_reads_each_chunk_twice_and_equals_one_chunk() -> None:
    c = SPEC.chunk
    scene, valid = make_scene(3 * c, 7 * c)
    labels, log = predict(scene, valid, c, "threads")

    # once for the rim its neighbours need (the ones above first), once for itself
    assert sorted(log) == sorted(2 * [("read", i, j) for i in range(3) for j in range(7)])
    whole, _ = predict(scene, valid, 7 * c, "sync")
    np.testing.assert_array_equal(labels, whole)
    assert set(np.unique(labels)) == {3, 5, 7, 255}


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_blocks_done_are_skipped_and_the_rest_written(scheduler: str) -> None:
    c = SPEC.chunk
    scene, valid = make_scene(3 * c, 8 * c)
    lazy = predict_blocks(da.from_array(scene, chunks=(3, c, c)), da.from_array(valid, chunks=c),
                          slow_model, SPEC, SCHEMA.ids)  # fmt: skip
    whole = ArraySink(lazy.shape)
    store_blocks(lazy, whole, "sync")
    done = list(np.ndindex(lazy.numblocks))[::3]
    sink = ArraySink(lazy.shape)
    calls: list[tuple[int, int]] = []

    def skip(s: tuple[slice, ...]) -> bool:
        return (0, s[1].start // c, s[2].start // c) in done

    store_blocks(lazy, sink, scheduler, WORKERS, lambda d, t: calls.append((d, t)), skip)

    for index in np.ndindex(lazy.numblocks):
        s = block_slices(lazy, index)
        if index in done:
            assert (sink.array[s] == FILL).all()
        else:
            np.testing.assert_array_equal(sink.array[s], whole.array[s])
    assert calls == [(d, len(calls)) for d in range(1, len(calls) + 1)]


def test_recomputed_arrays_are_equal_and_share_no_task() -> None:
    x = da.from_array(np.arange(2 * 40 * 50).reshape(2, 40, 50), chunks=(2, 20, 20))
    y = (x + 1).rechunk((2, (25, 15), (30, 20)))
    z = y[0] > 900
    again_y, again_z = recomputed(y, z)

    assert not set(again_y.__dask_graph__()) & set(y.__dask_graph__())
    np.testing.assert_array_equal(again_y.compute(scheduler="sync"), y.compute())
    np.testing.assert_array_equal(again_z.compute(scheduler="sync"), z.compute())
    assert again_y.chunks == y.chunks
    # the two copies share their (copied) inputs, as y and z do
    assert set(again_z.__dask_graph__()) & set(again_y.__dask_graph__())
