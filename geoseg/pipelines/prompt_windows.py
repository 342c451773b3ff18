"""Which window of the scene each prompt is encoded in, and reading those windows.

SAM encodes a square of ``S x S`` px (``S``: the encoder's input side, 1024 for
SAM). Each prompt needs its box plus context (:data:`CONTEXT` of the box's
side on each side; points get :data:`POINT_CONTEXT` ``x S`` around them). The
windows come from fixed grids anchored at the scene origin, one per level ``k``:
side ``S * 2**k`` native px, stride a quarter of the side, read decimated by
``2**k`` to ``S x S`` (GDAL's average resampling, from overviews where the file
has them). A prompt goes to the lowest level whose windows can hold its extent
(at most three quarters of the side); among the windows there that hold it, the
one holding the most prompts is taken first (a greedy cover), and every prompt
it holds is encoded with it: a window is read and encoded once for all its prompts.
:func:`read_groups` reads the next group of windows in a thread while the caller
encodes the current one (GDAL reads release the GIL).
"""

from __future__ import annotations

import contextvars
import heapq
import math
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window

from geoseg.pipelines.prompt_inputs import Prompt

__all__ = [
    "CONTEXT", "POINT_CONTEXT", "PromptWindow", "candidate_windows", "plan_windows", "read_groups",
    "read_window", "scene_valid",
]  # fmt: skip

#: Context read around a box, as a share of its width/height on each side.
CONTEXT = 0.25
#: Context read around a point prompt's points, as a share of ``S`` on each side.
POINT_CONTEXT = 0.25
#: A window holds an extent up to this share of its side (the grid's stride is a quarter).
_FILL = 0.75


@dataclass(frozen=True, order=True)
class PromptWindow:
    """One window of the prompt grid, in native scene px.

    Attributes:
        level: ``k``: the window is read decimated by ``2**k``.
        row0, col0: its top-left pixel (may be outside the scene: read as nodata).
        side: its side in native px, ``S * 2**k``.
    """

    level: int
    row0: int
    col0: int
    side: int

    @property
    def factor(self) -> int:
        """Native px per encoder input px."""
        return 1 << self.level

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """``(..., 2)`` scene pixel ``(x, y)`` -> encoder input px."""
        return (np.asarray(xy, np.float64) - (self.col0, self.row0)) / self.factor


def _extent(prompt: Prompt, size: int) -> tuple[float, float, float, float]:
    """The scene px ``(x0, y0, x1, y1)`` a prompt needs: its box or points plus context."""
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        dx, dy = CONTEXT * (x1 - x0), CONTEXT * (y1 - y0)
    else:
        (x0, y0), (x1, y1) = prompt.points.min(axis=0), prompt.points.max(axis=0)
        dx = dy = POINT_CONTEXT * size
    return x0 - dx, y0 - dy, x1 + dx, y1 + dy


def _origins(lo: float, hi: float, side: int) -> range:
    """Origins (multiples of ``side / 4``) along one axis of the windows holding ``[lo, hi]``."""
    stride = side // 4
    first = math.ceil((hi - side) / stride)  # the window must reach hi ...
    last = max(first, math.floor(lo / stride))  # ... and start at or before lo
    return range(first * stride, last * stride + 1, stride)


def candidate_windows(prompt: Prompt, size: int) -> list[PromptWindow]:
    """The grid windows that can hold ``prompt``'s extent, on the lowest level that can."""
    x0, y0, x1, y1 = _extent(prompt, size)
    need = max(x1 - x0, y1 - y0, 1.0)
    level = max(0, math.ceil(math.log2(need / (_FILL * size))))
    side = size << level
    return [PromptWindow(level, r, c, side)
            for r in _origins(y0, y1, side) for c in _origins(x0, x1, side)]  # fmt: skip


def plan_windows(prompts: Sequence[Prompt], size: int) -> dict[PromptWindow, list[int]]:
    """Window -> indices of the prompts encoded in it, windows in grid order.

    Greedy cover: the window that can hold the most prompts not yet placed is taken
    first (ties: grid order), so prompts near each other share one encoding.
    """
    holds: dict[PromptWindow, set[int]] = {}
    for i, prompt in enumerate(prompts):
        for window in candidate_windows(prompt, size):
            holds.setdefault(window, set()).add(i)
    heap = [(-len(members), window) for window, members in holds.items()]
    heapq.heapify(heap)
    placed: set[int] = set()
    plan: dict[PromptWindow, list[int]] = {}
    while heap and len(placed) < len(prompts):
        count, window = heapq.heappop(heap)
        left = holds[window] - placed
        if len(left) < -count:  # stale: others took some of its prompts
            if left:
                heapq.heappush(heap, (-len(left), window))
            continue
        plan[window] = sorted(left)
        placed |= left
    return dict(sorted(plan.items()))


def read_window(
    src: Any, bands: Sequence[int], window: PromptWindow, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The window's pixels at the encoder's input size.

    Args:
        src: the open scene (rasterio dataset).
        bands: 1-based band indexes, in the model's input order.
        window: the window; parts outside the scene read as nodata.
        size: ``S``.

    Returns:
        ``(C, S, S)`` values in the scene's dtype (0 outside) and ``(S, S) bool``
        validity (False outside the scene, on nodata in any of ``bands`` and on
        non-finite values).
    """
    win = Window(window.col0, window.row0, window.side, window.side)
    resampling = Resampling.average if window.level else Resampling.nearest
    # a boundless read goes through a VRT (several times slower): only where needed
    inside = _inside(src, window, size)
    boundless = (
        window.row0 < 0 or window.col0 < 0
        or window.row0 + window.side > src.height or window.col0 + window.side > src.width
    )  # fmt: skip
    data = src.read(
        list(bands), window=win, out_shape=(len(bands), size, size), boundless=boundless,
        fill_value=0, resampling=resampling,
    )  # fmt: skip
    valid = inside & scene_valid(src, win, (size, size), boundless, bands)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    return data, valid


def read_groups(
    src: Any, bands: Sequence[int], groups: Sequence[Sequence[PromptWindow]], size: int,
    after_first: Callable[[], object] | None = None,
) -> Generator[list[tuple[np.ndarray, np.ndarray]], None, None]:  # fmt: skip
    """:func:`read_window` of each window of each group, one list per group, in order.

    The next group is read in a worker thread while the caller works on the one
    yielded (GDAL reads release the GIL), so reading overlaps encoding. Only that
    thread reads ``src`` until the generator ends: the caller must not use ``src``
    meanwhile (a GDAL dataset is not safe to use from two threads at once). A read's
    error is raised where its group would have been yielded; closing the generator
    early waits for the read in flight.

    Args:
        after_first: run on the reading thread right after the first group's read, while
            the caller encodes that group (e.g. a sample of the scene through ``src``,
            whose blocks the later reads then find in GDAL's block cache; run first, it
            held back the encoder's start); its error is raised where the second group
            would have been yielded (after the only group: when the generator ends).
    """

    def read(group: Sequence[PromptWindow]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [read_window(src, bands, w, size) for w in group]

    if not groups:
        if after_first is not None:
            after_first()
        return
    pool = ThreadPoolExecutor(1, thread_name_prefix="geoseg-read")
    try:
        ahead: Future[list[tuple[np.ndarray, np.ndarray]]] = pool.submit(read, groups[0])
        # queued behind the first read (one worker: never two reads of src at once)
        # in this context: what it writes belongs to the output run in progress
        after = (
            None
            if after_first is None
            else pool.submit(contextvars.copy_context().run, after_first)
        )
        for k in range(len(groups)):
            current = ahead
            if k + 1 < len(groups):
                ahead = pool.submit(read, groups[k + 1])
            if k == 1 and after is not None:
                after.result()
            yield current.result()
        if after is not None:
            after.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def scene_valid(
    src: Any, win: Window, shape: tuple[int, int] | None = None, boundless: bool = False,
    bands: Sequence[int] | None = None,
) -> np.ndarray:  # fmt: skip
    """``(h, w) bool`` (``shape``, else the window's): where the scene holds data on ``win``
    in every one of ``bands`` (1-based; None: every band), the rule of
    :mod:`geoseg.io.nodata`: GDAL's per-band masks, all valid.

    A scene whose bands declare no nodata and no mask (GDAL's ``all_valid``) is
    valid everywhere inside it, and no mask is read (~0.5 ms a read); one with an
    internal mask or alpha band has one mask for every band, read once.
    """
    indexes = list(bands) if bands is not None else list(range(1, src.count + 1))
    flags = [src.mask_flag_enums[i - 1] for i in indexes]
    if not boundless and all(MaskFlags.all_valid in f for f in flags):
        return np.ones(shape or (int(win.height), int(win.width)), bool)
    if all(MaskFlags.per_dataset in f for f in flags):
        return np.asarray(src.dataset_mask(window=win, out_shape=shape, boundless=boundless) > 0)
    masks = src.read_masks(
        indexes, window=win, boundless=boundless,
        out_shape=None if shape is None else (len(indexes), *shape),
    )  # fmt: skip
    return np.asarray((masks > 0).all(axis=0))


def _inside(src: Any, window: PromptWindow, size: int) -> np.ndarray:
    """``(S, S) bool``: input px whose native block lies in the scene."""
    f = window.factor
    rows = window.row0 + f * np.arange(size)
    cols = window.col0 + f * np.arange(size)
    return ((rows >= 0) & (rows < src.height))[:, None] & ((cols >= 0) & (cols < src.width))


def scene_rasterio(path: str) -> Any:
    """The scene opened for windowed reads (the caller closes it)."""
    return rasterio.open(path)
