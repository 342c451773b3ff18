"""Pixel-wise segmentation scores from a confusion matrix: IoU, F1, accuracy, kappa.

:func:`confusion_from_labels` is the per-chunk kernel: it counts one pair of label
blocks, and because counts add, summing it over the chunks of a scene (e.g. with
dask) gives the whole-scene matrix. :func:`metrics_from_confusion` turns that
matrix into scores. Both are pure numpy and never touch files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.errors import GeosegError, InvalidRasterError

__all__ = [
    "SegmentationMetrics",
    "confusion_from_labels",
    "format_score",
    "metrics_from_confusion",
]

#: Pixels looked up per step for 32/64-bit labels, bounding the int64 temporaries.
_SEARCH_BLOCK = 1 << 20


def confusion_from_labels(
    truth: np.ndarray, pred: np.ndarray, class_ids: Sequence[int]
) -> np.ndarray:
    """Count (reference, predicted) class pairs over two label arrays.

    Pixels whose reference or predicted value is not one of ``class_ids``
    (nodata 255, -1, an unlabelled 0 when 0 is not a class, ...) are ignored.

    Args:
        truth: reference labels, any shape, any integer dtype.
        pred: predicted labels, same shape as ``truth``, any integer dtype.
        class_ids: the ``K`` class values, in the order of the output rows/columns.

    Returns:
        ``(K, K) int64`` confusion: ``[i, j]`` = pixels of reference class
        ``class_ids[i]`` predicted as ``class_ids[j]``.

    Raises:
        InvalidRasterError: shapes differ, or a label array is not of integer dtype.
        GeosegError: ``class_ids`` is empty or has duplicates.
    """
    ids = [int(c) for c in class_ids]
    if not ids or len(set(ids)) != len(ids):
        raise GeosegError(f"class ids must be a non-empty list of unique values, got {ids}")
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise InvalidRasterError(
            f"reference labels {truth.shape} and predicted labels {pred.shape} differ in "
            "shape; align both to one grid first"
        )
    k = len(ids)
    t, p = _class_index(truth, ids, "reference"), _class_index(pred, ids, "predicted")
    valid = (t >= 0) & (p >= 0)
    codes = t[valid].astype(np.int64)  # the one O(pixels) int64 array
    codes *= k
    codes += p[valid]
    return np.bincount(codes, minlength=k * k).astype(np.int64, copy=False).reshape(k, k)


def _class_index(labels: np.ndarray, ids: list[int], role: str) -> np.ndarray:
    """Position of each label in ``ids``, or -1; same shape, int16 (int32 if K is huge)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise InvalidRasterError(
            f"{role} labels must have an integer dtype, got {labels.dtype}; "
            "cast them (e.g. `labels.astype(np.int16)`) after mapping nodata to a non-class value"
        )
    if not labels.dtype.isnative:
        labels = labels.astype(labels.dtype.newbyteorder("="))
    out_dtype = np.int16 if len(ids) < np.iinfo(np.int16).max else np.int32
    info = np.iinfo(labels.dtype)
    # Ids the dtype cannot hold match no pixel, so they are simply left out.
    known = [(pos, cid) for pos, cid in enumerate(ids) if info.min <= cid <= info.max]
    if labels.dtype.itemsize <= 2:
        return _lookup_small(labels, known, out_dtype)
    return _search_wide(labels, known, out_dtype)


def _lookup_small(
    labels: np.ndarray, known: list[tuple[int, int]], out_dtype: type[np.signedinteger[Any]]
) -> np.ndarray:
    """8/16-bit labels: one table entry per possible bit pattern (at most 65 536)."""
    unsigned = np.dtype(f"u{labels.dtype.itemsize}")
    table = np.full(1 << (8 * labels.dtype.itemsize), -1, dtype=out_dtype)
    for pos, cid in known:
        table[int(np.array(cid, dtype=labels.dtype).view(unsigned))] = pos
    return table[labels.view(unsigned)]


def _search_wide(
    labels: np.ndarray, known: list[tuple[int, int]], out_dtype: type[np.signedinteger[Any]]
) -> np.ndarray:
    """32/64-bit labels: binary search in the sorted ids, block by block."""
    out = np.full(labels.shape, -1, dtype=out_dtype)
    if not known:
        return out
    known.sort(key=lambda item: item[1])
    keys = np.array([cid for _, cid in known], dtype=labels.dtype)
    positions = np.array([pos for pos, _ in known], dtype=out_dtype)
    flat_in, flat_out = labels.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _SEARCH_BLOCK):
        block = flat_in[start : start + _SEARCH_BLOCK]
        where = np.minimum(np.searchsorted(keys, block), len(keys) - 1)
        flat_out[start : start + block.size] = np.where(keys[where] == block, positions[where], -1)
    return out


@dataclass(frozen=True)
class SegmentationMetrics:
    """Pixel-wise scores of a predicted label map against a reference.

    Per-class values are tuples in class order; a value is NaN where it is 0/0
    (precision of a never-predicted class, recall of a class with no reference
    pixels, anything of a class absent from both), and ``None`` in :meth:`to_json`,
    where a ``note`` says why in words (:meth:`notes`).

    Attributes:
        names: class names, ``K`` of them.
        iou: intersection over union, ``TP / (TP + FP + FN)``.
        f1: ``2 TP / (2 TP + FP + FN)`` (the Dice coefficient).
        precision: user's accuracy, ``TP / predicted``.
        recall: producer's accuracy, ``TP / support``.
        support: reference pixels of each class.
        predicted: pixels predicted as each class.
        miou: mean IoU over the classes with ``support > 0``. Classes absent from
            the reference are left out: their false positives already lower the
            IoU of the classes those pixels truly belong to, and a class absent
            from both maps has no IoU at all.
        mean_f1: mean F1 over the same classes as ``miou``.
        overall_accuracy: ``trace / pixels``.
        kappa: Cohen's kappa, ``(po - pe) / (1 - pe)`` with ``po`` the overall
            accuracy and ``pe = sum(support * predicted) / pixels**2``; NaN when
            ``pe == 1`` (a single class in both maps).
        pixels: pixels counted (both labels a class).
    """

    names: tuple[str, ...]
    iou: tuple[float, ...]
    f1: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    support: tuple[int, ...]
    predicted: tuple[int, ...]
    miou: float
    mean_f1: float
    overall_accuracy: float
    kappa: float
    pixels: int

    def notes(self) -> tuple[str | None, ...]:
        """Per class, why some of its scores are undefined (0/0), or None where none is."""
        out: list[str | None] = []
        for name, support, predicted in zip(self.names, self.support, self.predicted, strict=True):
            if support == 0 and predicted == 0:
                out.append(f"no pixel of {name} in the reference or the prediction: no scores")
            elif predicted == 0:
                out.append(f"no pixel predicted as {name}: precision undefined")
            elif support == 0:
                out.append(f"no reference pixel of {name}: recall undefined")
            else:
                out.append(None)
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        """Plain python types for ``json.dump``; NaN becomes None, explained by ``note``."""
        notes = self.notes()
        classes = [
            {
                "name": name,
                "iou": _finite_or_none(self.iou[k]),
                "f1": _finite_or_none(self.f1[k]),
                "precision": _finite_or_none(self.precision[k]),
                "recall": _finite_or_none(self.recall[k]),
                "support": self.support[k],
                "predicted": self.predicted[k],
                "note": notes[k],
            }
            for k, name in enumerate(self.names)
        ]
        return {
            "pixels": self.pixels,
            "overall_accuracy": _finite_or_none(self.overall_accuracy),
            "kappa": _finite_or_none(self.kappa),
            "miou": _finite_or_none(self.miou),
            "mean_f1": _finite_or_none(self.mean_f1),
            "classes": classes,
        }


def format_score(value: float, why: str | None = None) -> str:
    """A score as ``0.1234``, or ``n/a`` with the reason where it is undefined (NaN)."""
    if math.isnan(value):
        return f"n/a ({why})" if why else "n/a"
    return f"{value:.4f}"


def metrics_from_confusion(confusion: np.ndarray, names: Sequence[str]) -> SegmentationMetrics:
    """Scores from a confusion matrix (rows = reference, columns = predicted).

    Args:
        confusion: ``(K, K)`` non-negative integer counts, e.g. from
            :func:`confusion_from_labels` summed over chunks.
        names: the ``K`` class names, in the matrix order.

    Returns:
        The scores; 0/0 gives NaN for that value, never a warning.

    Raises:
        GeosegError: the matrix is not square, negative, or ``names`` has the wrong length.
    """
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(names):
        raise GeosegError(
            f"confusion matrix must be (K, K) with K = {len(names)} class names, got {cm.shape}"
        )
    if cm.size and cm.min() < 0:
        raise GeosegError("confusion matrix counts must be >= 0")
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    pixels = float(cm.sum())
    iou = _ratio(tp, support + predicted - tp)
    f1 = _ratio(2 * tp, support + predicted)
    present = support > 0
    po = _ratio(tp.sum(), pixels)
    pe = float(np.sum((support / pixels) * (predicted / pixels))) if pixels else math.nan
    return SegmentationMetrics(
        names=tuple(str(n) for n in names),
        iou=_floats(iou),
        f1=_floats(f1),
        precision=_floats(_ratio(tp, predicted)),
        recall=_floats(_ratio(tp, support)),
        support=tuple(int(v) for v in support),
        predicted=tuple(int(v) for v in predicted),
        miou=float(iou[present].mean()) if present.any() else math.nan,
        mean_f1=float(f1[present].mean()) if present.any() else math.nan,
        overall_accuracy=float(po),
        kappa=float(_ratio(po - pe, 1.0 - pe)),
        pixels=int(pixels),
    )


def _ratio(num: Any, den: Any) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den == 0``, without warnings."""
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value
