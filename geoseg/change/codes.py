"""Transition codes of two label maps: one integer per (from-class, to-class) pixel pair.

:func:`transition_codes` gives ``from_index * K + to_index`` (``K*K`` when either
date is nodata or not a class of the schema), the codes of ``change.tif``;
:func:`label_pair_codes` is its compact form for counting, ``i * (K + 1) + j``
with ``K`` standing for nodata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geoseg.tiling.confusion import remap_values
from geoseg.types import NODATA_LABEL

__all__ = ["label_code_dtype", "label_pair_codes", "transition_codes"]


def label_code_dtype(k: int) -> type[np.unsignedinteger[Any]]:
    """dtype of the :func:`label_pair_codes` of ``k`` classes (``uint8`` up to 15 classes)."""
    return np.uint8 if (k + 1) ** 2 <= 256 else np.uint16


def label_pair_codes(before: np.ndarray, after: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """``(h, w)`` codes ``i * (K + 1) + j`` of class indices, ``K`` standing for nodata.

    A compact form of :func:`transition_codes` for counting: ``uint8`` up to 15
    classes (``uint16`` above), computed with a few byte-wide passes when the
    maps are ``uint8`` and the class ids are ``0 .. K-1``.

    Args:
        before, after: ``(h, w)`` class ids (255 or any id not in ``class_ids`` = nodata).
        class_ids: the ``K`` classes, in matrix order.
    """
    k = len(class_ids)
    dtype = label_code_dtype(k)
    if before.dtype == np.uint8 and after.dtype == np.uint8:
        if [int(c) for c in class_ids] == list(range(k)):
            # any value past the last class (255 included) -> k; an array operand
            # keeps np.minimum on its vectorised loop (a scalar one is ~20x slower)
            cap = np.full(before.shape, k, np.uint8)
            a = np.minimum(before, cap).astype(dtype)
            a *= k + 1
            a += np.minimum(after, cap, out=cap)
            return a
        lut_from, lut_to = np.full(256, k * (k + 1), dtype), np.full(256, k, dtype)
        for i, c in enumerate(class_ids):
            if 0 <= int(c) < NODATA_LABEL:
                lut_from[int(c)], lut_to[int(c)] = i * (k + 1), i
        return np.take(lut_from, before) + np.take(lut_to, after)
    index = {int(c): i for i, c in enumerate(class_ids)}
    a, b = remap_values(before, index), remap_values(after, index)
    a[a == NODATA_LABEL], b[b == NODATA_LABEL] = k, k
    return (a * (k + 1) + b).astype(dtype)


def transition_codes(before: np.ndarray, after: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """``(h, w) int32`` codes ``from_index * K + to_index``; ``K*K`` where either is nodata.

    Args:
        before, after: ``(h, w)`` class ids (255 or any id not in ``class_ids`` = nodata).
        class_ids: the ``K`` classes, in matrix order.
    """
    k = len(class_ids)
    pair = label_pair_codes(before, after, class_ids).astype(np.int32)
    i, j = np.divmod(pair, k + 1)
    return np.where((i == k) | (j == k), k * k, i * k + j).astype(np.int32)
