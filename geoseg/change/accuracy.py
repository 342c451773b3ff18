"""Stratified area and accuracy estimation from a reference sample (Olofsson et al. 2014).

Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E. and
Wulder, M. A. (2014). Good practices for estimating area and assessing accuracy
of land change. Remote Sensing of Environment 148, 42-57.

The map classes are the strata of a stratified random sample; ``n[i, j]`` counts
sample units mapped as ``i`` whose reference class is ``j``. With stratum weights
``W_i = A_i / A`` (mapped area shares) the estimated area proportions are
``p_ij = W_i n_ij / n_i.`` (eq. 4), from which follow overall, user's and
producer's accuracy (eqs. 1-3), their variances (eqs. 5-7), the error-adjusted
area of each class ``A * p_.j`` (eq. 9) and its standard error (eqs. 10-11).

Given the number of pixels ``N_i`` of each stratum, every variance term of
stratum ``i`` is multiplied by the finite-population correction ``1 - n_i / N_i``
(Cochran 1977, ch. 5; clipped at 0). A stratum whose sample covers all its
pixels (``n_i >= N_i``, a census, e.g. a 1-pixel change stratum sampled once) is
then known exactly: variance 0, and one sample unit is enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import GeosegError

__all__ = [
    "Z_95",
    "StratifiedEstimate",
    "error_matrix",
    "sample_design",
    "stratified_estimate",
    "undersampled",
]

#: Normal quantile of a two-sided 95 % confidence interval.
Z_95 = 1.96


@dataclass(frozen=True)
class StratifiedEstimate:
    """Accuracy and error-adjusted areas of ``K`` classes (areas in the units of the input).

    Attributes:
        proportions: ``(K, K)`` estimated area proportions ``p_ij`` (rows map, cols reference).
        users_accuracy, producers_accuracy: ``(K,)`` estimates.
        users_se, producers_se: ``(K,)`` their standard errors.
        overall_accuracy, overall_se: overall accuracy and its standard error.
        area: ``(K,)`` error-adjusted area of each reference class.
        area_se: ``(K,)`` its standard error; the 95 % CI is ``area ± 1.96 * area_se``.
        mapped_area: ``(K,)`` the mapped areas the estimate started from.
    """

    proportions: np.ndarray
    users_accuracy: np.ndarray
    users_se: np.ndarray
    producers_accuracy: np.ndarray
    producers_se: np.ndarray
    overall_accuracy: float
    overall_se: float
    area: np.ndarray
    area_se: np.ndarray
    mapped_area: np.ndarray

    @property
    def area_ci95(self) -> np.ndarray:
        """``(K,)`` half-width of the 95 % confidence interval of ``area``."""
        return np.asarray(Z_95 * self.area_se)


def _fpc(n_i: np.ndarray, population: np.ndarray | None) -> np.ndarray:
    """``(K,)`` finite-population correction ``1 - n_i / N_i`` (1 where ``N_i`` is unknown)."""
    if population is None:
        return np.ones(n_i.size)
    known = population > 0
    frac = np.divide(n_i, population, out=np.zeros(n_i.size), where=known)
    return np.clip(1.0 - frac, 0.0, 1.0)


def undersampled(
    n_i: np.ndarray, mapped_area: np.ndarray, population: np.ndarray | None = None
) -> np.ndarray:
    """``(K,) bool``: mapped strata with too few sample units for a standard error.

    A stratum needs 2 units, unless its sample is a census (``n_i >= N_i >= 1``
    with ``N_i`` its pixels in ``population``), whose variance is 0.

    Args:
        n_i: ``(K,)`` sample units per stratum.
        mapped_area: ``(K,)`` mapped area of each stratum (any unit).
        population: ``(K,)`` pixels of each stratum, or None (census not recognised).
    """
    n_i = np.asarray(n_i)
    census = np.zeros(n_i.size, bool)
    if population is not None:
        pop = np.asarray(population)
        census = (n_i >= 1) & (n_i >= pop)
    return np.asarray((n_i < 2) & (np.asarray(mapped_area) > 0) & ~census)


def _check(counts: np.ndarray, mapped_area: np.ndarray, population: np.ndarray | None) -> None:
    k = mapped_area.size
    if counts.shape != (k, k):
        raise GeosegError(f"the sample matrix must be {k} x {k} (one row per mapped area)")
    if population is not None and population.shape != (k,):
        raise GeosegError(f"give {k} stratum pixel counts, one per mapped area")
    if (counts < 0).any() or (mapped_area < 0).any():
        raise GeosegError("sample counts and mapped areas must not be negative")
    if undersampled(counts.sum(axis=1), mapped_area, population).any():
        raise GeosegError(
            "every mapped class needs at least 2 sample units for a standard error "
            "(1 where it covers all the stratum's pixels); add samples (see sample_design)"
        )


def stratified_estimate(
    counts: Sequence[Sequence[int]] | np.ndarray,
    mapped_area: Sequence[float] | np.ndarray,
    population: Sequence[int] | np.ndarray | None = None,
) -> StratifiedEstimate:
    """Olofsson et al. (2014) stratified estimator, with the finite-population correction.

    Args:
        counts: ``(K, K)`` sample counts, rows = map class (stratum), cols = reference class.
        mapped_area: ``(K,)`` mapped area of each class (pixels, m², ha: any one unit).
        population: ``(K,)`` pixels (sampling units) of each stratum; every variance term
            of stratum ``i`` is then scaled by ``1 - n_i / N_i``, so a census stratum
            (``n_i >= N_i``) adds no variance and may hold a single unit. None: the
            paper's formulas as printed (strata taken as infinite).

    Raises:
        GeosegError: shapes disagree, negative values, or a stratum that is not a census
            has under 2 samples.
    """
    n = np.asarray(counts, dtype=np.float64)
    a_m = np.asarray(mapped_area, dtype=np.float64)
    pop = None if population is None else np.asarray(population, dtype=np.float64)
    _check(n, a_m, pop)
    total = a_m.sum()
    w = a_m / total
    n_i = n.sum(axis=1)
    safe_n = np.where(n_i > 0, n_i, 1.0)
    share = n / safe_n[:, None]  # n_ij / n_i.
    p = w[:, None] * share
    p_col = p.sum(axis=0)
    diag = np.diag(p)
    users = np.diag(share)
    producers = np.divide(diag, p_col, out=np.zeros_like(diag), where=p_col > 0)
    overall = float(diag.sum())
    # (1 - n_i/N_i) / (n_i - 1): a census's n_i = 1 is harmless, its correction is 0
    scale = _fpc(n_i, pop) / np.where(n_i > 1, n_i - 1, 1.0)
    overall_var = float(np.sum(w**2 * users * (1 - users) * scale))
    users_var = users * (1 - users) * scale
    # eq. 10: variance of each class's estimated area proportion
    p_var = np.sum((w**2)[:, None] * share * (1 - share) * scale[:, None], axis=0)
    return StratifiedEstimate(
        proportions=p, users_accuracy=users, users_se=np.sqrt(users_var),
        producers_accuracy=producers, producers_se=_producers_se(n, a_m, users, producers, scale),
        overall_accuracy=overall, overall_se=float(np.sqrt(overall_var)),
        area=total * p_col, area_se=total * np.sqrt(p_var), mapped_area=a_m,
    )  # fmt: skip


def _producers_se(
    n: np.ndarray, a_m: np.ndarray, users: np.ndarray, producers: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Standard error of producer's accuracy (eq. 7); ``scale``: ``(K,)`` fpc / (n_i - 1)."""
    n_i = np.where(n.sum(axis=1) > 0, n.sum(axis=1), 1.0)
    share = n / n_i[:, None]
    n_col = (a_m[:, None] * share).sum(axis=0)  # estimated reference total of each class
    out = np.zeros(a_m.size)
    for j in range(a_m.size):
        if n_col[j] <= 0:
            continue
        others = np.arange(a_m.size) != j
        rest = np.sum(
            (a_m[others] ** 2) * share[others, j] * (1 - share[others, j]) * scale[others]
        )
        own = a_m[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) * scale[j]
        out[j] = np.sqrt((own + producers[j] ** 2 * rest) / n_col[j] ** 2)
    return out


def sample_design(
    mapped_area: Sequence[float] | np.ndarray,
    expected_users_accuracy: Sequence[float] | np.ndarray,
    target_se_overall: float = 0.01,
    min_per_stratum: int = 50,
) -> np.ndarray:
    """Per-stratum sample sizes of a stratified random sample (Olofsson et al. 2014, eq. 13).

    The total is Cochran's ``n = (Σ W_i S_i)² / (S(Ô)² + Σ W_i S_i² / N)`` with
    ``S_i = sqrt(U_i (1 - U_i))``; it is allocated proportionally to the mapped
    area, except that every stratum gets at least ``min_per_stratum`` units (the
    paper's advice for rare change classes), the rest shared proportionally
    among the larger strata.

    Args:
        mapped_area: ``(K,)`` mapped area of each stratum in pixels (``N = Σ``).
        expected_users_accuracy: ``(K,)`` guessed user's accuracy of each stratum.
        target_se_overall: wanted standard error of overall accuracy.
        min_per_stratum: smallest sample of any stratum (e.g. 50-100).

    Returns:
        ``(K,) int64`` sample units per stratum.
    """
    a_m = np.asarray(mapped_area, dtype=np.float64)
    u = np.asarray(expected_users_accuracy, dtype=np.float64)
    if a_m.shape != u.shape or a_m.ndim != 1 or a_m.sum() <= 0:
        raise GeosegError("give one mapped area (> 0 in total) and one user's accuracy per class")
    if ((u < 0) | (u > 1)).any() or target_se_overall <= 0:
        raise GeosegError("user's accuracies must be in 0-1 and the target SE above 0")
    w = a_m / a_m.sum()
    s = np.sqrt(u * (1 - u))
    total = int(np.ceil((w @ s) ** 2 / (target_se_overall**2 + (w @ s**2) / a_m.sum())))
    return _allocate(total, w, min_per_stratum)


def _allocate(total: int, w: np.ndarray, minimum: int) -> np.ndarray:
    fixed = np.zeros(w.size, bool)
    for _ in range(w.size):
        free = total - minimum * int(fixed.sum())
        share = np.where(fixed, 0.0, w) / max(float(w[~fixed].sum()), 1e-300)
        alloc = np.where(fixed, minimum, np.round(share * max(free, 0)))
        small = ~fixed & (alloc < minimum)
        if not small.any():
            break
        fixed |= small
    return np.asarray(np.where(fixed, minimum, alloc), dtype=np.int64)


def error_matrix(map_class: np.ndarray, reference_class: np.ndarray, k: int) -> np.ndarray:
    """``(k, k) int64`` sample counts, rows = map class (stratum), cols = reference class.

    Args:
        map_class, reference_class: ``(N,)`` class indices in ``0..k-1`` of each sample unit.
    """
    a = np.asarray(map_class, dtype=np.int64)
    b = np.asarray(reference_class, dtype=np.int64)
    if a.shape != b.shape or ((a < 0) | (a >= k) | (b < 0) | (b >= k)).any():
        raise GeosegError(f"sample classes must be pairs of indices in 0-{k - 1}")
    return np.bincount(a * k + b, minlength=k * k).reshape(k, k)
