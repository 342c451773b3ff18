"""Tiled instance segmentation of a whole scene with scene-unique ids.

Pass 1 has two kinds of dask tasks per chunk. The *window* task runs, once, each
window of the global grid whose core lies in the chunk core (halo ``m``, like
semantic inference) and keeps the instances each window owns
(:func:`~geoseg.stitching.fragments.owned_fragments`) as sparse fragments. The
*assemble* task takes the fragments of the chunk and its eight neighbours, keeps
those of windows whose extent reaches its core (a neighbour's fragment may spill
``m`` px across the seam), paints them (higher score wins a pixel, then the lower
fragment key) and finds the merge edges between fragments of overlapping
windows. It streams ``uint32`` local ids into a staging sink and returns a small
:class:`~geoseg.stitching.ids.ChunkTable`. The client joins the tables
(:func:`~geoseg.stitching.ids.resolve_ids`) and pass 2 (:func:`relabel_blocks`)
rewrites the staged blocks to scene ids.

Every decision is taken per window or per pair of windows, and each window runs
exactly once, so the result does not depend on the chunk size, worker count or
scheduler, and no model call is repeated.
"""

from __future__ import annotations

import functools
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import dask
import dask.array as da
import numpy as np

from geoseg.errors import GeosegError
from geoseg.stitching.fragments import Fragment, merge_edges, owned_fragments, paste_fragments
from geoseg.stitching.ids import ChunkTable, InstanceIds, resolve_ids
from geoseg.stitching.protocol import InstancePredictor, SemanticInstancePredictor
from geoseg.tiling.execute import Progress, Sink, dask_client
from geoseg.tiling.grid import chunk_starts, windows_touching
from geoseg.tiling.infer import reflect_pad
from geoseg.types import NODATA_LABEL, TileSpec

__all__ = ["ChunkPlan", "InstanceLoader", "plan_chunks", "relabel_blocks", "stitch_instances"]

InstanceLoader = Callable[[], InstancePredictor]


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk: its core in the scene and the windows it runs.

    Attributes:
        index: ``(row, col)`` of the chunk among the chunks.
        core: ``(y0, y1, x0, x1)`` scene pixels the chunk writes.
        rows, cols: grid indices of the windows whose extent reaches the core.
        own_rows, own_cols: grid indices of the windows whose core is in the core
            (the windows this chunk runs).
    """

    index: tuple[int, int]
    core: tuple[int, int, int, int]
    rows: range
    cols: range
    own_rows: range
    own_cols: range

    @property
    def origin(self) -> tuple[int, int]:
        return self.core[0], self.core[2]

    @property
    def slices(self) -> tuple[slice, slice]:
        y0, y1, x0, x1 = self.core
        return slice(y0, y1), slice(x0, x1)


def plan_chunks(height: int, width: int, spec: TileSpec) -> list[ChunkPlan]:
    """The chunks of a ``height x width`` scene in row-major order."""
    if spec.margin < 1:
        raise GeosegError("instance stitching needs a margin of at least 1 px (--margin)")
    if spec.blend != "trim":
        raise GeosegError("instance stitching uses trim windows; drop --blend hann")
    ys, xs = chunk_starts(height, spec), chunk_starts(width, spec)
    reach = replace(spec, blend="hann")  # windows whose whole extent reaches a range
    ny, nx = ys[-1] // spec.stride, xs[-1] // spec.stride
    plans = []
    for (p, (y0, y1)), (q, (x0, x1)) in itertools.product(
        enumerate(itertools.pairwise(ys)), enumerate(itertools.pairwise(xs))
    ):
        plan = ChunkPlan(
            (p, q), (y0, min(y1, height), x0, min(x1, width)),
            windows_touching(y0, y1, ny, reach), windows_touching(x0, x1, nx, reach),
            windows_touching(y0, y1, ny, spec), windows_touching(x0, x1, nx, spec),
        )  # fmt: skip
        plans.append(plan)
    return plans


def _window_fragments(
    block: np.ndarray,
    vblock: np.ndarray,
    *,
    rows: range,
    cols: range,
    spec: TileSpec,
    load: InstanceLoader,
    windows_per_row: int,
    lut: np.ndarray | None = None,
) -> tuple[list[Fragment], np.ndarray | None]:
    """Owned fragments, in scene coordinates, of the windows ``rows x cols`` [and their labels].

    ``block`` ``(C, hb, wb)`` and ``vblock`` ``(hb, wb)`` start at scene pixel
    ``(rows[0] * S - m, cols[0] * S - m)`` of the reflect-padded scene. Windows
    whose core has no valid pixel are not run. With ``lut`` (class id of each
    semantic channel) the same forward passes also give the semantic labels of the
    window cores, ``(len(rows) * S, len(cols) * S) uint8`` from scene pixel
    ``(rows[0] * S, cols[0] * S)``, 255 on nodata: what
    :func:`~geoseg.tiling.infer.predict_blocks` computes with trim windows.
    """
    s, m, w = spec.stride, spec.margin, spec.window
    vblock = np.asarray(vblock, dtype=bool)
    oy, ox = rows[0] * s - m, cols[0] * s - m
    wins = [(i, j, (i - rows[0]) * s, (j - cols[0]) * s) for i in rows for j in cols]
    wins = [t for t in wins if vblock[t[2] + m : t[2] + m + s, t[3] + m : t[3] + m + s].any()]
    fragments: list[Fragment] = []
    labels = None
    if lut is not None:
        labels = np.full((len(rows) * s, len(cols) * s), NODATA_LABEL, np.uint8)
    for k in range(0, len(wins), spec.batch_size):
        part = wins[k : k + spec.batch_size]
        x = np.stack([block[:, r : r + w, c : c + w] for _, _, r, c in part]).astype(np.float32)
        v = np.stack([vblock[r : r + w, c : c + w] for _, _, r, c in part])
        if labels is None or lut is None:
            found = load().predict_instances(x, v)
        else:
            found, channels = _semantic_model(load).predict_with_semantic(x, v)
            _paste_labels(labels, channels, v, [(r, c) for _, _, r, c in part], lut, m, s)
        for (i, j, r, c), f, vw in zip(part, found, v, strict=True):
            fragments.extend(owned_fragments(f, vw, i * windows_per_row + j, oy + r, ox + c, m))
    return fragments, labels


def _semantic_model(load: InstanceLoader) -> SemanticInstancePredictor:
    model = load()
    if not isinstance(model, SemanticInstancePredictor):
        raise GeosegError(f"{type(model).__name__} gives no semantic labels with its instances")
    return model


def _paste_labels(
    labels: np.ndarray, channels: np.ndarray, valid: np.ndarray, at: list[tuple[int, int]],
    lut: np.ndarray, m: int, s: int,
) -> None:  # fmt: skip
    """Write the class ids of each window core (``lut[channel]``, 255 on nodata) at ``at``."""
    for (r, c), ch, v in zip(at, channels, valid, strict=True):
        core = (slice(m, m + s), slice(m, m + s))
        labels[r : r + s, c : c + s] = np.where(v[core], lut[ch[core]], NODATA_LABEL)


def _assemble_chunk(
    valid: np.ndarray,
    *groups: list[Fragment],
    plan: ChunkPlan,
    windows_per_row: int,
    min_iou: float,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, ChunkTable, np.ndarray | None, np.ndarray]:
    """Local ids ``(h, w) uint32`` of one chunk core, its table, [its semantic labels]
    and its valid mask (handed on, so pass 2 need not read the scene again).

    ``groups`` are the fragments of the chunk and its neighbours; ``valid`` is the
    core's ``(h, w) bool`` valid mask; ``labels`` the semantic labels of the chunk's
    own windows (:func:`_window_fragments`), cut here to the core ``(h, w) uint8``.
    """
    fragments = [
        f
        for group in groups
        for f in group
        if (cell := divmod(f.key >> 16, windows_per_row))[0] in plan.rows and cell[1] in plan.cols
    ]
    valid = np.asarray(valid, dtype=bool)
    local, present = paste_fragments(fragments, plan.core, valid)
    edges = merge_edges(fragments, min_iou)
    table = ChunkTable(
        origin=plan.origin,
        keys=np.array([f.key for f in present], dtype=np.uint64),
        classes=np.array([f.class_id for f in present], dtype=np.int64),
        edges=np.array(edges, dtype=np.uint64).reshape(-1, 2),
        scores=np.array([f.score for f in present], dtype=np.float32),
    )
    if labels is not None:
        labels = labels[: local.shape[0], : local.shape[1]]
    return local, table, labels, valid


def _chunk_tasks(
    data: da.Array, valid: da.Array, load: InstanceLoader, spec: TileSpec, min_iou: float,
    lut: np.ndarray | None = None,
) -> Iterator[tuple[ChunkPlan, Any]]:  # fmt: skip
    """One delayed :func:`_assemble_chunk` call per chunk (on the window tasks it needs)."""
    _, h, w = data.shape
    s, m = spec.stride, spec.margin
    ys, xs = chunk_starts(h, spec), chunk_starts(w, spec)
    padded = reflect_pad(reflect_pad(data, 1, m, ys[-1] - h + m), 2, m, xs[-1] - w + m)
    vpad = reflect_pad(reflect_pad(valid, 0, m, ys[-1] - h + m), 1, m, xs[-1] - w + m)
    nx = xs[-1] // s
    plans = plan_chunks(h, w, spec)
    runs, labels = {}, {}
    # named keys: tokenizing each task's function (cloudpickle of the model loader) cost
    # more than a small scene's stitching
    name = uuid.uuid4().hex
    for plan in plans:
        (p, q), rows, cols = plan.index, plan.own_rows, plan.own_cols
        rs = slice(rows[0] * s, rows[-1] * s + s + 2 * m)
        cs = slice(cols[0] * s, cols[-1] * s + s + 2 * m)
        run = functools.partial(_window_fragments, rows=rows, cols=cols, spec=spec, load=load,
                                windows_per_row=nx, lut=lut)  # fmt: skip
        # two outputs: the labels are released once their own chunk has them, while the
        # fragments wait for the eight neighbours too
        task = dask.delayed(run, nout=2)(
            padded[:, rs, cs], vpad[rs, cs], dask_key_name=f"geoseg-windows-{name}-{p}-{q}"
        )
        runs[plan.index], labels[plan.index] = task
    for plan in plans:
        p, q = plan.index
        near = [
            runs[k] for k in itertools.product((p - 1, p, p + 1), (q - 1, q, q + 1)) if k in runs
        ]
        assemble = functools.partial(
            _assemble_chunk, plan=plan, windows_per_row=nx, min_iou=min_iou
        )
        own = labels[plan.index]
        key = f"geoseg-assemble-{name}-{p}-{q}"
        yield plan, dask.delayed(assemble)(valid[plan.slices], *near, labels=own, dask_key_name=key)


def stitch_instances(
    data: da.Array,
    valid: da.Array,
    load: InstanceLoader,
    spec: TileSpec,
    stage: Sink,
    scheduler: str = "threads",
    workers: int | None = None,
    progress: Progress | None = None,
    min_iou: float = 0.5,
    semantic: Sink | None = None,
    valid_sink: Sink | None = None,
) -> InstanceIds:
    """Pass 1: run the instance model over a scene, staging per-chunk local ids.

    Args:
        data: ``(C, H, W)`` dask array of band values.
        valid: ``(H, W) bool`` dask array, False where the scene has no data.
        load: picklable callable returning the :class:`InstancePredictor`; called in
            each chunk task, it must cache per process.
        spec: window grid (trim, margin >= 1).
        stage: ``stage[(ys, xs)] = (h, w) uint32`` local ids of each chunk.
        scheduler: ``threads``, ``sync``, ``local`` or ``tcp://host:port``.
        workers: threads or worker processes.
        progress: ``progress(done, total)`` called as chunks finish.
        min_iou: IoU, over the pixels two windows share, that joins two fragments.
        semantic: also ``semantic[(ys, xs)] = (h, w) uint8`` class ids of the model's
            semantic head (255 = nodata), from the same forward passes as the
            instances; the model must be a :class:`SemanticInstancePredictor`. The
            labels equal :func:`~geoseg.tiling.infer.predict_blocks` with this ``spec``.
        valid_sink: also ``valid_sink[(ys, xs)] = (h, w) bool`` the scene's valid mask of
            each chunk, as read for the model (pass 2 masks the output with it).

    Returns:
        The lookup from each chunk's local ids to scene ids; apply it with
        :func:`relabel_blocks`.
    """
    if not 0 < min_iou <= 1:
        raise GeosegError(f"min_iou must be in (0, 1], got {min_iou}")
    lut = None if semantic is None else np.asarray(_semantic_model(load).schema.ids, np.uint8)
    tasks = list(_chunk_tasks(data, valid, load, spec, min_iou, lut))
    lock, done = threading.Lock(), [0]

    def deliver(plan: ChunkPlan, result: tuple[np.ndarray, ChunkTable, Any, Any]) -> ChunkTable:
        stage[plan.slices] = result[0]
        if semantic is not None:
            semantic[plan.slices] = result[2]
        if valid_sink is not None:
            valid_sink[plan.slices] = result[3]
        with lock:
            done[0] += 1
            if progress:
                progress(done[0], len(tasks))
        return result[1]

    if scheduler in ("threads", "sync"):
        wrapped = [dask.delayed(functools.partial(deliver, p), pure=False)(t) for p, t in tasks]
        with dask.config.set(scheduler=scheduler, num_workers=workers):
            tables = list(dask.compute(*wrapped))
        return resolve_ids(tables)
    from distributed import as_completed

    with dask_client(scheduler, workers) as client:
        futures = client.compute([t for _, t in tasks])
        plans = {f.key: p for f, (p, _) in zip(futures, tasks, strict=True)}
        tables = []
        for future, result in as_completed(futures, with_results=True):
            tables.append(deliver(plans[future.key], result))
            future.release()
    return resolve_ids(tables)


def relabel_blocks(
    plans: list[ChunkPlan],
    read_stage: Callable[[tuple[slice, slice]], np.ndarray],
    ids: InstanceIds,
    sink: Sink,
) -> None:
    """Pass 2: ``sink[(band, ys, xs)] = (2, h, w) uint32`` scene ids and classes, per chunk."""
    for plan in plans:
        block = ids.relabel(plan.origin, np.asarray(read_stage(plan.slices)))
        sink[(slice(0, 2), *plan.slices)] = block
