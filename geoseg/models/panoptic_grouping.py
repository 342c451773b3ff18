"""Panoptic-DeepLab grouping: one window's heads -> its panoptic map (pure numpy).

:func:`group_panoptic` turns the semantic probabilities, centre heatmap and
offsets of :class:`~geoseg.models.panoptic.PanopticDeepLab` into a panoptic map
(Cheng et al. 2020): centres are local maxima of the heatmap (max-pool NMS), and
every thing pixel joins the centre nearest to ``pixel + offset``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from geoseg.models.components import nearest_components

__all__ = ["PanopticGrouping", "find_centres", "group_panoptic"]


@dataclass(frozen=True)
class PanopticGrouping:
    """The panoptic map of one window.

    Attributes:
        semantic: ``(H, W) int64`` argmax channel of the semantic head, -1 on nodata.
        instances: ``(H, W) int32`` instance ids ``1..n``, 0 = none (stuff, nodata,
            or a thing pixel when the window has no centre).
        classes: ``(n,) int64`` channel of each instance (majority vote of its
            pixels' semantic channel), ``classes[i - 1]`` is instance ``i``'s.
        scores: ``(n,) float32`` centre heatmap value x the mean probability of the
            instance's class over its pixels.
    """

    semantic: np.ndarray
    instances: np.ndarray
    classes: np.ndarray
    scores: np.ndarray


def find_centres(
    centre: np.ndarray, threshold: float, nms_kernel: int, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of a heatmap: ``(n, 2) int64`` ``(y, x)`` and ``(n,) float32`` values.

    A pixel is a centre when it is above ``threshold`` and equals the maximum of
    its ``nms_kernel x nms_kernel`` neighbourhood; the ``top_k`` highest are kept,
    by decreasing value, then row, then column.
    """
    peak = ndimage.maximum_filter(centre, size=nms_kernel, mode="constant", cval=-np.inf)
    ys, xs = np.nonzero((centre == peak) & (centre > threshold))
    values = centre[ys, xs]
    order = np.lexsort((xs, ys, -values))[:top_k]
    return np.stack([ys[order], xs[order]], axis=1).astype(np.int64), values[order].astype(
        np.float32
    )


def group_panoptic(
    sem_probs: np.ndarray,
    centre: np.ndarray,
    offset: np.ndarray,
    things: Collection[int],
    threshold: float = 0.1,
    nms_kernel: int = 7,
    top_k: int = 200,
    valid: np.ndarray | None = None,
) -> PanopticGrouping:
    """Group the thing pixels of one window around predicted centres.

    Every valid pixel whose semantic argmax is a thing channel is moved by its
    offset and joins the nearest centre (Euclidean; ties go to the centre found
    first). Centres that receive no pixel are dropped and ids stay ``1..n`` in the
    order of :func:`find_centres` (decreasing heatmap value). An instance then
    keeps only its 4-connected component nearest its centre: a weak model's
    offsets send blobs from all over the window to one centre, and such scattered
    instances chain across window seams when stitched (its other pixels get no
    instance, like thing pixels of a window without centres).

    Args:
        sem_probs: ``(K, H, W) float32`` class probabilities.
        centre: ``(H, W) float32`` centre heatmap in ``[0, 1]``.
        offset: ``(2, H, W) float32`` ``(dy, dx)`` from each pixel to its centre, px.
        things: channels (``0..K-1``) of the thing classes.
        threshold: smallest heatmap value of a centre.
        nms_kernel: side in px of the max-pool window of the centre search (odd).
        top_k: most centres per window.
        valid: ``(H, W) bool``; nodata pixels belong to nothing. None: all valid.
    """
    h, w = sem_probs.shape[1:]
    semantic = np.argmax(sem_probs, axis=0).astype(np.int64)
    if valid is not None:
        semantic[~valid] = -1
    thing = np.isin(semantic, list(things))
    instances = np.zeros((h, w), np.int32)
    points, values = find_centres(centre, threshold, nms_kernel, top_k)
    if not thing.any() or len(points) == 0:
        return PanopticGrouping(semantic, instances, np.zeros(0, np.int64), np.zeros(0, np.float32))
    ys, xs = np.nonzero(thing)
    owner = _nearest_centre(ys + offset[0][ys, xs], xs + offset[1][ys, xs], points)
    used = np.unique(owner)
    renumber = np.zeros(len(points), np.int32)
    renumber[used] = np.arange(1, len(used) + 1)
    instances[ys, xs] = renumber[owner]
    _centre_components(instances, points[used])
    classes, scores = _vote(instances, semantic, sem_probs, values[used])
    return PanopticGrouping(semantic, instances, classes, scores)


def _nearest_centre(ty: np.ndarray, tx: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(n,) int64`` index into ``points`` (``(m, 2)`` ``(y, x)``) of the centre nearest
    each shifted pixel ``(ty, tx)`` (px); ties go to the earlier centre."""
    best = np.full(ty.shape, np.inf)
    owner = np.zeros(ty.shape, np.int64)
    for i, (cy, cx) in enumerate(points):  # one pass per centre: memory O(pixels)
        d = (ty - cy) ** 2 + (tx - cx) ** 2
        closer = d < best
        best[closer], owner[closer] = d[closer], i
    return owner


def _vote(
    instances: np.ndarray, semantic: np.ndarray, sem_probs: np.ndarray, centre_values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Class (majority channel of its pixels) and score of instances ``1..n``.

    The score is the instance's centre value (``centre_values[i - 1]``) times the
    mean probability of its class over its pixels.
    """
    k = sem_probs.shape[0]
    n = len(centre_values)
    classes = np.zeros(n, np.int64)
    scores = np.zeros(n, np.float32)
    for i in range(n):
        mask = instances == i + 1
        classes[i] = np.bincount(semantic[mask], minlength=k).argmax()
        scores[i] = centre_values[i] * float(sem_probs[classes[i]][mask].mean())
    return classes, scores


def _centre_components(instances: np.ndarray, centres: np.ndarray) -> None:
    """In place: instance ``i + 1`` of an ``(H, W)`` id map keeps its component nearest
    ``centres[i]`` (``(y, x)`` pixel indices); its other pixels become 0."""
    for i, box in enumerate(ndimage.find_objects(instances)):
        if box is None:
            continue
        crop = instances[box] == i + 1
        point = centres[i] + 0.5 - np.array([box[0].start, box[1].start])
        kept = nearest_components(crop[None], point[None])[0]
        instances[box][crop & ~kept] = 0
