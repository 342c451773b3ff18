"""store_blocks on a distributed client: a bounded window of blocks, the threads result."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import dask.array as da
import numpy as np
import pytest
from dask.optimization import cull
from distributed import Client, LocalCluster

from geoseg.tiling import execute
from geoseg.tiling.execute import block_slices, store_blocks

FILL = 77


class ArraySink:
    """``sink[slices] = block`` into an array; counts the writes."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.array = np.full(shape, FILL, np.uint8)
        self.writes = 0

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        self.array[key] = block
        self.writes += 1


class WatchingSink(ArraySink):
    """Also records, at each write, the blocks submitted and not yet written, and the
    number of tasks the (in-process) scheduler holds."""

    def __init__(self, shape: tuple[int, ...], scheduler: Any) -> None:
        super().__init__(shape)
        self.scheduler = scheduler
        self.submitted = 0
        self.in_flight: list[int] = []
        self.scheduler_tasks: list[int] = []

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        self.in_flight.append(self.submitted - self.writes)
        self.scheduler_tasks.append(len(self.scheduler.tasks))
        super().__setitem__(key, block)


def _smooth(x: np.ndarray) -> np.ndarray:
    """A 5x5 box sum mod 256: each output pixel depends on its neighbours' blocks."""
    y = x.astype(np.int64)
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    out = np.sum([np.roll(y, s, axis=(1, 2)) for s in shifts], axis=0)
    return (out % 256).astype(np.uint8)


def lazy_result() -> da.Array:
    """``(2, 70, 90) uint8`` from overlapping blocks (6 x 5 blocks, ragged edges)."""
    x = np.random.default_rng(0).integers(0, 256, (2, 70, 90), dtype=np.uint8)
    return da.from_array(x, chunks=(2, 12, 20)).map_overlap(
        _smooth, depth={1: 2, 2: 2}, boundary="reflect", dtype=np.uint8
    )


def threads_result(arr: da.Array) -> np.ndarray:
    sink = ArraySink(arr.shape)
    store_blocks(arr, sink, "threads")
    return sink.array


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def _watch_submissions(monkeypatch: pytest.MonkeyPatch, sink: WatchingSink) -> None:
    submit = execute._BlockGraphs.submit

    def counted(self: Any, client: Any, index: tuple[int, ...]) -> Any:
        sink.submitted += 1
        return submit(self, client, index)

    monkeypatch.setattr(execute._BlockGraphs, "submit", counted)


def test_distributed_keeps_a_bounded_window_and_gives_the_threads_result(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    arr = lazy_result()
    index = list(np.ndindex(arr.numblocks))
    sink = WatchingSink(arr.shape, client.cluster.scheduler)  # type: ignore[union-attr]
    _watch_submissions(monkeypatch, sink)
    calls: list[tuple[int, int]] = []
    execute._store_distributed(arr, sink, client, lambda d, t: calls.append((d, t)), index)

    window = execute.BLOCKS_PER_THREAD  # one worker thread
    assert len(index) == 30 and window == 3
    assert sink.writes == sink.submitted == len(index)
    assert max(sink.in_flight) == window  # filled, never exceeded
    assert sink.in_flight[-1] == 1
    # the scheduler holds the tasks of the blocks in flight (and maybe of the one just
    # released), never the whole graph
    keys = [(arr.name, *i) for i in index]
    dsk = dict(arr.__dask_optimize__(arr.__dask_graph__(), keys))
    per_block = max(len(cull(dsk, [k])[0]) for k in keys)
    assert max(sink.scheduler_tasks) <= (window + 1) * per_block < len(dsk) / 2
    assert calls == [(d, len(index)) for d in range(1, len(index) + 1)]
    expected = threads_result(arr)
    assert (expected != FILL).any()
    np.testing.assert_array_equal(sink.array, expected)


def test_distributed_computes_only_the_blocks_asked_for(client: Client) -> None:
    arr = lazy_result()
    index = list(np.ndindex(arr.numblocks))[::2]
    sink = ArraySink(arr.shape)
    execute._store_distributed(arr, sink, client, None, index)

    expected = threads_result(arr)
    assert sink.writes == len(index) == 15
    written = np.zeros(arr.shape, bool)
    for i in index:
        written[block_slices(arr, i)] = True
    np.testing.assert_array_equal(sink.array[written], expected[written])
    assert (sink.array[~written] == FILL).all()
    assert written.sum() < written.size


def _encode_with_pid(block: np.ndarray) -> dict[str, Any]:
    return {"pid": os.getpid(), "sum": int(block.astype(np.int64).sum())}


class PidRecordSink:
    """A :class:`~geoseg.tiling.execute.RecordSink` whose records say which process made them."""

    def __init__(self) -> None:
        self.records: dict[tuple[int, int], dict[str, Any]] = {}

    @property
    def encode(self) -> Any:
        return _encode_with_pid

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        self.put(key, _encode_with_pid(block))

    def put(self, key: tuple[slice, ...], record: Any) -> None:
        self.records[key[1].start, key[2].start] = record


def test_a_record_sink_is_encoded_on_the_worker_and_put_on_the_client() -> None:
    arr = lazy_result()
    sink = PidRecordSink()
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0")
        as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        execute._store_distributed(arr, sink, client, None, list(np.ndindex(arr.numblocks)))
    expected = threads_result(arr)
    assert len(sink.records) == 30
    for index in np.ndindex(arr.numblocks):
        key = block_slices(arr, index)
        record = sink.records[key[1].start, key[2].start]
        assert record["pid"] != os.getpid()  # encoded in the worker process
        assert record["sum"] == int(expected[key].astype(np.int64).sum())


class FakeClient:
    """Just what unpin_starved_workers asks of a client: threads and cores per worker."""

    def __init__(self, threads: dict[str, int], cores: dict[str, int]) -> None:
        self.threads, self.cores = threads, cores
        self.widened: list[str] = []

    def nthreads(self) -> dict[str, int]:
        return self.threads

    def run(self, fn: Any, *args: Any, workers: list[str] | None = None) -> dict[str, int]:
        if fn is execute._cores:
            return self.cores
        self.widened += workers or []
        for w in workers or []:
            self.cores[w] = len(args[0])
        return {w: len(args[0]) for w in workers or []}


def test_only_workers_starved_of_cores_are_widened(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    client = FakeClient(
        threads={"one-core": 16, "numa-half": 16, "few-threads": 2, "fine": 8},
        cores={"one-core": 1, "numa-half": 8, "few-threads": 1, "fine": 16},
    )

    notes = execute.unpin_starved_workers(client)

    assert client.widened == ["one-core"]  # 1 of 16: wrong; 8 of 16 (a NUMA node): kept
    assert client.cores["one-core"] == 16
    assert notes == [
        "worker one-core was pinned to 1 core(s) for 16 threads (dask-cuda sets the CPU "
        "affinity from the GPU's reported NUMA node); widened to 16 cores"
    ]
    assert notes[0] in caplog.text


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_task_threads_take_the_affinity_set_through_run() -> None:
    """Why widening must come first: a worker's task threads copy its event loop's mask."""

    def mask(_: int) -> list[int]:
        return sorted(os.sched_getaffinity(0))

    cores = sorted(os.sched_getaffinity(0))
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True) as cluster,
        Client(cluster) as client,
    ):
        client.run(execute._allow, cores[:1])  # as dask-cuda's plugin would pin it
        client.run(execute._allow, cores)  # what unpin_starved_workers does
        assert client.gather(client.map(mask, range(4))) == [cores] * 4
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True) as cluster,
        Client(cluster) as client,
    ):
        client.run(execute._allow, cores[:1])
        assert client.gather(client.map(mask, range(4))) == [cores[:1]] * 4
