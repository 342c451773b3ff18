"""Dated inputs listed in time order: the check ``track``, ``change`` and ``run`` share.

A scene's or label map's acquisition date is the one ``geoseg predict`` reads
(:func:`geoseg.pipelines.predict.scene_date`; a label map carries it as its ``DATE``
tag). Where every input is dated, the order given must be the time order: a
change report of maps listed newest first reports every gain as a loss, with
confidence. Where one is undated, the order given is taken (and callers say so).
"""

from __future__ import annotations

import datetime
import itertools
import os
from collections.abc import Mapping, Sequence

import rasterio
from rasterio.errors import RasterioIOError

from geoseg.change.align import DATE_TAG
from geoseg.errors import DateOrderError

__all__ = ["check_time_order", "maps_in_time_order", "scenes_in_time_order", "tagged_date"]


def tagged_date(tags: Mapping[str, str]) -> datetime.date | None:
    """The acquisition date in ``tags`` as ``geoseg predict`` reads it, or None.

    A date from ``TIFFTAG_DATETIME`` alone (often the file's creation time; a label map
    says so in ``DATE_SOURCE``) counts as none: it may not refuse an order.
    """
    from geoseg.pipelines.predict import acquisition_date  # torch-free callers stay light

    text = acquisition_date(tags)
    return None if text is None else datetime.date.fromisoformat(text)


def check_time_order(
    paths: Sequence[str], dates: Sequence[datetime.date | None], what: str,
    apart: bool = False,
) -> bool:  # fmt: skip
    """Whether every input is dated (False: the order given is taken as time order).

    Args:
        paths: the inputs, in the order given.
        dates: each input's acquisition date, or None.
        what: their name in messages (``"maps"``, ``"scenes"``).
        apart: the first and the last date must differ (a change between them).

    Raises:
        DateOrderError: every input is dated and a later one is older than the one
            before it (or, with ``apart``, the first and last share a date); the
            message names both inputs and their dates.
    """
    if any(d is None for d in dates):
        return False
    listed = list(zip(paths, dates, strict=True))
    given = ", ".join(d.isoformat() for d in dates if d is not None)
    for (before, b), (after, a) in itertools.pairwise(listed):
        if a is not None and b is not None and a < b:
            raise DateOrderError(
                f"{after} (acquired {a.isoformat()}) is listed after {before} (acquired "
                f"{b.isoformat()}): the {what} are not in time order (acquired {given}, in "
                f"the order given); list the {what} oldest first"
            )
    (first, d0), (last, d1) = listed[0], listed[-1]
    if apart and d0 == d1 and d0 is not None:
        raise DateOrderError(
            f"{first} and {last} are both dated {d0.isoformat()}: no time passes between "
            f"the first and the last of the {what}; give {what} of different dates, oldest "
            "first"
        )
    return True


def maps_in_time_order(paths: Sequence[str], dates: Sequence[str | None]) -> bool:
    """:func:`check_time_order` of label maps by their ``DATE`` tags (``dates``; a tag that
    is no date, or one ``predict`` took from a file time stamp, counts as none), first and
    last date apart: a change needs time."""
    known = [
        tagged_date({DATE_TAG: d, **_date_source(p)}) if d else None
        for p, d in zip(paths, dates, strict=True)
    ]
    return check_time_order(paths, known, "maps", apart=True)


def _date_source(path: str) -> dict[str, str]:
    """The map's ``DATE_SOURCE`` tag, if any (empty when it cannot be read)."""
    from geoseg.pipelines.predict import DATE_SOURCE_TAG

    try:
        with rasterio.open(path) as src:
            got = src.tags().get(DATE_SOURCE_TAG)
    except RasterioIOError:
        return {}
    return {DATE_SOURCE_TAG: got} if got else {}


def scenes_in_time_order(paths: Sequence[str | os.PathLike[str]]) -> bool:
    """:func:`check_time_order` of scene files by the tags ``geoseg predict`` reads (and
    writes into its maps' ``DATE``), first and last date apart; an unreadable file
    counts as undated (the step that reads it says what is wrong)."""
    dates = []
    for path in paths:
        try:
            with rasterio.open(path) as src:
                dates.append(tagged_date(src.tags()))
        except RasterioIOError:
            dates.append(None)
    return check_time_order([os.fspath(p) for p in paths], dates, "scenes", apart=True)
