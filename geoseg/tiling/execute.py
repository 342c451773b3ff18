"""Run a lazy result on a Dask scheduler and stream its blocks into a sink.

``scheduler`` is ``"threads"`` (default, this process), ``"sync"`` (one thread,
for debugging), ``"local"`` (a ``dask.distributed.LocalCluster`` of worker
processes), ``"cuda"`` (a ``dask_cuda.LocalCUDACluster``, one worker per GPU) or the
``tcp://host:port`` address of an existing cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import dask
import dask.array as da
import numpy as np
from dask.callbacks import Callback

from geoseg.errors import GeosegError

__all__ = ["Progress", "Sink", "block_slices", "dask_client", "store_blocks"]

#: ``progress(done, total)``, called as tasks finish.
Progress = Callable[[int, int], None]


class Sink(Protocol):
    """Where computed blocks go: ``sink[(slice, ...)] = block``."""

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None: ...


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
        gpu_cluster = LocalCUDACluster(n_workers=workers, dashboard_address=":0")
        with gpu_cluster, Client(gpu_cluster) as client:
            yield client
    elif address.startswith("tcp://"):
        with Client(address, timeout="30s") as client:
            yield client
    else:
        raise GeosegError(
            f"unknown scheduler {address!r}; use threads, sync, local, cuda or tcp://host:port"
        )


def block_slices(arr: da.Array, index: tuple[int, ...]) -> tuple[slice, ...]:
    """The region of ``arr`` covered by its block at ``index``."""
    out = []
    for axis, i in enumerate(index):
        start = int(sum(arr.chunks[axis][:i]))
        out.append(slice(start, start + arr.chunks[axis][i]))
    return tuple(out)


def _store_distributed(
    arr: da.Array,
    sink: Sink,
    client: Any,
    progress: Progress | None,
    index: list[tuple[int, ...]],
) -> None:
    from distributed import as_completed

    blocks = arr.to_delayed()
    futures = client.compute([blocks[i] for i in index])
    where = {f.key: block_slices(arr, i) for f, i in zip(futures, index, strict=True)}
    for done, (future, block) in enumerate(as_completed(futures, with_results=True), start=1):
        sink[where[future.key]] = block
        future.release()
        if progress:
            progress(done, len(index))


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
        cb = _TaskProgress(progress) if progress else contextlib.nullcontext()
        with cb, dask.config.set(scheduler=scheduler, num_workers=workers):
            if len(index) == np.prod(arr.numblocks):
                da.store(arr, sink, lock=False)  # type: ignore[arg-type]
            else:  # only the missing blocks; their graphs share the reads they need
                sources = [arr.blocks[i] for i in index]
                regions = [block_slices(arr, i) for i in index]
                targets: list[Any] = [sink] * len(index)
                da.store(sources, targets, lock=False, regions=regions)
        return
    with dask_client(scheduler, workers) as client:
        _store_distributed(arr, sink, client, progress, index)
