"""Tests for confusion counting and segmentation scores (geoseg/evaluation/metrics.py)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from geoseg.errors import GeosegError, InvalidRasterError
from geoseg.evaluation import (
    SegmentationMetrics,
    confusion_from_labels,
    metrics_from_confusion,
)
from geoseg.evaluation import metrics as metrics_module

IDS = (1, 4, 9)
NAMES = ("forest", "water", "urban")

# 24 pixels: 20 counted, then 4 ignored (nodata 255 in truth, nodata 255 in pred,
# unlabelled 0 in truth, 0 in pred -- 0 is not a class here).
TRUTH = np.array(
    [1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4, 4, 4, 4, 9, 9, 9, 9, 255, 4, 0, 1], dtype=np.uint8
).reshape(4, 6)
PRED = np.array(
    [1, 1, 1, 1, 1, 1, 4, 4, 1, 4, 4, 4, 4, 4, 9, 9, 4, 9, 9, 9, 1, 255, 9, 0], dtype=np.uint8
).reshape(4, 6)
# Rows = reference, columns = predicted:
#            1  4  9   support
#   1     [[ 6, 2, 0]]    8
#   4     [[ 1, 5, 2]]    8
#   9     [[ 0, 1, 3]]    4
#   pred     7  8  5      N = 20
EXPECTED_CONFUSION = np.array([[6, 2, 0], [1, 5, 2], [0, 1, 3]])


def test_confusion_hand_example() -> None:
    cm = confusion_from_labels(TRUTH, PRED, IDS)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, EXPECTED_CONFUSION)


def test_confusion_int16_with_negative_nodata() -> None:
    truth = TRUTH.astype(np.int16)
    truth[truth == 255] = -1
    pred = PRED.astype(np.int16)
    pred[pred == 255] = -1
    np.testing.assert_array_equal(confusion_from_labels(truth, pred, IDS), EXPECTED_CONFUSION)


def test_metrics_hand_example() -> None:
    m = metrics_from_confusion(EXPECTED_CONFUSION, NAMES)
    # forest: TP 6, FP 1 (water->forest), FN 2  -> P 6/7, R 6/8, IoU 6/9, F1 12/15
    # water:  TP 5, FP 3 (2 + 1),        FN 3  -> P 5/8, R 5/8, IoU 5/11, F1 10/16
    # urban:  TP 3, FP 2,                FN 1  -> P 3/5, R 3/4, IoU 3/6, F1 6/9
    expected = {
        "precision": (6 / 7, 5 / 8, 3 / 5),
        "recall": (6 / 8, 5 / 8, 3 / 4),
        "iou": (6 / 9, 5 / 11, 3 / 6),
        "f1": (12 / 15, 10 / 16, 6 / 9),
    }
    for field, values in expected.items():
        np.testing.assert_allclose(getattr(m, field), values, rtol=0, atol=1e-12, err_msg=field)
    assert m.support == (8, 8, 4)
    assert m.predicted == (7, 8, 5)
    assert m.pixels == 20
    assert m.names == NAMES
    # mIoU = (2/3 + 5/11 + 1/2) / 3 = (44 + 30 + 33) / 66 / 3 = 107/198
    assert m.miou == pytest.approx(107 / 198, abs=1e-12)
    assert m.mean_f1 == pytest.approx((0.8 + 0.625 + 2 / 3) / 3, abs=1e-12)
    # po = 14/20 = 0.7; pe = (8*7 + 8*8 + 4*5) / 20**2 = 140/400 = 0.35
    # kappa = (0.7 - 0.35) / (1 - 0.35) = 0.35 / 0.65 = 7/13
    assert m.overall_accuracy == pytest.approx(0.7, abs=1e-12)
    assert m.kappa == pytest.approx(7 / 13, abs=1e-12)


def naive_confusion(truth: np.ndarray, pred: np.ndarray, ids: list[int]) -> np.ndarray:
    cm = np.zeros((len(ids), len(ids)), dtype=np.int64)
    for t, p in zip(truth.ravel().tolist(), pred.ravel().tolist(), strict=True):
        if t in ids and p in ids:
            cm[ids.index(t), ids.index(p)] += 1
    return cm


@pytest.mark.parametrize(
    ("dtype", "values", "ids"),
    [
        (np.uint8, [0, 1, 2, 3, 7, 255], [3, 1, 7, 2]),
        (np.int16, [-1, 0, 2, 5, 300, -300], [300, 5, -300, 2]),
        (np.uint16, [0, 1, 65535, 40000], [40000, 1]),
        (np.int32, [-1, 0, 2, 100_000, 255], [100_000, 2, 0]),
        (np.int64, [-(2**40), -1, 3, 2**40, 255], [2**40, 3, -(2**40)]),
        (np.uint64, [0, 5, 2**63 + 1, 255], [2**63 + 1, 5]),
    ],
)
def test_confusion_matches_naive_loop(
    dtype: type[np.integer], values: list[int], ids: list[int]
) -> None:
    rng = np.random.default_rng(7)
    truth = rng.choice(np.array(values, dtype=dtype), size=(37, 41))
    pred = rng.choice(np.array(values, dtype=dtype), size=(37, 41))
    cm = confusion_from_labels(truth, pred, ids)
    np.testing.assert_array_equal(cm, naive_confusion(truth, pred, ids))
    assert cm.sum() > 0


def test_wide_dtype_search_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "_SEARCH_BLOCK", 50)
    rng = np.random.default_rng(3)
    truth = rng.integers(-2, 6, size=(23, 19)).astype(np.int32)
    pred = rng.integers(-2, 6, size=(23, 19)).astype(np.int32)
    ids = [4, 0, 2, 1]
    np.testing.assert_array_equal(
        confusion_from_labels(truth, pred, ids), naive_confusion(truth, pred, ids)
    )


def test_confusion_non_contiguous_and_mixed_dtypes() -> None:
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 4, size=(30, 30)).astype(np.uint8)[::2, 1::3]
    pred = rng.integers(-1, 4, size=(30, 30)).astype(np.int64)[1::2, ::3]
    ids = [0, 1, 2, 3]
    np.testing.assert_array_equal(
        confusion_from_labels(truth, pred, ids), naive_confusion(truth, pred, ids)
    )


def test_confusion_big_endian() -> None:
    truth = TRUTH.astype(">i2")
    pred = PRED.astype(">i2")
    np.testing.assert_array_equal(confusion_from_labels(truth, pred, IDS), EXPECTED_CONFUSION)


def test_chunk_additivity() -> None:
    rng = np.random.default_rng(11)
    truth = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), size=(64, 48))
    pred = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), size=(64, 48))
    ids = [0, 1, 2, 3]
    quarters = [(slice(0, 32), slice(0, 24)), (slice(0, 32), slice(24, None))]
    quarters += [(slice(32, None), slice(0, 24)), (slice(32, None), slice(24, None))]
    total = sum(confusion_from_labels(truth[q], pred[q], ids) for q in quarters)
    np.testing.assert_array_equal(total, confusion_from_labels(truth, pred, ids))


def test_against_sklearn() -> None:
    """The one independent check of κ/F1/IoU: scikit-learn is a dev dependency, so this
    fails (ImportError) rather than skips where it is missing."""
    from sklearn import metrics as sklearn_metrics

    rng = np.random.default_rng(13)
    truth = rng.integers(0, 4, size=2000)
    pred = np.where(rng.random(2000) < 0.6, truth, rng.integers(0, 4, size=2000))
    m = metrics_from_confusion(confusion_from_labels(truth, pred, [0, 1, 2, 3]), tuple("abcd"))
    assert m.kappa == pytest.approx(sklearn_metrics.cohen_kappa_score(truth, pred), abs=1e-12)
    np.testing.assert_allclose(
        m.f1, sklearn_metrics.f1_score(truth, pred, average=None), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        m.iou, sklearn_metrics.jaccard_score(truth, pred, average=None), rtol=0, atol=1e-12
    )


def test_perfect_prediction() -> None:
    rng = np.random.default_rng(17)
    truth = rng.choice(np.array([1, 4, 9, 255], np.uint8), size=(20, 20))
    m = metrics_from_confusion(confusion_from_labels(truth, truth, IDS), NAMES)
    assert m.miou == 1.0
    assert m.mean_f1 == 1.0
    assert m.overall_accuracy == 1.0
    assert m.kappa == 1.0
    assert m.pixels == int(np.count_nonzero(truth != 255))


def test_absent_class_is_none_and_excluded_from_mean() -> None:
    # Fourth class "bare" (id 7) appears in neither map.
    cm = confusion_from_labels(TRUTH, PRED, (*IDS, 7))
    m = metrics_from_confusion(cm, (*NAMES, "bare"))
    assert math.isnan(m.iou[3]) and math.isnan(m.f1[3])
    assert m.miou == pytest.approx(107 / 198, abs=1e-12)
    assert m.kappa == pytest.approx(7 / 13, abs=1e-12)
    bare = m.to_json()["classes"][3]
    assert bare == {
        "name": "bare",
        "iou": None,
        "f1": None,
        "precision": None,
        "recall": None,
        "support": 0,
        "predicted": 0,
        "note": "no pixel of bare in the reference or the prediction: no scores",
    }


def test_predicted_only_class_scores_zero_but_is_not_averaged() -> None:
    # "bare" is never in the reference but predicted twice (taken from forest).
    cm = np.array([[6, 2, 0, 2], [1, 5, 2, 0], [0, 1, 3, 0], [0, 0, 0, 0]])
    m = metrics_from_confusion(cm, (*NAMES, "bare"))
    assert m.iou[3] == 0.0 and m.f1[3] == 0.0 and m.precision[3] == 0.0
    assert math.isnan(m.recall[3])
    assert m.iou[0] == pytest.approx(6 / 11, abs=1e-12)  # the FP hurt forest's IoU
    assert m.miou == pytest.approx((6 / 11 + 5 / 11 + 3 / 6) / 3, abs=1e-12)


def test_empty_confusion_is_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = metrics_from_confusion(np.zeros((3, 3), np.int64), NAMES)
    assert m.pixels == 0
    assert all(math.isnan(v) for v in (m.miou, m.mean_f1, m.overall_accuracy, m.kappa))
    assert all(math.isnan(v) for v in m.iou + m.precision + m.recall + m.f1)


def test_single_class_kappa_is_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = metrics_from_confusion(np.array([[5, 0], [0, 0]]), ("a", "b"))
    assert m.overall_accuracy == 1.0 and m.miou == 1.0
    assert math.isnan(m.kappa)
    assert m.to_json()["kappa"] is None


def test_to_json_is_plain_and_strict() -> None:
    cm = confusion_from_labels(TRUTH, PRED, (*IDS, 7))
    doc = metrics_from_confusion(cm, (*NAMES, "bare")).to_json()
    text = json.dumps(doc, allow_nan=False)  # raises on NaN or numpy types
    back = json.loads(text)
    assert back == doc
    assert back["pixels"] == 20
    assert back["kappa"] == pytest.approx(7 / 13, abs=1e-12)
    assert [c["name"] for c in back["classes"]] == [*NAMES, "bare"]
    assert isinstance(back["classes"][0]["support"], int)


def test_metrics_are_frozen() -> None:
    m = metrics_from_confusion(EXPECTED_CONFUSION, NAMES)
    assert isinstance(m, SegmentationMetrics)
    with pytest.raises(AttributeError):
        m.miou = 0.0  # type: ignore[misc]


def test_bad_inputs_raise_project_errors() -> None:
    with pytest.raises(InvalidRasterError, match="shape"):
        confusion_from_labels(TRUTH, PRED[:2], IDS)
    with pytest.raises(InvalidRasterError, match="integer dtype"):
        confusion_from_labels(TRUTH.astype(np.float32), PRED, IDS)
    with pytest.raises(GeosegError, match="unique"):
        confusion_from_labels(TRUTH, PRED, (1, 1, 4))
    with pytest.raises(GeosegError, match="unique"):
        confusion_from_labels(TRUTH, PRED, ())
    with pytest.raises(GeosegError, match="K = 2"):
        metrics_from_confusion(EXPECTED_CONFUSION, NAMES[:2])
    with pytest.raises(GeosegError, match=">= 0"):
        metrics_from_confusion(-EXPECTED_CONFUSION, NAMES)
