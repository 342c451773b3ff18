"""The dates of ``geoseg track``: checked against each other, read window by window.

Every date is read on the first date's pixel grid, where the outputs are. A
date on that grid is read as it is (:func:`~geoseg.pipelines.prompt_windows.read_window`);
a date on another grid is warped onto it through a rasterio ``WarpedVRT``, as
``geoseg change`` aligns label maps (:mod:`geoseg.change.align`), with a warning,
but bilinearly: these are band values, not class ids. Only the windows the
prompts need are read, so memory does not grow with the scenes.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geoseg.change.align import DATE_TAG
from geoseg.errors import BandMismatchError, GeosegError, InvalidRasterError
from geoseg.io.grids import same_grid
from geoseg.io.nodata import band_nodata, valid_values
from geoseg.io.raster import Scene, canonical_band_name, open_scene
from geoseg.io.reproject import bounds_in_crs
from geoseg.pipelines.prompt_windows import PromptWindow, read_window, scene_valid
from geoseg.pipelines.time_order import check_time_order, tagged_date, warn_unread_dates

__all__ = [
    "TrackDate", "date_labels", "date_valid", "dates_in_time_order", "open_dates",
    "read_date_window", "scene_date",
]  # fmt: skip

log = logging.getLogger(__name__)

#: How a date on another grid is resampled onto the first date's.
WARP = Resampling.bilinear


@dataclass(frozen=True)
class TrackDate:
    """One date, open for reading on the first date's grid.

    Attributes:
        path: the scene.
        label: its name in the outputs (``DATE`` tag, else the file stem; unique).
        crs: its own CRS (the assumed one for a file without).
        src: the dataset as it is (on the grid) or warped onto the grid (full extent):
            where the date holds data on the grid is :func:`date_valid`.
        warped: it was on another grid.
    """

    path: str
    label: str
    crs: CRS
    src: Any
    warped: bool


def scene_date(scene: Scene) -> datetime.date | None:
    """The acquisition date ``geoseg predict`` reads (its ``DATE``, ``ACQUISITION`` ...
    tags: :func:`geoseg.pipelines.predict.scene_date`), but not the file's time stamp."""
    return tagged_date(scene.tags)


def date_labels(scenes: Sequence[Scene]) -> list[str]:
    """Each date's ISO acquisition date (:func:`scene_date`), else its ``DATE`` tag, else
    its file stem, made safe as a file name and unique (``_2``, ``_3`` ... after repeats)."""
    out: list[str] = []
    for scene in scenes:
        known = scene_date(scene)
        raw = known.isoformat() if known else scene.tags.get(DATE_TAG) or Path(scene.path).stem
        label = re.sub(r"[^A-Za-z0-9._-]+", "_", raw.strip()).strip("._") or "date"
        base, n = label, 1
        while label in out:
            n += 1
            label = f"{base}_{n}"
        out.append(label)
    return out


def dates_in_time_order(scenes: Sequence[Scene]) -> bool:
    """True when every scene has an acquisition date (False: the order given is taken).

    Raises:
        DateOrderError: the dated scenes are not listed chronologically
            (:func:`~geoseg.pipelines.time_order.check_time_order`; equal dates pass).
    """
    for scene in scenes:
        warn_unread_dates(scene.path, scene.tags)
    return check_time_order([s.path for s in scenes], [scene_date(s) for s in scenes], "scenes")


def _check_dates(scenes: Sequence[Scene], model_bands: Sequence[str] = ()) -> None:
    """Two dates or more, extents that meet the first date's, the same bands (named
    alike: ``B1`` is ``B01``; ``model_bands``, the model's, name the fix), in time order
    where every date is known."""
    if len(scenes) < 2:
        raise GeosegError(
            "geoseg track needs at least two dates (scenes of one place, oldest first)"
        )
    first = scenes[0]
    left, bottom, right, top = rasterio.transform.array_bounds(
        first.height, first.width, first.transform
    )
    for scene in scenes[1:]:
        b = rasterio.transform.array_bounds(scene.height, scene.width, scene.transform)
        fix = "give the dates in CRSs that can be transformed into each other"
        ol, ob, orr, ot = bounds_in_crs(scene.crs, first.crs, b, scene.path, first.path, fix)
        if max(left, ol) >= min(right, orr) or max(bottom, ob) >= min(top, ot):
            raise InvalidRasterError(
                f"{scene.path}: does not overlap {first.path} (disjoint extents); "
                "give scenes of the same place"
            )
        same = [canonical_band_name(n) for n in scene.band_names] == [
            canonical_band_name(n) for n in first.band_names
        ]
        if not same:
            raise BandMismatchError(_band_mismatch(scene, first, model_bands))
    dates_in_time_order(scenes)


def _band_mismatch(scene: Scene, first: Scene, model_bands: Sequence[str]) -> str:
    """The message of a date whose bands are not the first date's."""
    model = f"the model's {', '.join(model_bands)}" if model_bands else "the model's bands"
    return (
        f"{scene.path}: bands {list(scene.band_names)} differ from those of {first.path} "
        f"{list(first.band_names)}; every date feeds {model} from the same band positions: "
        f"give every date the same bands, e.g. only {model} in each, or all "
        f"{len(first.band_names)} of the first date's (`--bands` picks the model's among more)"
    )


@contextlib.contextmanager
def open_dates(
    paths: Sequence[str | os.PathLike[str]], assume_crs: str | None = None,
    model_bands: Sequence[str] = (),
) -> Iterator[tuple[list[Scene], list[TrackDate]]]:  # fmt: skip
    """The dates (checked: :func:`_check_dates`; ``model_bands`` for its messages), open on
    the first date's grid.

    Raises:
        GeosegError: fewer than two dates; BandMismatchError: dates with other bands;
        InvalidRasterError: unreadable scenes or disjoint extents.
    """
    scenes = [open_scene(os.fspath(p), None, 1024, assume_crs) for p in paths]
    _check_dates(scenes, model_bands)
    first = scenes[0]
    with contextlib.ExitStack() as stack:
        dates = []
        for scene, label in zip(scenes, date_labels(scenes), strict=True):
            src = stack.enter_context(rasterio.open(scene.path))
            on_grid = same_grid(
                first.crs, first.transform, (first.height, first.width),
                scene.crs, scene.transform, (scene.height, scene.width),
            )  # fmt: skip
            if not on_grid:
                log.warning("%s: on a different grid; resampled (%s) onto the grid of %s",
                            scene.path, WARP.name, first.path)  # fmt: skip
                src = stack.enter_context(_warped(src, scene.crs, first.crs, first.transform,
                                                  first.width, first.height))  # fmt: skip
            dates.append(TrackDate(scene.path, label, scene.crs, src, not on_grid))
        yield scenes, dates


def _warped(src: Any, src_crs: CRS, crs: CRS, transform: Affine, width: int, height: int) -> Any:
    """``src`` warped onto a grid; its alpha band (:func:`_alpha`: one added, or ``src``'s
    own, warped) marks where it holds data: 0 outside the date's footprint and on its
    nodata (the band values there are 0)."""
    own = ColorInterp.alpha in src.colorinterp  # GDAL adds no second one
    return WarpedVRT(src, src_crs=src_crs, crs=crs, transform=transform, width=width,
                     height=height, resampling=WARP, add_alpha=not own)  # fmt: skip


def _alpha(vrt: Any) -> int:
    """The 1-based alpha band of a :func:`_warped` VRT.

    Read it, not the VRT's ``dataset_mask``: GDAL takes an alpha band as the mask only
    for 8/16-bit 2- or 4-band data, so a float or 13-band date would read as valid
    everywhere, its made-up zeros included.
    """
    return int(list(vrt.colorinterp).index(ColorInterp.alpha)) + 1


def date_valid(date: TrackDate, win: Window, bands: Sequence[int] | None = None) -> np.ndarray:
    """``(h, w) bool``: where ``date`` holds data in ``win`` of the first date's grid
    (inside it): on its footprint and in every one of ``bands`` (1-based; None: every
    band; the rule of :mod:`geoseg.io.nodata`)."""
    if not date.warped:
        return scene_valid(date.src, win, bands=bands)
    alpha = _alpha(date.src)
    indexes = list(bands) if bands is not None else [
        i for i in range(1, date.src.count + 1) if i != alpha
    ]  # fmt: skip
    held = np.asarray(date.src.read(alpha, window=win) > 0)
    return held & _warped_valid(date, date.src.read(indexes, window=win), indexes)


def _warped_valid(date: TrackDate, data: np.ndarray, indexes: Sequence[int]) -> np.ndarray:
    """``(h, w) bool``: no band of warped ``(C, h, w)`` ``data`` is nodata or non-finite.

    The warp's alpha marks a pixel valid where any band of the date is; a band that
    is nodata there comes out as the date's nodata value (0 where it has none).
    ``indexes`` are the 1-based bands of ``data``, the source's band numbers too.
    """
    return np.asarray(valid_values(data, band_nodata(date.src.src_dataset, indexes)))


def read_date_window(
    date: TrackDate, grid: Any, bands: Sequence[int], window: PromptWindow, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One date's pixels of ``window`` (first date's grid) at the encoder's input size.

    Args:
        date: the date.
        grid: the first date's dataset (its size bounds the grid).
        bands: 1-based band indexes, in the model's input order.
        window: the window (parts outside the grid read as nodata).
        size: the encoder's input side ``S``.

    Returns:
        ``(C, S, S)`` values (0 where nothing is) and ``(S, S) bool`` validity.
    """
    if not date.warped:
        return read_window(date.src, bands, window, size)
    # a WarpedVRT reads no window outside itself: one VRT exactly over the window
    base = date.src.src_dataset
    origin = date.src.transform @ Affine.translation(window.col0, window.row0)
    resampling = Resampling.average if window.level else Resampling.nearest
    with _warped(base, date.crs, date.src.crs, origin, window.side, window.side) as vrt:
        data = vrt.read(list(bands), out_shape=(len(bands), size, size), resampling=resampling)
        # nearest, as the dataset mask of a date on the grid is read (prompt_windows)
        alpha = vrt.read(_alpha(vrt), out_shape=(size, size), resampling=Resampling.nearest)
        valid = np.asarray(alpha > 0)
    f = window.factor
    rows = window.row0 + f * np.arange(size)
    cols = window.col0 + f * np.arange(size)
    valid &= ((rows >= 0) & (rows < grid.height))[:, None] & ((cols >= 0) & (cols < grid.width))
    valid &= _warped_valid(date, data, bands)
    return np.where(valid, data, 0), valid
