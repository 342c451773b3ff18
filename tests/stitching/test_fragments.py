"""Window ownership, seam merge edges, pasting order and scene id numbering."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import GeosegError
from geoseg.stitching import ChunkTable, resolve_ids
from geoseg.stitching.fragments import (
    fragment_key,
    merge_edges,
    owned_fragments,
    paste_fragments,
)

W, M = 12, 2  # core [2, 10)


def _box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((W, W), bool)
    m[r0:r1, c0:c1] = True
    return m


def _found(*masks: np.ndarray, scores: tuple[float, ...] | None = None) -> tuple:  # type: ignore[type-arg]
    n = len(masks)
    s = np.asarray(scores if scores else [1.0] * n, np.float32)
    return np.array(masks).reshape(n, W, W), np.full(n, 2), s


def test_owner_is_the_window_whose_core_holds_the_box_centre() -> None:
    inside = _box(3, 6, 3, 6)  # centre (4, 4)
    in_margin = _box(0, 3, 0, 3)  # centre (1, 1): the neighbour's
    edge = _box(9, 12, 3, 5)  # rows 9-11: centre row 10 = first margin row
    frags = owned_fragments(_found(inside, in_margin, edge), np.ones((W, W), bool), 7, 100, 200, M)
    assert [f.key for f in frags] == [fragment_key(7, 0)]
    f = frags[0]
    assert (f.top, f.left, f.mask.shape, f.window) == (103, 203, (3, 3), (100, 200, W))


def test_nodata_is_cut_before_the_centre_is_taken() -> None:
    valid = np.ones((W, W), bool)
    valid[:, 6:] = False
    frags = owned_fragments(_found(_box(3, 6, 0, 12)), valid, 0, 0, 0, M)
    assert frags[0].mask.shape == (3, 6)  # centre column 2 after the cut: still owned


def test_too_many_instances_is_an_error() -> None:
    with pytest.raises(GeosegError, match="instances"):
        fragment_key(0, 1 << 16)


def test_merge_needs_same_class_and_iou_over_shared_pixels() -> None:
    a = owned_fragments(_found(_box(3, 6, 3, 12)), np.ones((W, W), bool), 0, 0, 0, M)[0]
    # neighbour window 8 px to the right (stride 8): it shares columns 8-11 of a
    b_mask = np.zeros((W, W), bool)
    b_mask[3:6, 0:6] = True
    b = owned_fragments(_found(b_mask), np.ones((W, W), bool), 1, 0, 8, M)[0]
    assert merge_edges([a, b], 0.5) == [(a.key, b.key)]
    assert merge_edges([a, b], 1.01) == []
    c = owned_fragments(_found(b_mask), np.ones((W, W), bool), 1, 0, 8, M)[0]
    object.__setattr__(c, "class_id", 5)
    assert merge_edges([a, c], 0.5) == []


def test_higher_score_then_lower_key_wins_a_pixel() -> None:
    found = _found(_box(3, 7, 3, 7), _box(5, 9, 5, 9), _box(5, 9, 5, 9), scores=(0.5, 0.9, 0.9))
    frags = owned_fragments(found, np.ones((W, W), bool), 0, 0, 0, M)
    local, present = paste_fragments(frags, (0, W, 0, W), np.ones((W, W), bool))
    assert [f.key for f in present] == [frags[0].key, frags[1].key]  # the third never wins
    assert local[4, 4] == 1 and local[6, 6] == 2 and local[0, 0] == 0


def test_ids_follow_smallest_key_and_join_across_chunks() -> None:
    k = [fragment_key(w, 0) for w in range(4)]
    tables = [
        ChunkTable((0, 0), np.array([k[3], k[1]], np.uint64), np.array([2, 5]),
                   np.array([[k[1], k[2]]], np.uint64), np.array([0.4, 0.6], np.float32)),
        ChunkTable((0, 8), np.array([k[2], k[0]], np.uint64), np.array([5, 2]),
                   np.zeros((0, 2), np.uint64), np.array([0.9, 0.3], np.float32)),
    ]  # fmt: skip
    ids = resolve_ids(tables)
    assert ids.count == 3
    assert ids.luts[(0, 0)].tolist() == [0, 3, 2]  # k3 -> 3rd, k1 (joined with k2) -> 2nd
    assert ids.luts[(0, 8)].tolist() == [0, 2, 1]
    assert ids.classes.tolist() == [255, 2, 5, 2]
    assert ids.scores is not None  # an object's score: the best of its fragments'
    np.testing.assert_allclose(ids.scores, [0, 0.3, 0.9, 0.4])
    block = ids.relabel((0, 8), np.array([[0, 1, 2]], np.uint32))
    assert block.tolist() == [[[0, 2, 1]], [[255, 5, 2]]]
