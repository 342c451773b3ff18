"""One connected region per instance mask.

Mask-query and dynamic-kernel families (SOLOv2, CondInst, Mask2Former) compute
each instance's mask over the whole window, so a weak model's mask is often
many disconnected blobs of similar-looking pixels. Stitching joins fragments of
neighbouring windows that overlap where the windows do; scattered masks overlap
there by texture, and the joins chain across the scene into one giant object.
An instance of these families is one object, so each mask keeps one 4-connected
component (4: the polygons of ``--vector`` are 4-connected): the one at (or
nearest) the location that predicted it, or, for models without a location,
the largest, or, where no component can be told from the others, every component
as its own instance (:func:`split_components`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["largest_components", "nearest_components", "split_components"]

#: 4-connectivity within each mask, none across the stack.
_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _label(masks: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Components of an ``(n, h, w)`` stack: labels, their count and ``(count,)`` owners."""
    labels, count = ndimage.label(masks, _IN_PLANE)
    owner = np.array([s[0].start for s in ndimage.find_objects(labels)], np.int64)
    return labels, count, owner


def _keep(labels: np.ndarray, count: int, chosen: np.ndarray) -> np.ndarray:
    table = np.zeros(count + 1, bool)
    table[chosen] = True
    table[0] = False
    out: np.ndarray = table[labels]
    return out


def largest_components(masks: np.ndarray) -> np.ndarray:
    """``(n, h, w) bool`` -> each mask's largest 4-connected component.

    Ties go to the component met first in row-major order; an empty mask stays empty.
    """
    masks = np.asarray(masks, bool)
    if not masks.any():  # ndimage.label refuses an empty stack
        return masks.copy()
    labels, count, owner = _label(masks)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = np.lexsort((np.arange(count), -sizes, owner))
    _, first = np.unique(owner[order], return_index=True)
    return _keep(labels, count, order[first] + 1)


def nearest_components(masks: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Each mask's 4-connected component nearest its point (0 away if it covers it).

    Args:
        masks: ``(n, h, w) bool``.
        points: ``(n, 2)`` ``(y, x)`` in px of the mask's grid, pixel ``(r, c)``
            covering ``[r, r + 1) x [c, c + 1)`` (so its centre is ``(r + 1/2, c + 1/2)``).

    Returns:
        ``(n, h, w) bool``: the component holding the foreground pixel whose centre
        is nearest the point (ties: the first in row-major order); an empty mask
        stays empty.
    """
    masks = np.asarray(masks, bool)
    if not masks.any():  # ndimage.label refuses an empty stack
        return masks.copy()
    labels, count, _ = _label(masks)
    i, r, c = np.nonzero(labels)
    pts = np.asarray(points, np.float64)
    d2 = (r + 0.5 - pts[i, 0]) ** 2 + (c + 0.5 - pts[i, 1]) ** 2
    order = np.lexsort((d2, i))  # np.nonzero is row-major: ties keep scan order
    _, first = np.unique(i[order], return_index=True)
    pick = order[first]
    return _keep(labels, count, labels[i[pick], r[pick], c[pick]])


def split_components(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every 4-connected component of an ``(n, h, w) bool`` stack as its own mask.

    Returns:
        ``(k, h, w) bool`` the components, mask by mask, each in row-major order of
        its first pixel, and ``(k,) int64`` the index of the mask each came from.
    """
    masks = np.asarray(masks, bool)
    if not masks.any():
        return np.zeros((0, *masks.shape[1:]), bool), np.zeros(0, np.int64)
    labels, count, owner = _label(masks)
    parts = np.zeros((count, *masks.shape[1:]), bool)
    for k, box in enumerate(ndimage.find_objects(labels)):
        parts[(k, *box[1:])] = labels[box][0] == k + 1
    return parts, owner
