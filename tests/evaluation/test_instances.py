"""PQ / SQ / RQ and AP50 against hand-computed cases, and PQ = 1 for the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import InvalidRasterError
from geoseg.evaluation.instances import (
    SegmentOverlaps,
    average_precision_50,
    panoptic_quality,
    segment_overlaps,
)
from geoseg.types import TileSpec
from tests.stitching.oracle import object_scene, stitch_in_memory

TRUTH_IDS = np.array([[1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0]])
PRED_IDS = np.array([[7, 7, 7, 0, 8, 8, 0, 0, 8, 8, 9, 9]])
# 7 vs 1: IoU 3/4 (match); 8 vs 2: IoU 2/6 (no match); 9 over background: FP.


def _cls(ids: np.ndarray) -> np.ndarray:
    return np.where(ids > 0, 2, 255)


def _overlaps(valid: np.ndarray | None = None, cut: int | None = None) -> SegmentOverlaps:
    args = (_cls(TRUTH_IDS), TRUTH_IDS, _cls(PRED_IDS), PRED_IDS)
    if cut is None:
        return segment_overlaps(*args, things=[2], valid=valid)
    left = segment_overlaps(*(a[:, :cut] for a in args), things=[2])
    return left + segment_overlaps(*(a[:, cut:] for a in args), things=[2])


def test_pq_hand_computed() -> None:
    q = panoptic_quality(_overlaps()).per_class[2]
    assert (q.tp, q.fp, q.fn) == (1, 2, 1)
    assert q.sq == pytest.approx(0.75)
    assert q.rq == pytest.approx(1 / 2.5)
    assert q.pq == pytest.approx(0.3)


def test_counts_add_over_chunks() -> None:
    whole, split = panoptic_quality(_overlaps()), panoptic_quality(_overlaps(cut=6))
    assert whole == split


def test_prediction_on_void_is_not_a_false_positive() -> None:
    valid = np.ones(TRUTH_IDS.shape, bool)
    valid[0, 10:] = False
    q = panoptic_quality(_overlaps(valid)).per_class[2]
    assert (q.tp, q.fp, q.fn) == (1, 1, 1)
    assert q.pq == pytest.approx(0.75 * 0.5)


def test_stuff_is_one_segment_per_class() -> None:
    truth_cls = np.array([[0, 0, 0, 0, 3, 3]])
    pred_cls = np.array([[0, 0, 0, 3, 3, 3]])
    ids = np.zeros_like(truth_cls)
    q = panoptic_quality(segment_overlaps(truth_cls, ids + 5, pred_cls, ids, things=[2]))
    assert q.per_class[0].sq == pytest.approx(0.75) and q.per_class[0].rq == 1
    assert q.per_class[3].sq == pytest.approx(2 / 3)
    assert q.pq == pytest.approx((0.75 + 2 / 3) / 2)


def test_ap50_hand_computed() -> None:
    ov = _overlaps()
    # ranked 9 (FP), 7 (TP), 8 (FP): precision 1/2 at recall 1/2
    assert average_precision_50(ov, {(2, 7): 0.9, (2, 8): 0.8, (2, 9): 0.95}) == {2: 0.25}
    # ranked 7 (TP) first: precision 1 at recall 1/2
    assert average_precision_50(ov, {(2, 7): 0.99, (2, 8): 0.8, (2, 9): 0.5}) == {2: 0.5}
    assert average_precision_50(ov)[2] == pytest.approx(1 / 3 * 1 / 2)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(InvalidRasterError, match="shape"):
        segment_overlaps(TRUTH_IDS, TRUTH_IDS, PRED_IDS[:, :5], PRED_IDS[:, :5], things=[2])


def test_oracle_run_has_perfect_scores() -> None:
    scene = object_scene(100, 120, seed=5)
    out, _ = stitch_in_memory(scene, TileSpec(32, 4, 2))
    truth_cls = np.where(scene[0] > 0, scene[1], 255)
    ov = segment_overlaps(truth_cls, scene[0], out[1], out[0], things=[2, 5])
    q = panoptic_quality(ov)
    assert q.pq == q.sq == q.rq == 1.0
    assert set(q.per_class) == {2, 5}
    assert average_precision_50(ov) == {2: 1.0, 5: 1.0}


def _coco_ap50(truth: np.ndarray, pred: np.ndarray, scores: dict[int, float]) -> float:
    """COCO mask AP at IoU 0.5 (pycocotools, 101-point interpolation), one class."""
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    h, w = truth.shape

    def rle(m: np.ndarray) -> dict[str, object]:
        r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        return r

    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "height": h, "width": w}],
        "categories": [{"id": 2, "name": "thing"}],
        "annotations": [
            {
                "id": int(i),
                "image_id": 1,
                "category_id": 2,
                "segmentation": rle(truth == i),
                "area": float((truth == i).sum()),
                "bbox": list(mask_util.toBbox(rle(truth == i))),
                "iscrowd": 0,
            }
            for i in np.unique(truth[truth > 0])
        ],
    }
    gt.createIndex()
    dt = gt.loadRes(
        [
            {
                "image_id": 1,
                "category_id": 2,
                "segmentation": rle(pred == i),
                "score": scores[int(i)],
            }
            for i in np.unique(pred[pred > 0])
        ]
    )
    ev = COCOeval(gt, dt, iouType="segm")
    ev.params.maxDets = [1, 10, 100]
    ev.evaluate()
    ev.accumulate()
    precision = ev.eval["precision"][0, :, 0, 0, 2]  # IoU 0.5, all recalls, class, all areas
    return float(np.mean(precision[precision > -1]))


def test_ap50_agrees_with_pycocotools() -> None:
    """Same matches as COCO; the AP differs only by COCO's 101-point interpolation."""
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(4)
    truth = np.zeros((60, 60), np.int64)
    pred = np.zeros_like(truth)
    for k, (y, x) in enumerate([(5, 5), (5, 30), (30, 5), (30, 30), (45, 45)], start=1):
        truth[y : y + 10, x : x + 10] = k
    pred[5:15, 6:16] = 1  # IoU 90/110: hit
    pred[5:15, 34:44] = 2  # IoU 60/140: miss
    pred[30:40, 5:14] = 3  # IoU 0.9: hit
    pred[50:58, 20:28] = 4  # over background: false positive
    pred[45:55, 45:55] = 5  # exact: hit
    ov = segment_overlaps(_cls(truth), truth, _cls(pred), pred, things=[2])
    scores = {1: 0.6, 2: 0.9, 3: 0.4, 4: 0.8, 5: 0.7}
    # ranked 2 (FP) 4 (FP) 5 (TP) 1 (TP) 3 (TP): recall 0.2, 0.4, 0.6 at precision
    # 1/3, 2/4, 3/5; the envelope is 3/5 up to recall 0.6, so AP = 0.6 * 0.6 = 0.36
    assert average_precision_50(ov, {(2, k): v for k, v in scores.items()})[2] == pytest.approx(
        0.36
    )
    for draw in range(4):
        ours = average_precision_50(ov, {(2, k): v for k, v in scores.items()})[2]
        assert abs(ours - _coco_ap50(truth, pred, scores)) <= 1 / 101 + 1e-9, draw
        scores = {k: float(v) for k, v in zip(scores, rng.random(len(scores)), strict=True)}


def test_pq_things_and_stuff_hand_computed() -> None:
    """Kirillov et al. (2019): each stuff class is one segment, matched at IoU > 0.5 like a
    thing; PQ averages all classes, PQ_things and PQ_stuff each kind apart."""
    n = 255
    truth_cls = np.array([[0, 0, 0, 0, 3, 3, 3, 3, 2, 2, 2, 2]])
    truth_ids = np.array([[0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2]])
    pred_cls = np.array([[0, 0, 0, 3, 3, 3, 3, 0, 2, 2, 2, n]])
    pred_ids = np.array([[0, 0, 0, 0, 0, 0, 0, 0, 5, 5, 6, 0]])
    # stuff 0: truth {0-3}, pred {0-2, 7}: IoU 3/5 = 0.6, a match
    # stuff 3: truth {4-7}, pred {3-6}: IoU 3/5 = 0.6, a match
    # thing 2: 5 = 1 (IoU 1); 6 vs 2: IoU 1/2, not > 0.5: one FP and one FN
    ov = segment_overlaps(truth_cls, truth_ids, pred_cls, pred_ids, things=[2])
    q = panoptic_quality(ov, things=[2])
    assert {c: (cq.tp, cq.fp, cq.fn) for c, cq in q.per_class.items()} == {
        0: (1, 0, 0),
        2: (1, 1, 1),
        3: (1, 0, 0),
    }
    assert q.per_class[0].pq == pytest.approx(0.6) and q.per_class[3].sq == pytest.approx(0.6)
    assert q.per_class[2].sq == 1 and q.per_class[2].rq == pytest.approx(0.5)
    assert q.pq_things == pytest.approx(0.5)
    assert (q.pq_stuff, q.sq_stuff, q.rq_stuff) == pytest.approx((0.6, 0.6, 1.0))
    assert (q.sq_things, q.rq_things) == pytest.approx((1.0, 0.5))
    assert q.pq == pytest.approx((0.5 + 0.6 + 0.6) / 3)
    assert panoptic_quality(ov) == q  # things told by their ids > 0


def test_stuff_at_iou_one_half_is_not_a_match() -> None:
    """IoU must exceed 0.5: a stuff segment at exactly 1/2 is one FP and one FN."""
    truth_cls = np.array([[0, 0, 0, 0, 1, 1]])
    pred_cls = np.array([[0, 0, 0, 1, 0, 0]])
    ids = np.zeros_like(truth_cls)
    q = panoptic_quality(segment_overlaps(truth_cls, ids, pred_cls, ids, things=[]), things=[])
    assert (q.per_class[0].tp, q.per_class[0].fp, q.per_class[0].fn) == (0, 1, 1)
    assert q.pq_stuff == q.pq == 0.0 and q.pq_things is None  # no thing: 0/0, not 0
