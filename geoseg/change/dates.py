"""The dates of a stacked scene, read from its band names (``t<date>_<band>``).

``geoseg stack`` names the bands of date ``n`` ``t<n>_<band>``; Siamese change models
(two dates, ``t1_*`` then ``t2_*``) and relative radiometric normalisation (any number of
dates) both split a stack by these names, each with its own rules and error message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["band_date", "date_groups"]

# DOTALL: the band part is everything after the first ``t<n>_``, as ``str.partition`` gives.
_DATED = re.compile(r"t(\d+)_(.+)", re.DOTALL)


def band_date(name: str) -> tuple[int, str] | None:
    """``"t2_B04"`` -> ``(2, "B04")``; None when the name has no ``t<digits>_`` prefix."""
    found = _DATED.fullmatch(name)
    return (int(found[1]), found[2]) if found else None


def date_groups(names: Sequence[str]) -> list[tuple[int, list[tuple[int, str]]]] | None:
    """Each date's bands, in date order: ``(date, [(0-based band index, band name), ...])``.

    Band names lose their ``t<date>_`` prefix; None when any name lacks it (the first such
    name is ``next(n for n in names if band_date(n) is None)``).
    """
    groups: dict[int, list[tuple[int, str]]] = {}
    for i, name in enumerate(names):
        dated = band_date(name)
        if dated is None:
            return None
        groups.setdefault(dated[0], []).append((i, dated[1]))
    return [(t, groups[t]) for t in sorted(groups)]
