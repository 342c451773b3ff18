"""Per-window instances -> owned fragments, seam merge edges and a pasted chunk.

A *fragment* is one instance of one window that the window owns: the centre of
its bounding box (``floor((min + max) / 2)`` per axis, inclusive max, after
masking nodata) lies in the window's core ``[m, m + S)²``. The rule depends only
on the window, so every chunk that runs a window keeps the same fragments. An
object larger than what a window sees is owned, piecewise, by several windows;
their fragments overlap in the ``2m``-wide bands where window extents overlap,
and :func:`merge_edges` joins them there.

A fragment's *key* names it across the scene, whatever the chunking:
``(window_row * windows_per_row + window_col) << 16 | (index + 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import GeosegError
from geoseg.stitching.protocol import WindowInstances

__all__ = ["Fragment", "fragment_key", "merge_edges", "owned_fragments", "paste_fragments"]

#: Instances one window may report (the low 16 bits of a fragment key).
MAX_PER_WINDOW = (1 << 16) - 1


@dataclass(frozen=True, eq=False)
class Fragment:
    """An owned instance of one window, in the coordinates of the chunk's data block.

    Attributes:
        key: scene-wide name of the fragment (see the module docstring).
        class_id: class of the instance.
        score: detection score; the higher score wins a pixel two fragments claim.
        top, left: block coordinates of ``mask[0, 0]``.
        mask: ``(h, w) bool`` the instance cropped to its bounding box.
        window: ``(top, left, size)`` of the window's extent in block coordinates.
    """

    key: int
    class_id: int
    score: float
    top: int
    left: int
    mask: np.ndarray
    window: tuple[int, int, int]

    @property
    def bottom(self) -> int:
        return self.top + self.mask.shape[0]

    @property
    def right(self) -> int:
        return self.left + self.mask.shape[1]


def fragment_key(window_index: int, instance: int) -> int:
    """Scene-wide key of instance ``instance`` (0-based) of window ``window_index``."""
    if instance >= MAX_PER_WINDOW:
        raise GeosegError(
            f"a window reported more than {MAX_PER_WINDOW} instances; use a smaller window"
        )
    return (window_index << 16) | (instance + 1)


def owned_fragments(
    found: WindowInstances,
    valid: np.ndarray,
    window_index: int,
    top: int,
    left: int,
    margin: int,
) -> list[Fragment]:
    """The instances of one window whose bounding-box centre lies in its core.

    Args:
        found: the window's ``(masks, classes, scores)``.
        valid: ``(W, W) bool`` the window's valid pixels; masks are cut to them.
        window_index: ``row * windows_per_row + col`` of the window in the grid.
        top, left: block coordinates of the window's top-left pixel.
        margin: ``m``; the core is ``[m, W - m)`` on both axes.
    """
    masks, classes, scores = found
    size = valid.shape[0]
    out = []
    for k in range(len(masks)):
        mask = np.asarray(masks[k], dtype=bool) & valid
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if rows.size == 0:
            continue
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        cy, cx = (r0 + r1) // 2, (c0 + c1) // 2
        if not (margin <= cy < size - margin and margin <= cx < size - margin):
            continue
        frag = Fragment(
            key=fragment_key(window_index, k), class_id=int(classes[k]),
            score=float(scores[k]), top=top + r0, left=left + c0,
            mask=mask[r0 : r1 + 1, c0 : c1 + 1], window=(top, left, size),
        )  # fmt: skip
        out.append(frag)
    return out


def _crop(f: Fragment, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``f``'s mask over the block box ``[y0, y1) x [x0, x1)`` (False outside ``f``)."""
    out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    a0, a1 = max(y0, f.top), min(y1, f.bottom)
    b0, b1 = max(x0, f.left), min(x1, f.right)
    if a0 < a1 and b0 < b1:
        out[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] = f.mask[
            a0 - f.top : a1 - f.top, b0 - f.left : b1 - f.left
        ]
    return out


def _shared_box(a: Fragment, b: Fragment) -> tuple[int, int, int, int] | None:
    """Where the two fragments' windows overlap, cut to both bounding boxes' union."""
    (ta, la, sa), (tb, lb, sb) = a.window, b.window
    y0, y1 = max(ta, tb), min(ta + sa, tb + sb)
    x0, x1 = max(la, lb), min(la + sa, lb + sb)
    y0, y1 = max(y0, min(a.top, b.top)), min(y1, max(a.bottom, b.bottom))
    x0, x1 = max(x0, min(a.left, b.left)), min(x1, max(a.right, b.right))
    return (y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None


def merge_edges(fragments: Sequence[Fragment], min_iou: float) -> list[tuple[int, int]]:
    """Pairs of keys of fragments that are one object seen by two windows.

    Two fragments of different windows and the same class are one object when,
    over the pixels both windows see, their masks overlap with IoU >= ``min_iou``
    (an object seen whole by both windows has IoU 1 there). The test looks only at
    the two windows' shared pixels, so it does not depend on the chunking.
    """
    by_window: dict[tuple[int, int, int], list[Fragment]] = {}
    for f in fragments:
        by_window.setdefault(f.window, []).append(f)
    windows = sorted(by_window)
    edges = []
    for i, wa in enumerate(windows):
        for wb in windows[i + 1 :]:
            if abs(wa[0] - wb[0]) >= wa[2] or abs(wa[1] - wb[1]) >= wa[2]:
                continue  # the two windows share no pixel
            fa, fb = by_window[wa], by_window[wb]
            for i, j in _candidates(fa, fb):
                a, b = fa[i], fb[j]
                box = _shared_box(a, b)
                iou = 0.0 if box is None else _iou(_crop(a, *box), _crop(b, *box))
                if iou > 0 and iou >= min_iou:
                    edges.append((a.key, b.key))
    return edges


def _candidates(fa: Sequence[Fragment], fb: Sequence[Fragment]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, in row-major order, of fragments of the same class whose
    bounding boxes meet: a pairwise test in numpy instead of one Python call per pair."""
    if not fa or not fb:
        return []
    a, b = _boxes(fa), _boxes(fb)
    meet = (a[:, None, 0] < b[None, :, 1]) & (b[None, :, 0] < a[:, None, 1])
    meet &= (a[:, None, 2] < b[None, :, 3]) & (b[None, :, 2] < a[:, None, 3])
    meet &= a[:, None, 4] == b[None, :, 4]
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(meet), strict=True)]


def _boxes(fragments: Sequence[Fragment]) -> np.ndarray:
    """``(n, 5) int64``: top, bottom, left, right and class of each fragment."""
    return np.array([(f.top, f.bottom, f.left, f.right, f.class_id) for f in fragments], np.int64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def paste_fragments(
    fragments: Sequence[Fragment], core: tuple[int, int, int, int], valid: np.ndarray
) -> tuple[np.ndarray, list[Fragment]]:
    """Paint fragments into the chunk core; the higher score wins, then the lower key.

    Args:
        fragments: owned fragments of every window the chunk ran.
        core: ``(y0, y1, x0, x1)`` of the chunk core in block coordinates.
        valid: ``(y1 - y0, x1 - x0) bool``; nodata pixels stay 0.

    Returns:
        ``(h, w) uint32`` local ids (``i + 1`` is ``present[i]``, 0 = none) and the
        fragments that won at least one pixel, in key order.
    """
    y0, y1, x0, x1 = core
    winner = np.zeros((y1 - y0, x1 - x0), dtype=np.int64)
    order = sorted(range(len(fragments)), key=lambda i: (fragments[i].score, -fragments[i].key))
    for i in order:  # later (better) fragments overwrite earlier ones
        f = fragments[i]
        a0, a1 = max(y0, f.top), min(y1, f.bottom)
        b0, b1 = max(x0, f.left), min(x1, f.right)
        if a0 < a1 and b0 < b1:  # only the box both share: not a core-sized mask per fragment
            mask = f.mask[a0 - f.top : a1 - f.top, b0 - f.left : b1 - f.left]
            winner[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0][mask] = i + 1
    winner[~valid] = 0
    won = np.unique(winner)
    won = won[won > 0]
    index = sorted((int(i) - 1 for i in won), key=lambda i: fragments[i].key)
    lut = np.zeros(len(fragments) + 1, dtype=np.uint32)
    lut[np.asarray(index, dtype=np.int64) + 1] = np.arange(1, len(index) + 1, dtype=np.uint32)
    return lut[winner], [fragments[i] for i in index]
