"""The posterior change rule (geoseg.change.posterior) against hand-computed numbers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from geoseg.change.posterior import (
    _best_transition,
    nodata_code,
    persistent_codes,
    posterior_codes,
    uncertain_code,
)

# Nine pixels, K = 3 classes, stored bytes q (probabilities q / sum q; each row sums to
# what makes the probabilities exact). P(change) = 1 - sum_c p1(c) p2(c), t = 0.7:
#  px  p1              p2              sum p1*p2          P(change)  decision
#  0   (1, 0, 0)       (1, 0, 0)       1                  0          no change 0 -> 0
#  1   (1, 0, 0)       (0, 1, 0)       0                  1          change 0 -> 1
#  2   (.5, .5, 0)     (.5, .5, 0)     .25 + .25 = .5     .5         uncertain
#  3   (.8, .2, 0)     (.2, .8, 0)     .16 + .16 = .32    .68        uncertain (< .7)
#  4   (.9, .1, 0)     (.1, .9, 0)     .09 + .09 = .18    .82        change 0 -> 1 (.81)
#  5   (.9, .1, 0)     (.8, .2, 0)     .72 + .02 = .74    .26        no change 0 -> 0 (.72)
#  6   (.2, .2, .6)    (.6, .2, .2)    .12 + .04 + .12    .72        change 2 -> 0 (.36 =
#                                      = .28                         .6 * .6, the largest)
#  7   nodata (255)    (1, 0, 0)       -                  -          nodata
#  8   (0, 1, 0)       (0, .7, .3)     .7                 .3         no change 1 -> 1 (<= .3)
P1 = [(254, 0, 0), (254, 0, 0), (127, 127, 0), (200, 50, 0), (225, 25, 0), (225, 25, 0),
      (50, 50, 150), (255, 255, 255), (0, 254, 0)]  # fmt: skip
P2 = [(254, 0, 0), (0, 254, 0), (127, 127, 0), (50, 200, 0), (25, 225, 0), (200, 50, 0),
      (150, 50, 50), (254, 0, 0), (0, 70, 30)]  # fmt: skip
K = 3
U, N = K * K + 1, K * K  # uncertain, nodata
EXPECTED = [[0, 1, U], [U, 1, 0], [2 * K + 0, N, 1 * K + 1]]


def _bands(pixels: list[tuple[int, int, int]]) -> np.ndarray:
    """Nine ``(K,)`` pixels -> ``(K, 3, 3) uint8``."""
    return np.asarray(pixels, np.uint8).T.reshape(K, 3, 3)


def test_hand_computed_three_by_three() -> None:
    codes = posterior_codes(_bands(P1), _bands(P2), 0.7)
    assert codes.dtype == np.int32
    assert codes.tolist() == EXPECTED
    assert (uncertain_code(K), nodata_code(K)) == (U, N)


def test_threshold_moves_pixels_between_the_three_outcomes() -> None:
    # t = 0.5: no uncertain band; px 2 (P = .5) is change (the tie goes to change),
    # px 3 (.68) change 0 -> 1 (.64); px 8 (.3) stays no change
    codes = posterior_codes(_bands(P1), _bands(P2), 0.5)
    assert codes.tolist() == [[0, 1, 1], [1, 1, 0], [6, N, 4]]
    # t = 0.85: px 4 (.82) and px 6 (.72) become uncertain, px 5 (.26 > .15) too
    codes = posterior_codes(_bands(P1), _bands(P2), 0.85)
    assert codes.tolist() == [[0, 1, U], [U, U, U], [U, N, U]]


def test_best_transition_is_the_brute_force_argmax() -> None:
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        q1 = rng.integers(0, 6, (k, 20, 20)).astype(np.int32)  # small values: many ties
        q2 = rng.integers(0, 6, (k, 20, 20)).astype(np.int32)
        got = _best_transition(q1, q2)
        for y, x in itertools.product(range(20), range(20)):
            pairs = [(a, b) for a in range(k) for b in range(k) if a != b]
            values = [q1[a, y, x] * q2[b, y, x] for a, b in pairs]
            a, b = pairs[int(np.argmax(values))]  # first in (a, b) order among ties
            ga, gb = divmod(int(got[y, x]), k)
            assert ga != gb and q1[ga, y, x] * q2[gb, y, x] == max(values)
            if max(values) > 0:  # (with all products 0 any transition is as likely)
                assert (ga, gb) == (a, b)


def test_out_of_range_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.5-1"):
        posterior_codes(_bands(P1), _bands(P2), 0.4)


def test_consistency_on_top_reverts_changes_that_do_not_persist() -> None:
    ids = (1, 4, 9)
    # three pixels, all "confident change forest -> water" (code 1); the label maps of
    # the last two dates: water/water (persists), forest/water (flicker), water/urban
    codes = np.array([[1, 1, 1, U, 4]], np.int32)
    maps = np.array(
        [[[1, 1, 1, 1, 4]], [[4, 1, 4, 1, 4]], [[4, 4, 9, 9, 4]]], np.uint8
    )  # (T=3, 1, 5)
    out = persistent_codes(codes, maps, ids, 2)
    assert out.tolist() == [[1, 0, 0, U, 4]]  # reverted to forest -> forest; others kept
    assert persistent_codes(codes, maps, ids, 1).tolist() == codes.tolist()


def test_consistency_with_a_nodata_date_makes_the_change_nodata() -> None:
    ids = (1, 4, 9)
    nodata = 9  # K*K: either date (or, with --consistency, a needed date) has no class
    # confident forest -> water (code 1) everywhere; the middle date: cloud, cloud,
    # urban (refutes it); last date water, water, water; pixel 2 is forest -> forest
    codes = np.array([[1, 0, 1]], np.int32)
    maps = np.array([[[1, 1, 1]], [[255, 255, 9]], [[4, 1, 4]]], np.uint8)
    assert persistent_codes(codes, maps, ids, 2).tolist() == [[nodata, 0, 0]]
