"""Run a lazy result on a Dask scheduler and stream its blocks into a sink.

``scheduler`` is ``"threads"`` (default, this process), ``"sync"`` (one thread,
for debugging), ``"local"`` (a ``dask.distributed.LocalCluster`` of worker
processes), ``"cuda"`` (a ``dask_cuda.LocalCUDACluster``, one worker per GPU) or the
``tcp://host:port`` address of an existing cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import dask
import dask.array as da
import dask.local
import dask.system
import dask.threaded
import numpy as np
from dask.callbacks import Callback
from dask.optimization import cull

from geoseg.errors import GeosegError
from geoseg.tiling.readahead import ordered_store_graph

log = logging.getLogger(__name__)

__all__ = ["Progress", "RecordSink", "Sink", "block_slices", "dask_client", "store_blocks"]

#: ``progress(done, total)``, called as tasks finish.
Progress = Callable[[int, int], None]


class Sink(Protocol):
    """Where computed blocks go: ``sink[(slice, ...)] = block``."""

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None: ...


@runtime_checkable
class RecordSink(Sink, Protocol):
    """A sink that keeps ``encode(block)`` (e.g. compressed tiles) rather than the block.

    On a distributed scheduler ``encode`` runs on the worker that computed the
    block, so only its (smaller) result travels to the client, which calls ``put``.
    """

    @property
    def encode(self) -> Callable[[np.ndarray], Any]: ...

    def put(self, key: tuple[slice, ...], record: Any) -> None: ...


class _TaskProgress(Callback):
    def __init__(self, report: Progress) -> None:
        super().__init__()
        self._report = report
        self._done = 0
        self._total = 0

    def _start_state(self, dsk: Any, state: Any) -> None:
        self._total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        self._done += 1
        self._report(self._done, self._total)


@contextlib.contextmanager
def dask_client(address: str, workers: int | None) -> Iterator[Any]:
    """A ``distributed.Client`` for ``local``, ``cuda`` or a ``tcp://`` scheduler address."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - a dependency of geoseg
        raise GeosegError(
            "dask.distributed is not installed; pip install 'dask[distributed]'"
        ) from exc
    if address == "local":
        cluster = LocalCluster(
            n_workers=workers or 2, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        with cluster, Client(cluster) as client:
            yield client
    elif address == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as exc:
            raise GeosegError(
                "--gpus needs dask-cuda (pip install dask-cuda); with one GPU, --device cuda "
                "on the default scheduler is enough"
            ) from exc
        # One worker per GPU; its threads share the host's cores, so that reading and
        # cutting windows overlap the GPU's work as on the threads scheduler.
        n = workers or _gpu_count()
        threads = max(1, (os.cpu_count() or 1) // n)
        gpu_cluster = LocalCUDACluster(
            n_workers=n, threads_per_worker=threads, dashboard_address=":0"
        )
        with gpu_cluster, Client(gpu_cluster) as client:
            unpin_starved_workers(client)
            yield client
    elif address.startswith("tcp://"):
        with Client(address, timeout="30s") as client:
            yield client
    else:
        raise GeosegError(
            f"unknown scheduler {address!r}; use threads, sync, local, cuda or tcp://host:port"
        )


def _cores(_: object = None) -> int:
    """Cores this process may run on (its CPU affinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def _allow(cpus: list[int]) -> int:
    """Let this thread (a worker's event loop, which starts its task threads) use ``cpus``."""
    os.sched_setaffinity(0, cpus)
    return len(cpus)


def unpin_starved_workers(client: Any) -> list[str]:
    """Give workers pinned to fewer than half as many cores as threads this process's cores.

    dask-cuda pins each worker to the cores NVML reports near its GPU; in virtual
    machines that report can be wrong (a single core), which would starve the
    worker's reading and window cutting. (On one H100 VM ``--gpus 1`` ran 16x
    slower than ``--device cuda`` on the default scheduler; the cause was not
    confirmed.) Call before any task runs: task threads inherit the affinity of
    the event-loop thread that starts them. Returns the warnings given.
    """
    if not hasattr(os, "sched_setaffinity"):
        return []
    allowed = sorted(os.sched_getaffinity(0))
    threads = client.nthreads()
    cores = client.run(_cores)
    # fewer than half the cores it could use: a wrong NUMA report, not a NUMA half
    starved = [a for a, n in threads.items() if a in cores and 2 * cores[a] < min(n, len(allowed))]
    if not starved:
        return []
    notes = [
        f"worker {a} was pinned to {cores[a]} core(s) for {threads[a]} threads (dask-cuda sets "
        f"the CPU affinity from the GPU's reported NUMA node); widened to {len(allowed)} cores"
        for a in starved
    ]
    client.run(_allow, allowed, workers=starved)
    for note in notes:
        log.warning("%s", note)
    return notes


def _gpu_count() -> int:
    """CUDA GPUs visible to this process (at least 1)."""
    import torch

    return max(1, torch.cuda.device_count())


def block_slices(arr: da.Array, index: tuple[int, ...]) -> tuple[slice, ...]:
    """The region of ``arr`` covered by its block at ``index``."""
    out = []
    for axis, i in enumerate(index):
        start = int(sum(arr.chunks[axis][:i]))
        out.append(slice(start, start + arr.chunks[axis][i]))
    return tuple(out)


#: Blocks in flight per worker thread (whose inputs are read, on the threads scheduler):
#: enough to keep every thread busy while blocks are written, few enough that memory
#: does not grow with the scene.
BLOCKS_PER_THREAD = 3


class _BlockGraphs:
    """The optimized graph of some blocks of ``arr``, cut into one small graph per block.

    The graph is optimized and materialized once (O(tasks)); :meth:`submit` then walks
    only the tasks its block needs, so submitting the blocks one by one costs O(tasks)
    in all, not O(blocks x tasks).
    """

    def __init__(self, arr: da.Array, index: list[tuple[int, ...]]) -> None:
        self._name = arr.name
        keys = [self._key(i) for i in index]
        self._dsk = dict(arr.__dask_optimize__(arr.__dask_graph__(), keys))

    def _key(self, index: tuple[int, ...]) -> tuple[Any, ...]:
        return (self._name, *index)

    def submit(self, client: Any, index: tuple[int, ...]) -> Any:
        """Send the block at ``index``, with only the tasks it needs, to ``client``: its future.

        Tasks shared with a block still in flight are reused; those of a block already
        written are computed again (edge reads: ~5 % more tasks for a 40 000² predict).
        """
        key = self._key(index)
        graph, _ = cull(self._dsk, [key])
        return client.get(graph, [key], sync=False)[0]


def _window(client: Any) -> int:
    """Blocks in flight at most: :data:`BLOCKS_PER_THREAD` x the cluster's worker threads."""
    return BLOCKS_PER_THREAD * max(1, sum(client.nthreads().values()))


def _store_distributed(
    arr: da.Array,
    sink: Sink,
    client: Any,
    progress: Progress | None,
    index: list[tuple[int, ...]],
) -> None:
    """Compute the blocks ``index`` of ``arr`` on ``client``, :func:`_window` at a time.

    Each finished block is written (in the order they finish) and released, then the
    next one is submitted: neither the results waiting for the single writer nor the
    scheduler's task state grow with the number of blocks.
    """
    from distributed import as_completed

    graphs = _BlockGraphs(arr, index)
    todo = iter(index)
    where: dict[Any, tuple[slice, ...]] = {}  # future key -> the region of its block
    running = as_completed(with_results=True)
    records = sink if isinstance(sink, RecordSink) else None

    def submit_next() -> None:
        i = next(todo, None)
        if i is not None:
            future = graphs.submit(client, i)
            if records is not None:
                future = client.submit(records.encode, future, key=f"encode-{future.key}")
            where[future.key] = block_slices(arr, i)
            running.add(future)

    for _ in range(_window(client)):
        submit_next()
    for done, (future, result) in enumerate(running, start=1):
        if records is not None:
            records.put(where.pop(future.key), result)
        else:
            sink[where.pop(future.key)] = result
        future.release()
        submit_next()
        if progress:
            progress(done, len(index))


def _store_local(
    arr: da.Array,
    sink: Sink,
    scheduler: str,
    workers: int | None,
    progress: Progress | None,
    index: list[tuple[int, ...]],
) -> None:
    """Compute the blocks ``index`` of ``arr`` in this process, in row-major order.

    Their inputs are read at most :data:`BLOCKS_PER_THREAD` x threads blocks ahead of
    the writes (see :mod:`geoseg.tiling.readahead`); each block is written in the
    thread that computed it.
    """
    threads = 1 if scheduler == "sync" else workers or dask.system.CPU_COUNT

    def write(i: tuple[int, ...], block: np.ndarray) -> None:
        sink[block_slices(arr, i)] = block

    dsk, keys = ordered_store_graph(arr, index, write, BLOCKS_PER_THREAD * threads)
    cb = _TaskProgress(progress) if progress else contextlib.nullcontext()
    with cb:
        if scheduler == "sync":
            dask.local.get_sync(dsk, keys)
        else:
            dask.threaded.get(dsk, keys, num_workers=threads)


def store_blocks(
    arr: da.Array,
    sink: Sink,
    scheduler: str = "threads",
    workers: int | None = None,
    progress: Progress | None = None,
    skip: Callable[[tuple[slice, ...]], bool] | None = None,
) -> None:
    """Compute ``arr`` block by block and write each block with ``sink[slices] = block``.

    Memory is bounded by the blocks in flight, never the whole array.

    Args:
        arr: the lazy result.
        sink: where blocks go.
        scheduler: ``threads``, ``sync``, ``local`` or ``tcp://host:port``.
        workers: threads or worker processes.
        progress: ``progress(done, total)`` callback.
        skip: ``skip(slices)`` True for blocks already done (they are not computed).
    """
    index = list(np.ndindex(arr.numblocks))
    if skip is not None:
        index = [i for i in index if not skip(block_slices(arr, i))]
    if not index:
        return
    if scheduler in ("threads", "sync"):
        _store_local(arr, sink, scheduler, workers, progress, index)
        return
    with dask_client(scheduler, workers) as client:
        _store_distributed(arr, sink, client, progress, index)
