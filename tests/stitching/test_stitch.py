"""The must-hold guarantee: each object gets one scene-unique id, whatever the chunking."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from geoseg.errors import GeosegError
from geoseg.stitching import plan_chunks, relabel_blocks, stitch_instances
from geoseg.types import NODATA_LABEL, TileSpec
from tests.stitching.oracle import OraclePredictor, object_scene, stitch_in_memory

H, W = 150, 170
WINDOW, MARGIN = 32, 4  # stride 24: many objects cross window and chunk seams


def _spec(chunk_windows: int) -> TileSpec:
    return TileSpec(window=WINDOW, margin=MARGIN, chunk_windows=chunk_windows, batch_size=3)


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return object_scene(H, W, seed=1, touching=WINDOW - 2 * MARGIN)


@pytest.fixture(scope="module")
def whole(scene: np.ndarray) -> np.ndarray:
    return stitch_in_memory(scene, _spec(8))[0]  # one chunk covers the scene


def _assert_matches_truth(out: np.ndarray, scene: np.ndarray) -> None:
    truth, truth_cls = scene[0].astype(np.int64), scene[1].astype(np.int64)
    ids, cls = out[0].astype(np.int64), out[1].astype(np.int64)
    pairs = np.unique(np.stack([truth.ravel(), ids.ravel()]), axis=1)
    assert ((pairs[0] == 0) == (pairs[1] == 0)).all(), "background and objects disagree"
    objects = pairs[:, pairs[0] > 0]
    # one id per object and one object per id: the (truth, id) pairs are a bijection
    assert len(np.unique(objects[0])) == objects.shape[1] == len(np.unique(objects[1]))
    assert objects.shape[1] == int(truth.max())
    assert set(np.unique(ids[ids > 0])) == set(range(1, int(truth.max()) + 1))
    np.testing.assert_array_equal(np.where(ids > 0, cls, 0), truth_cls)
    assert (cls[ids == 0] == NODATA_LABEL).all()


def test_scene_has_objects_across_seams(scene: np.ndarray) -> None:
    ids = scene[0].astype(np.int64)
    stride = WINDOW - 2 * MARGIN
    boxes = [np.nonzero(ids == k) for k in range(1, int(ids.max()) + 1)]
    crossing = [
        k for k, (r, c) in enumerate(boxes) if r.max() // stride > r.min() // stride
        or c.max() // stride > c.min() // stride
    ]  # fmt: skip
    assert len(boxes) >= 40
    assert len(crossing) > 15
    assert max(np.ptp(c) for _, c in boxes) > WINDOW  # some objects only ever seen in pieces
    assert len(_touching_pairs(scene)) == 3  # same-class objects in contact across seams


def _touching_pairs(scene: np.ndarray) -> set[tuple[int, int]]:
    """(id, id) of distinct same-class objects that share a pixel edge."""
    ids, cls = scene[0].astype(np.int64), scene[1].astype(np.int64)
    pairs = set()
    for a, b, ca, cb in (
        (ids[:, 1:], ids[:, :-1], cls[:, 1:], cls[:, :-1]),
        (ids[1:], ids[:-1], cls[1:], cls[:-1]),
    ):
        hit = (a != b) & (a > 0) & (b > 0) & (ca == cb)
        pairs |= {(int(x), int(y)) for x, y in zip(a[hit], b[hit], strict=True)}
    return pairs


def test_whole_scene_chunk_matches_truth(scene: np.ndarray, whole: np.ndarray) -> None:
    _assert_matches_truth(whole, scene)


@pytest.mark.parametrize("chunk_windows", [1, 2])
def test_chunking_does_not_change_ids(
    scene: np.ndarray, whole: np.ndarray, chunk_windows: int
) -> None:
    out, ids = stitch_in_memory(scene, _spec(chunk_windows))
    _assert_matches_truth(out, scene)
    assert ids.count == int(scene[0].max())
    np.testing.assert_array_equal(out, whole)  # ids are numbered the same way too


@pytest.mark.parametrize(("scheduler", "workers"), [("sync", None), ("threads", 2)])
def test_schedulers_agree(
    scene: np.ndarray, whole: np.ndarray, scheduler: str, workers: int
) -> None:
    out, _ = stitch_in_memory(scene, _spec(2), scheduler=scheduler, workers=workers)
    np.testing.assert_array_equal(out, whole)


def test_nodata_pixels_get_no_instance(scene: np.ndarray) -> None:
    valid = np.ones((H, W), bool)
    valid[:, :30] = False
    out, _ = stitch_in_memory(scene, _spec(2), valid=valid)
    assert (out[0][~valid] == 0).all()
    assert (out[1][~valid] == NODATA_LABEL).all()
    again, _ = stitch_in_memory(scene, _spec(1), valid=valid)
    np.testing.assert_array_equal(out, again)


def test_empty_scene_has_no_instances() -> None:
    out, ids = stitch_in_memory(np.zeros((2, 40, 50), np.float32), _spec(1))
    assert ids.count == 0
    assert (out[0] == 0).all()


def test_margin_zero_is_refused() -> None:
    with pytest.raises(GeosegError, match="margin"):
        plan_chunks(10, 10, TileSpec(window=16, margin=0))


@pytest.mark.slow
def test_local_cluster_agrees(scene: np.ndarray, whole: np.ndarray) -> None:
    stage = np.zeros((H, W), np.uint32)
    ids = stitch_instances(
        da.from_array(scene, chunks=(2, 64, 64)), da.ones((H, W), dtype=bool, chunks=64),
        OraclePredictor, _spec(2), stage, scheduler="local", workers=2,
    )  # fmt: skip
    out = np.zeros((2, H, W), np.uint32)
    relabel_blocks(plan_chunks(H, W, _spec(2)), lambda key: stage[key], ids, out)
    np.testing.assert_array_equal(out, whole)


@pytest.mark.parametrize("chunk_windows", [1, 2, 8])
def test_each_window_runs_once(scene: np.ndarray, chunk_windows: int) -> None:
    oracle = OraclePredictor()
    stitch_instances(
        da.from_array(scene, chunks=(2, 64, 64)), da.ones((H, W), dtype=bool, chunks=64),
        lambda: oracle, _spec(chunk_windows), np.zeros((H, W), np.uint32), scheduler="sync",
    )  # fmt: skip
    stride = WINDOW - 2 * MARGIN
    assert oracle.windows == -(-H // stride) * -(-W // stride)
