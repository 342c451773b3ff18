"""Dated inputs listed in time order: the check ``track``, ``change`` and ``run`` share.

A scene's or label map's acquisition date is the one ``geoseg predict`` reads
(:func:`geoseg.pipelines.predict.scene_date`; a label map carries it as its ``DATE``
tag). The dated inputs must be listed in time order: a change report of maps
listed newest first reports every gain as a loss, with confidence. Where one is
undated, its place in the order given is taken (and callers say so: :func:`undated_note`).
"""

from __future__ import annotations

import datetime
import itertools
import logging
import os
from collections.abc import Mapping, Sequence

from rasterio.errors import RasterioIOError

from geoseg.errors import DateOrderError
from geoseg.io.georef import open_raster_quietly
from geoseg.io.stamps import refuse_repeated

#: A label map's date tag (:data:`geoseg.change.align.DATE_TAG`; not imported from there:
#: ``geoseg predict`` reaches this module and must not load the vector libraries).
DATE_TAG = "DATE"

__all__ = [
    "check_time_order", "maps_in_time_order", "scenes_in_time_order", "tagged_date",
    "undated_note", "warn_unread_dates",
]  # fmt: skip

log = logging.getLogger(__name__)

#: (file, tag, value) of the date tags already warned about: once per process.
_WARNED: set[tuple[str, str, str]] = set()


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
        GeosegError: one file is listed twice (:func:`geoseg.io.stamps.refuse_repeated`).
        DateOrderError: a dated input is older than a dated one listed before it (undated
            ones between them do not hide it), or, with ``apart``, the first and last
            are dated and share a date; the message names both inputs and their dates.
    """
    refuse_repeated(paths, what)
    listed = [(p, d) for p, d in zip(paths, dates, strict=True) if d is not None]
    given = ", ".join(d.isoformat() if d else "undated" for d in dates)
    for (before, b), (after, a) in itertools.pairwise(listed):
        if a < b:  # dated inputs keep their order around undated ones
            raise DateOrderError(
                f"{after} (acquired {a.isoformat()}) is listed after {before} (acquired "
                f"{b.isoformat()}): the {what} are not in time order (acquired {given}, in "
                f"the order given); list the {what} oldest first"
            )
    d0, d1 = dates[0], dates[-1]
    if apart and d0 is not None and d0 == d1:
        raise DateOrderError(
            f"{paths[0]} and {paths[-1]} are both dated {d0.isoformat()}: no time passes "
            f"between the first and the last of the {what}; give {what} of different dates, "
            "oldest first"
        )
    return all(d is not None for d in dates)


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
        with open_raster_quietly(path) as src:
            got = src.tags().get(DATE_SOURCE_TAG)
    except RasterioIOError:
        return {}
    return {DATE_SOURCE_TAG: got} if got else {}


def scenes_in_time_order(paths: Sequence[str | os.PathLike[str]]) -> bool:
    """:func:`check_time_order` of scene files by the tags ``geoseg predict`` reads (and
    writes into its maps' ``DATE``), first and last date apart; an unreadable file
    counts as undated (the step that reads it says what is wrong)."""
    dates: list[datetime.date | None] = []
    for path in paths:
        try:
            with open_raster_quietly(path) as src:
                tags = src.tags()
        except RasterioIOError:
            dates.append(None)
            continue
        warn_unread_dates(path, tags)
        dates.append(tagged_date(tags))
    return check_time_order([os.fspath(p) for p in paths], dates, "scenes", apart=True)


def unread_dates(tags: Mapping[str, str]) -> list[tuple[str, str]]:
    """(tag, value) of each acquisition date tag that is set but is no date."""
    from geoseg.pipelines.predict import DATE_TAGS, FILE_TIME_TAG, scene_date

    values = ((k, str(tags.get(k, "")).strip()) for k in DATE_TAGS if k != FILE_TIME_TAG)
    return [(k, v) for k, v in values if v and scene_date({k: v}) is None]


def warn_unread_dates(path: str | os.PathLike[str], tags: Mapping[str, str]) -> None:
    """Warn (once per file and value) of a date tag that is set but unreadable, where no
    other tag gives the acquisition date: the scene would pass as undated silently."""
    if tagged_date(tags) is not None:
        return
    for key, value in unread_dates(tags):
        if (seen := (os.fspath(path), key, value)) not in _WARNED:
            _WARNED.add(seen)
            log.warning(
                "%s: its %s tag %r could not be read as a date and is ignored; write it "
                "as ISO YYYY-MM-DD (e.g. 2015-07-11)",
                os.fspath(path), key, value,
            )  # fmt: skip


def undated_note(paths: Sequence[str | os.PathLike[str]], what: str) -> str:
    """The line that says the order given was taken, and why: each undated input (of
    ``paths``, ``what``: ``"maps"`` read by their ``DATE``, or ``"scenes"``) and what
    its tags lack."""
    reasons = []
    for path in paths:
        try:
            with open_raster_quietly(path) as src:
                tags = src.tags()
        except RasterioIOError:
            reasons.append(f"{os.fspath(path)} could not be read")
            continue
        if what == "maps":  # a map's date is its DATE tag alone
            tags = {k: v for k, v in tags.items() if k in (DATE_TAG, "DATE_SOURCE")}
        reason = _undated_reason(tags, what)
        if reason:
            reasons.append(f"{os.fspath(path)} {reason}")
    shown = "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "")
    return f"the order given is taken as time order: {shown}"


def _undated_reason(tags: Mapping[str, str], what: str) -> str | None:
    """Why ``tags`` give no acquisition date (None: they do)."""
    from geoseg.pipelines.predict import DATE_SOURCE_TAG, FILE_TIME_TAG, scene_date

    if tagged_date(tags) is not None:
        return None
    if tags.get(DATE_SOURCE_TAG) == FILE_TIME_TAG:
        return (
            f"has DATE {tags.get(DATE_TAG)} taken from a file time stamp "
            f"(DATE_SOURCE={FILE_TIME_TAG}), which is not an acquisition date"
        )
    unread = unread_dates(tags)
    if unread:
        key, value = unread[0]
        return f"has {key} {value!r}, which is not a date (ISO YYYY-MM-DD expected)"
    if scene_date(tags) is not None:
        return f"is dated only by {FILE_TIME_TAG}, a file time stamp, not an acquisition date"
    tag = "DATE" if what == "maps" else "DATE or ACQUISITION"
    return f"has no acquisition date ({tag} tag)"
