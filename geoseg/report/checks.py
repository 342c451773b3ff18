"""Warnings for implausible change: results that point to classification noise.

Two rules, neither tuned to one scene:

1. **Transition share.** A transition ``a -> b`` (``a != b``) of at least
   :data:`MIN_PIXELS` pixels that covers more than :data:`MAX_YEARLY_SHARE`
   (20 %) of class ``a``'s first-date area per year, compounded over the years
   between the dates (``1 - 0.8 ** years``; one interval when a ``DATE`` tag is
   missing or the dates are under a year apart). Real land-cover change rarely
   turns a fifth of a class into another in a year; two maps of different
   seasons or a model misclassifying one date do.
2. **Focus direction.** A study's focus (e.g. deforestation: forest -> other
   classes) measures a loss of its from-classes. When the reverse transitions
   (to-classes -> from-classes) exceed the focus transitions, the from-classes
   grew on net, the opposite of what the study measures: confusion between the
   classes, rather than change, is the likelier cause.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import numpy as np

from geoseg.change.matrix import TransitionMatrix
from geoseg.report.focus import FocusLike, focus_cells

__all__ = ["MAX_YEARLY_SHARE", "MIN_PIXELS", "implausible_change", "years_between"]

#: Largest plausible share of a class that turns into one other class in a year.
MAX_YEARLY_SHARE = 0.2
#: Transitions smaller than this many pixels are never flagged (too few to judge).
MIN_PIXELS = 50

_DAYS_PER_YEAR = 365.25


def years_between(first: str | None, last: str | None) -> float | None:
    """Years between two ISO dates (``2019-06-01``, time part ignored), or None."""
    try:
        a = dt.date.fromisoformat(str(first)[:10])
        b = dt.date.fromisoformat(str(last)[:10])
    except ValueError:
        return None
    return abs((b - a).days) / _DAYS_PER_YEAR


def _share_limit(years: float | None) -> float:
    return 1.0 - (1.0 - MAX_YEARLY_SHARE) ** max(1.0, years or 1.0)


def implausible_change(
    m: TransitionMatrix,
    years: float | None,
    focus: FocusLike | None,
    area_text: Callable[[float], str],
) -> list[str]:
    """One sentence per rule broken (see the module docstring), largest transitions first.

    Args:
        m: the first -> last date transition matrix.
        years: years between the first and last date, or None when unknown.
        focus: the study's focus, or None.
        area_text: formats an area in m² for the sentences (e.g. ``"418.54 ha"``).
    """
    limit = _share_limit(years)
    first = m.area_m2.sum(axis=1)
    span = f"in {years:.1f} years" if years and years >= 1 else "between the two dates"
    out = []
    for a, i, j in _transitions_over(m, first, limit):
        out.append(
            f"{m.names[i]} -> {m.names[j]}: {area_text(a)} is {100 * a / first[i]:.0f} % of "
            f"the first date's {m.names[i]} {span} (more than the {100 * limit:.0f} % this "
            "report takes as plausible); this points to classification noise, e.g. scenes of "
            "different seasons or a model that confuses the two classes."
        )
    if focus is not None:
        out += _direction(m, focus, area_text)
    return out


def _transitions_over(
    m: TransitionMatrix, first: np.ndarray, limit: float
) -> list[tuple[float, int, int]]:
    k = len(m.names)
    hits = [
        (float(m.area_m2[i, j]), i, j)
        for i in range(k) for j in range(k)
        if i != j and m.pixels[i, j] >= MIN_PIXELS and m.area_m2[i, j] > limit * first[i]
    ]  # fmt: skip
    return sorted(hits, reverse=True)


def _direction(
    m: TransitionMatrix, focus: FocusLike, area_text: Callable[[float], str]
) -> list[str]:
    cells = focus_cells(focus, m.names)
    if not cells:
        return []
    forward = float(sum(m.area_m2[r, c] for r, c in cells))
    backward = float(sum(m.area_m2[c, r] for r, c in cells))
    if backward <= forward:
        return []
    source = _join(sorted({m.names[r] for r, _ in cells}, key=m.names.index))
    return [
        f"{focus.name}: {source} grew by {area_text(backward - forward)} on net "
        f"({area_text(backward)} became {source}, {area_text(forward)} was lost to the focus "
        f"classes), the opposite of the change this study measures; this points to "
        "classification noise rather than real change. Check both maps before using the figure."
    ]


def _join(names: Sequence[str]) -> str:
    return ", ".join(names)
