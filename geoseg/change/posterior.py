"""The posterior change rule: count a transition only where the class probabilities make it likely.

With ``p1``, ``p2`` the class probabilities of one pixel at the two dates (``K``
classes, from ``geoseg predict --probabilities``) and the assumption that the
classifier's errors at the two dates are **independent**, the joint probability
of "class ``a`` then class ``b``" is ``p1(a) p2(b)``, so

* ``P(change) = 1 - sum_c p1(c) p2(c)``;
* the most likely transition is ``argmax_{a != b} p1(a) p2(b)``;
* the most likely unchanged class is ``argmax_c p1(c) p2(c)``.

With ``t = min_change_prob`` (0.5 <= t <= 1) every valid pixel falls in exactly
one of three classes:

* **confident change** ``P(change) >= t``: the most likely transition (code ``a * K + b``);
* **confident no change** ``P(change) <= 1 - t`` (and not the above): the most
  likely unchanged class (code ``c * K + c``);
* **uncertain** otherwise: code :data:`uncertain_code` ``(K*K + 1)``, reported apart,
  never added to change or to no change.

``t = 0.5`` leaves no uncertain band (change wins the tie ``P(change) = 0.5``).
The independence assumption is what makes the product a probability: where the
model's errors are correlated between dates (the same model on similar scenes
repeats its mistakes) or its probabilities are over-confident, ``P(change)`` is a
score rather than a calibrated probability; reference samples (``--reference``)
measure how far it is off.

Everything is computed in integers from the stored bytes ``q = round(254 p)``: with
``S = sum_c q(c)`` the renormalised probabilities of
:func:`geoseg.io.probabilities.dequantize` are ``q / S``, so ``P(change) >= t`` is
``S1 S2 - sum_c q1(c) q2(c) >= t S1 S2`` and the argmaxes are those of the integer
products. Pixel by pixel, without sums across pixels: the codes are the same for any
chunking. Among equally likely transitions the lowest first-date class wins, then the
lowest second-date class (when the products are positive).
"""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np

from geoseg.change.codes import transition_codes
from geoseg.errors import ConfigError, GeosegError
from geoseg.io.probabilities import PROB_NODATA
from geoseg.types import NODATA_LABEL

__all__ = [
    "nodata_code", "persistent_codes", "posterior_code_blocks", "posterior_codes",
    "uncertain_code", "valid_probabilities",
]  # fmt: skip


def nodata_code(k: int) -> int:
    """Internal code of a pixel where either date is nodata (``K*K``)."""
    return k * k


def uncertain_code(k: int) -> int:
    """Internal code of an uncertain pixel (``K*K + 1``; ``K*K`` in change.tif)."""
    return k * k + 1


def valid_probabilities(q: np.ndarray) -> np.ndarray:
    """``(h, w) bool``: stored ``(K, h, w) uint8`` bands hold probabilities there.

    The rule of :func:`geoseg.io.probabilities.dequantize`: no band is 255 and the
    bands do not sum to 0.
    """
    return ~(q == PROB_NODATA).any(axis=0) & (q.astype(np.int64).sum(axis=0) > 0)


def _best_transition(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """``(h, w) int64`` code ``a * K + b`` of ``argmax_{a != b} q1(a) q2(b)``.

    For each ``a`` the best ``b != a`` is the largest ``q2`` (lowest index among
    ties) unless that is ``a``, then the second largest: ``K`` passes, not ``K²``.
    """
    k = q1.shape[0]
    first = np.argmax(q2, axis=0)
    masked = q2.copy()
    np.put_along_axis(masked, first[None], -1, axis=0)
    second = np.argmax(masked, axis=0)
    best_value = np.full(q1.shape[1:], -1, np.int32)
    best_code = np.zeros(q1.shape[1:], np.int64)
    for a in range(k):
        b = np.where(first == a, second, first)
        value = q1[a] * np.take_along_axis(q2, b[None], axis=0)[0]
        better = value > best_value
        best_value = np.where(better, value, best_value)
        best_code = np.where(better, a * k + b, best_code)
    return best_code


def posterior_codes(before: np.ndarray, after: np.ndarray, min_change_prob: float) -> np.ndarray:
    """Codes of the posterior rule (module doc) from two dates' stored probabilities.

    Args:
        before, after: ``(K, h, w) uint8`` stored probabilities (``round(254 p)``,
            255 nodata) of the first and the last date.
        min_change_prob: ``t`` in [0.5, 1].

    Returns:
        ``(h, w) int32`` codes: ``a * K + b`` (change, ``a != b``), ``c * K + c``
        (no change), :func:`uncertain_code` or :func:`nodata_code` (either date
        without probabilities).
    """
    if not 0.5 <= min_change_prob <= 1.0:
        raise ConfigError(f"min_change_prob must be in 0.5-1, got {min_change_prob}")
    if before.shape != after.shape or before.ndim != 3:
        raise GeosegError(f"probabilities differ in shape: {before.shape} vs {after.shape}")
    k = before.shape[0]
    q1, q2 = before.astype(np.int32), after.astype(np.int32)  # products < 2**31
    valid = valid_probabilities(before) & valid_probabilities(after)
    q1, q2 = np.where(valid, q1, 0), np.where(valid, q2, 0)
    same = (q1 * q2).sum(axis=0)
    total = q1.sum(axis=0).astype(np.float64) * q2.sum(axis=0)  # exact: < 2**53
    changed = total - same
    stay = np.argmax(q1 * q2, axis=0)
    codes = np.full(valid.shape, uncertain_code(k), np.int64)
    codes = np.where(changed <= (1.0 - min_change_prob) * total, stay * (k + 1), codes)
    codes = np.where(changed >= min_change_prob * total, _best_transition(q1, q2), codes)
    return np.where(valid, codes, nodata_code(k)).astype(np.int32)


def persistent_codes(
    codes: np.ndarray, maps: np.ndarray, class_ids: Sequence[int], consistency: int
) -> np.ndarray:
    """The temporal-consistency filter on top of the posterior rule's codes.

    A confident change ``a -> b`` stays only where the label maps of the last
    ``consistency`` dates all show ``b`` (as ``--consistency`` does for map
    differencing, :func:`geoseg.change.temporal.persistent_after`); where one of them
    shows another class it becomes no change ``a -> a``, and where none does but one
    has no class (nodata: a cloud) it becomes nodata (persistence is not observed).
    No-change, uncertain and nodata codes are kept.

    Args:
        codes: ``(h, w) int`` codes of :func:`posterior_codes`.
        maps: ``(T, h, w)`` label maps' class ids, first date first.
        class_ids: the ``K`` classes in code order.
        consistency: how many final dates must show the new class (1 = off).
    """
    if consistency <= 1:
        return codes
    k = len(class_ids)
    a, b = np.divmod(codes, k)
    change = (codes < k * k) & (a != b)
    new_id = np.asarray(class_ids)[np.where(change, b, 0)]
    window = maps[-consistency:]
    refuted = change & ((window != new_id) & (window != NODATA_LABEL)).any(axis=0)
    unseen = change & ~refuted & (window == NODATA_LABEL).any(axis=0)
    out = np.where(refuted, a * (k + 1), codes)
    return np.where(unseen, nodata_code(k), out).astype(codes.dtype)


def posterior_code_blocks(
    labels: Sequence[da.Array],
    before: da.Array,
    after: da.Array,
    class_ids: Sequence[int],
    min_change_prob: float,
    consistency: int = 1,
) -> da.Array:
    """``(1, H, W) int32`` lazy codes of the posterior rule between the first and last date.

    Pixels where either date's label map is nodata (or holds a value outside the
    schema) are nodata, as for map differencing; ``consistency`` filters as
    :func:`persistent_codes`.

    Args:
        labels: the ``(H, W) uint8`` label maps on one grid, first date first.
        before, after: ``(K, H, W) uint8`` stored probabilities of the first and last date.
        class_ids: the ``K`` classes.
    """
    ids = [int(c) for c in class_ids]
    k = len(ids)
    first = labels[0]
    stack = da.stack([lab.rechunk(first.chunks) for lab in labels]).rechunk({0: -1})
    spatial = first.chunks

    def block(maps: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
        codes = posterior_codes(q1, q2, min_change_prob)
        unmapped = transition_codes(maps[0], maps[-1], ids) == k * k
        codes = np.where(unmapped, k * k, codes)
        return persistent_codes(codes, maps, ids, consistency).astype(np.int32)[None]

    return da.map_blocks(
        block, stack, before.rechunk((k, *spatial)), after.rechunk((k, *spatial)),
        dtype=np.int32, chunks=((1,), *spatial),
    )  # fmt: skip
