"""Panoptic quality (PQ = SQ x RQ) and AP50 of instance / panoptic label maps.

A *segment* is a ``(class, id)`` pair: every pixel of a stuff class forms one
segment per class (its id is ignored), a thing class forms one segment per
instance id > 0. Class 255 and thing pixels with id 0 belong to no segment.
:func:`segment_overlaps` is the per-chunk kernel; its counts add, so summing it
over the chunks of a scene gives the whole-scene counts (objects crossing chunk
seams included). Matching follows Kirillov et al. (2019): a predicted and a
reference segment of the same class match when their IoU is > 0.5, which makes
the match unique. Pixels outside ``valid`` are void: they count toward no
segment, and a predicted segment lying mostly (> 50 %) on void is not a false
positive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from geoseg.errors import InvalidRasterError
from geoseg.types import NODATA_LABEL

__all__ = [
    "AP50_DEFINITION",
    "ClassQuality",
    "PanopticQuality",
    "SegmentOverlaps",
    "average_precision_50",
    "panoptic_quality",
    "segment_overlaps",
]

Segment = tuple[int, int]  # (class, id)

#: What :func:`average_precision_50` computes, in words (written into metrics.json).
AP50_DEFINITION = (
    "per thing class with reference objects: predictions ranked by score (descending); a "
    "prediction is a true positive when it is the unique same-class match of a reference "
    "object with mask IoU > 0.5 (strict; void pixels left out; the PQ matching, not a "
    "greedy one by score); predictions more than half on void are left out; AP = area "
    "under the precision-recall curve with all-point interpolation (precision envelope "
    "summed over every recall step); without scores all predictions tie and AP = "
    "precision x recall; mean over the classes. pycocotools differs: IoU >= 0.5, greedy "
    "matching in score order, 101-point recall interpolation, at most 100 detections "
    "per image, crowd regions"
)


@dataclass(eq=False)
class SegmentOverlaps:
    """Pixel counts of segments and of their overlaps; ``a + b`` adds two chunks.

    Attributes:
        pairs: ``(truth segment, predicted segment)`` -> shared pixels.
        truth_area: reference segment -> pixels (void excluded).
        pred_area: predicted segment -> pixels (void excluded).
        pred_void: predicted segment -> pixels on void.
    """

    pairs: Counter[tuple[Segment, Segment]] = field(default_factory=Counter)
    truth_area: Counter[Segment] = field(default_factory=Counter)
    pred_area: Counter[Segment] = field(default_factory=Counter)
    pred_void: Counter[Segment] = field(default_factory=Counter)

    def __add__(self, other: SegmentOverlaps) -> SegmentOverlaps:
        return SegmentOverlaps(
            self.pairs + other.pairs,
            self.truth_area + other.truth_area,
            self.pred_area + other.pred_area,
            self.pred_void + other.pred_void,
        )

    def iou(self, truth: Segment, pred: Segment) -> float:
        """IoU of two segments, void pixels of ``pred`` left out of the union."""
        inter = self.pairs.get((truth, pred), 0)
        union = self.truth_area[truth] + self.pred_area[pred] - inter
        return inter / union if union else 0.0


def _segment_codes(cls: np.ndarray, ids: np.ndarray, things: Sequence[int]) -> np.ndarray:
    """``int64`` code ``class << 32 | id`` per pixel; -1 where no segment."""
    cls, ids = cls.astype(np.int64), ids.astype(np.int64)
    thing = np.isin(cls, np.asarray(things, dtype=np.int64))
    code = (cls << 32) | np.where(thing, ids, 0)
    return np.where((cls == NODATA_LABEL) | (thing & (ids == 0)), -1, code)


def _decode(code: int) -> Segment:
    return int(code) >> 32, int(code) & 0xFFFFFFFF


def _count(codes: np.ndarray) -> Counter[Segment]:
    values, counts = np.unique(codes[codes >= 0], return_counts=True)
    return Counter({_decode(v): int(n) for v, n in zip(values, counts, strict=True)})


def segment_overlaps(
    truth_classes: np.ndarray,
    truth_ids: np.ndarray,
    pred_classes: np.ndarray,
    pred_ids: np.ndarray,
    things: Sequence[int],
    valid: np.ndarray | None = None,
) -> SegmentOverlaps:
    """Count segments and overlaps of one block of reference and predicted maps.

    Args:
        truth_classes, truth_ids: reference class (255 = none) and instance id
            (0 = none) per pixel, any shape.
        pred_classes, pred_ids: the same for the prediction.
        things: the thing class ids; every other class is stuff.
        valid: ``bool`` mask, False = void (not scored); None = all valid.

    Raises:
        InvalidRasterError: the arrays differ in shape.
    """
    shapes = {np.shape(a) for a in (truth_classes, truth_ids, pred_classes, pred_ids)}
    if valid is not None:
        shapes.add(np.shape(valid))
    if len(shapes) != 1:
        raise InvalidRasterError(
            f"reference and predicted maps differ in shape {sorted(shapes)}; align them first"
        )
    t = _segment_codes(np.asarray(truth_classes), np.asarray(truth_ids), things)
    p = _segment_codes(np.asarray(pred_classes), np.asarray(pred_ids), things)
    void = np.zeros(t.shape, bool) if valid is None else ~np.asarray(valid, bool)
    both = (t >= 0) & (p >= 0) & ~void
    pairs, counts = np.unique(np.stack([t[both], p[both]]), axis=1, return_counts=True)
    return SegmentOverlaps(
        pairs=Counter(
            {(_decode(a), _decode(b)): int(n) for (a, b), n in zip(pairs.T, counts, strict=True)}
        ),
        truth_area=_count(np.where(void, -1, t)),
        pred_area=_count(np.where(void, -1, p)),
        pred_void=_count(np.where(void, p, -1)),
    )


@dataclass(frozen=True)
class ClassQuality:
    """PQ of one class: ``pq = sq * rq``; ``sq`` is the mean IoU of matches."""

    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class PanopticQuality:
    """Per-class :class:`ClassQuality` and their means over classes that occur.

    ``pq``/``sq``/``rq`` average every class that occurs, stuff and things alike
    (Kirillov et al. 2019); the ``_things`` and ``_stuff`` means average the thing
    classes and the stuff classes apart: None (0/0, "n/a") where no segment of
    that kind is on either side, so a scene without stuff does not read as PQ_stuff 0.
    """

    per_class: Mapping[int, ClassQuality]
    pq: float
    sq: float
    rq: float
    pq_things: float | None = None
    sq_things: float | None = None
    rq_things: float | None = None
    pq_stuff: float | None = None
    sq_stuff: float | None = None
    rq_stuff: float | None = None


def _matches(ov: SegmentOverlaps) -> dict[tuple[Segment, Segment], float]:
    """Matched (truth, pred) pairs: same class, IoU > 0.5 (unique by construction)."""
    out = {}
    for t, p in ov.pairs:
        if t[0] == p[0] and (iou := ov.iou(t, p)) > 0.5:
            out[(t, p)] = iou
    return out


def _is_false_positive(ov: SegmentOverlaps, seg: Segment) -> bool:
    return ov.pred_void[seg] <= 0.5 * (ov.pred_area[seg] + ov.pred_void[seg])


def panoptic_quality(ov: SegmentOverlaps, things: Collection[int] | None = None) -> PanopticQuality:
    """PQ, SQ and RQ per class and their means (classes with no TP, FP or FN left out).

    Args:
        ov: counts from :func:`segment_overlaps`, summed over the scene.
        things: the thing class ids (the rest are stuff); None: the classes with a
            segment of id > 0 (a stuff class's segments all have id 0).
    """
    matches = _matches(ov)
    matched_t = {t for t, _ in matches}
    matched_p = {p for _, p in matches}
    classes = sorted({c for c, _ in ov.truth_area} | {c for c, _ in ov.pred_area})
    per_class = {}
    for c in classes:
        ious = [iou for (t, _), iou in matches.items() if t[0] == c]
        tp = len(ious)
        fn = sum(1 for s in ov.truth_area if s[0] == c and s not in matched_t)
        fp = sum(
            1 for s in ov.pred_area
            if s[0] == c and s not in matched_p and _is_false_positive(ov, s)
        )  # fmt: skip
        if tp + fp + fn == 0:
            continue
        sq = sum(ious) / tp if tp else 0.0
        rq = tp / (tp + 0.5 * fp + 0.5 * fn)
        per_class[c] = ClassQuality(sq * rq, sq, rq, tp, fp, fn)
    if things is None:
        things = {c for c, i in (*ov.truth_area, *ov.pred_area) if i > 0}
    thing = {c: c in set(things) for c in per_class}
    return PanopticQuality(
        per_class,
        *_means(list(per_class.values())),
        *_kind_means([q for c, q in per_class.items() if thing[c]]),
        *_kind_means([q for c, q in per_class.items() if not thing[c]]),
    )


def _means(qs: Sequence[ClassQuality]) -> tuple[float, float, float]:
    """Mean PQ, SQ and RQ of ``qs`` (0 for none)."""
    return _mean([q.pq for q in qs]), _mean([q.sq for q in qs]), _mean([q.rq for q in qs])


def _kind_means(
    qs: Sequence[ClassQuality],
) -> tuple[float, float, float] | tuple[None, None, None]:
    """Mean PQ, SQ and RQ of one kind's classes; None (0/0) where the kind has none."""
    return _means(qs) if qs else (None, None, None)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def average_precision_50(
    ov: SegmentOverlaps, scores: Mapping[Segment, float] | None = None
) -> dict[int, float]:
    """AP at IoU 0.5 per thing class (all-point interpolated precision-recall area).

    Args:
        ov: counts from :func:`segment_overlaps`, summed over the scene.
        scores: confidence of each predicted segment; None ranks all equally
            (AP is then precision x recall).

    Returns:
        class id -> AP50 for each class with at least one reference instance
        (stuff segments have id 0 and are left out).
    """
    matched = {p for _, p in _matches(ov)}
    out = {}
    for c in sorted({s[0] for s in ov.truth_area if s[1] > 0}):
        n_truth = sum(1 for s in ov.truth_area if s[0] == c and s[1] > 0)
        preds = [s for s in ov.pred_area if s[0] == c and s[1] > 0]
        preds = [s for s in preds if s in matched or _is_false_positive(ov, s)]
        preds.sort(key=lambda s: (-(scores or {}).get(s, 1.0), s))
        hits = np.array([s in matched for s in preds], dtype=float)
        if not len(hits):
            out[c] = 0.0
            continue
        if scores is None:  # one rank: a single precision-recall point
            out[c] = float(hits.mean() * hits.sum() / n_truth)
            continue
        recall = np.cumsum(hits) / n_truth
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        steps = np.diff(np.concatenate([[0.0], recall]))
        out[c] = float(np.sum(steps * envelope))
    return out
