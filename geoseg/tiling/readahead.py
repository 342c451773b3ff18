"""A store graph for dask's local schedulers that works in row-major order, reading ahead a little.

dask's threads scheduler starts any task whose inputs are ready, and a chunk read has
none, so a free thread reads the next chunk rather than wait for the model: an
8 000² ``predict`` read about 2.8 chunk rows ahead of the model, so the chunks held
grew with the scene's width (peak RSS 1.34x from 2 000² to 8 000²).

:func:`ordered_store_graph` writes each block with a task of its own and makes every
task that block ``n`` (row-major) is the first to need wait until blocks ``0`` to
``n - lookahead`` are written (dask may finish blocks out of order, so waiting for
block ``n - lookahead`` alone bounds nothing). A block's inputs are then read at
most ``lookahead`` blocks before they are needed. It cannot deadlock: a task waits
only for blocks earlier than the first one that needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np
from dask._task_spec import GraphNode, Task, TaskRef, convert_legacy_graph
from dask.typing import Key

__all__ = ["ordered_store_graph"]

#: ``write(index, block)``: stores the block at ``index`` of the array.
Write = Callable[[tuple[int, ...], np.ndarray], None]


def _after(_written: None, value: Any) -> Any:
    """``value``, once the blocks it waited for (the first argument) are written."""
    return value


def _all_written(_block: None, _earlier: None = None) -> None:
    """Done once a block and (``_earlier``) every block before it are written."""


def _first_needed(dsk: dict[Key, GraphNode], keys: Sequence[Key]) -> dict[Key, int]:
    """For each task of ``dsk``, the position in ``keys`` of the first output needing it."""
    first: dict[Key, int] = {}
    for n, key in enumerate(keys):
        stack = [key]
        while stack:
            k = stack.pop()
            if k not in first:
                first[k] = n
                stack.extend(d for d in dsk[k].dependencies if d not in first)
    return first


def ordered_store_graph(
    arr: da.Array, index: Sequence[tuple[int, ...]], write: Write, lookahead: int
) -> tuple[dict[Key, GraphNode], list[Key]]:
    """The graph that computes the blocks ``index`` of ``arr`` and passes each to ``write``.

    Args:
        arr: the lazy result.
        index: its blocks to compute, in the order they should be written (row-major).
        write: called in the task thread with each block's index and ``ndarray``.
        lookahead: blocks whose inputs may be read before the earliest unwritten one
            is written (at least 1).

    Returns:
        The graph and its keys to compute (one write task per block; their results are None).
    """
    outputs = [(arr.name, *i) for i in index]
    graph = convert_legacy_graph(dict(arr.__dask_optimize__(arr.__dask_graph__(), outputs)))
    first = _first_needed(graph, outputs)
    dsk = {key: graph[key] for key in first}  # optimizing may leave tasks no block needs
    stores: list[Key] = [("geoseg-write", arr.name, *i) for i in index]
    written: list[Key] = [("geoseg-written", arr.name, *i) for i in index]
    for key, node in list(dsk.items()):
        n = first[key]
        # a task needed first by block n whose inputs all came earlier starts block n's
        # new work; everything that depends on it waits with it
        if n >= lookahead and all(first[d] < n for d in node.dependencies):
            dsk[key] = Task(key, _after, TaskRef(written[n - lookahead]), node)
    for n, (i, out) in enumerate(zip(index, outputs, strict=True)):
        dsk[stores[n]] = Task(stores[n], write, i, TaskRef(out))
        earlier = [TaskRef(written[n - 1])] if n else []
        dsk[written[n]] = Task(written[n], _all_written, TaskRef(stores[n]), *earlier)
    return dsk, stores
