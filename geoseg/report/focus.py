"""The headline of a change report: the study's focus figure, or its largest transitions.

A focus (from ``geoseg run``'s workflow file) names the transitions a study is
about, e.g. deforestation = forest -> any other class. Its figure is the summed
map area of those transitions; with a labelled reference sample it is also
error-adjusted, with a 95 % confidence interval, by the stratified estimator of
Olofsson et al. (2014) applied to the union of the focus's change codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from geoseg.change.matrix import TransitionMatrix
from geoseg.errors import GeosegError

__all__ = [
    "FocusLike",
    "Headline",
    "adjusted_area",
    "focus_cells",
    "focus_headline",
    "largest_headlines",
]

#: Two-sided 95 % normal quantile, as in geoseg.change.accuracy.
_Z95 = 1.96


class FocusLike(Protocol):
    """What a report needs of a focus (``geoseg.pipelines.workflow.Focus`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def from_classes(self) -> tuple[str, ...]: ...
    @property
    def to_classes(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Headline:
    """One figure of the report's headline.

    Attributes:
        label: what it measures, e.g. ``deforestation`` or ``forest -> grassland``.
        detail: the transitions it sums, e.g. ``forest -> grassland, shrubland``.
        map_m2: summed map area (m²).
        pixels: summed pixel count.
        adjusted_m2: error-adjusted area (m²), None without a reference sample.
        ci95_m2: half-width of its 95 % confidence interval (m²), or None.
    """

    label: str
    detail: str
    map_m2: float
    pixels: int
    adjusted_m2: float | None = None
    ci95_m2: float | None = None


def focus_cells(focus: FocusLike, names: Sequence[str]) -> list[tuple[int, int]]:
    """``(from, to)`` class indices of the focus transitions (never ``from == to``).

    Raises:
        GeosegError: the focus names a class that is not in ``names``.
    """
    missing = sorted(set(focus.from_classes + focus.to_classes) - set(names))
    if missing:
        raise GeosegError(
            f"focus {focus.name!r} names classes {missing} the maps do not have; "
            f"use names from {list(names)}"
        )
    rows = [names.index(n) for n in focus.from_classes]
    cols = [names.index(n) for n in focus.to_classes]
    return [(r, c) for r in rows for c in cols if r != c]


def adjusted_area(
    counts: np.ndarray, mapped_m2: np.ndarray, codes: Sequence[int]
) -> tuple[float, float]:
    """Error-adjusted area of the union of reference classes ``codes``, and its 95 % CI.

    The Olofsson et al. (2014) estimator (eqs. 9-11) with the reference columns
    ``codes`` merged into one class, so covariances between them are accounted for.

    Args:
        counts: ``(C, C)`` sample counts, rows = map stratum, cols = reference class.
        mapped_m2: ``(C,)`` mapped area of each stratum (m²).
        codes: reference classes (column indices) summed.

    Returns:
        ``(area_m2, ci95_half_width_m2)``.
    """
    n = np.asarray(counts, dtype=np.float64)
    a_m = np.asarray(mapped_m2, dtype=np.float64)
    total = a_m.sum()
    w = a_m / total if total > 0 else a_m
    n_i = n.sum(axis=1)
    share = n[:, list(codes)].sum(axis=1) / np.where(n_i > 0, n_i, 1.0)
    dof = np.where(n_i > 1, n_i - 1, 1.0)
    var = float(np.sum(w**2 * share * (1 - share) / dof))
    return float(total * np.sum(w * share)), float(_Z95 * total * np.sqrt(var))


def _names(indices: Sequence[int], names: Sequence[str]) -> str:
    return ", ".join(names[i] for i in sorted(set(indices)))


def focus_headline(
    m: TransitionMatrix, focus: FocusLike, counts: np.ndarray | None = None
) -> Headline:
    """The focus's summed map area and, with reference ``counts``, its adjusted area.

    Args:
        counts: ``(K*K, K*K)`` reference sample counts over change codes, or None.
    """
    cells = focus_cells(focus, m.names)
    k = len(m.names)
    detail = (
        f"{_names([r for r, _ in cells], m.names)} -> {_names([c for _, c in cells], m.names)}"
        if cells else "no transition (from and to name the same classes)"
    )  # fmt: skip
    head = Headline(
        focus.name, detail,
        float(sum(m.area_m2[r, c] for r, c in cells)), int(sum(m.pixels[r, c] for r, c in cells)),
    )  # fmt: skip
    return _adjust(head, m, counts, [r * k + c for r, c in cells])


def largest_headlines(
    m: TransitionMatrix, count: int = 3, counts: np.ndarray | None = None
) -> list[Headline]:
    """The ``count`` largest transitions (``from != to``) by area, largest first."""
    k = len(m.names)
    cells = sorted(
        ((float(m.area_m2[i, j]), i, j) for i in range(k) for j in range(k)
         if i != j and m.pixels[i, j] > 0),
        reverse=True,
    )[:count]  # fmt: skip
    return [
        _adjust(
            Headline(f"{m.names[i]} -> {m.names[j]}", "", a, int(m.pixels[i, j])),
            m,
            counts,
            [i * k + j],
        )
        for a, i, j in cells
    ]


def _adjust(
    head: Headline, m: TransitionMatrix, counts: np.ndarray | None, codes: Sequence[int]
) -> Headline:
    if counts is None or not codes:
        return head
    area, ci = adjusted_area(counts, m.strata_area_m2(), codes)
    return Headline(head.label, head.detail, head.map_m2, head.pixels, area, ci)
