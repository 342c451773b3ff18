"""Stack the bands of several dates into one raster, for early-fusion change models.

With ``normalize="irmad"`` the later dates are first mapped radiometrically onto
the first (:mod:`geoseg.change.radiometric`). The stack keeps the dates' data type,
because it says how values map to reflectance (:func:`geoseg.models.bands.reflectance_scale`):
integer values are rounded and clipped to the type's range (never onto the nodata
value); the count of clipped values is recorded, and more than
:data:`MAX_CLIPPED_SHARE` of them is refused, as the type cannot hold the result.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio

from geoseg.change.normalize_to import check_same_grid
from geoseg.change.radiometric import DateFit, apply_fits, date_band_groups, fit_dates
from geoseg.errors import BandMismatchError, GeosegError
from geoseg.io.atomic import atomic_output, check_output_path
from geoseg.io.band_checks import BandOrigin
from geoseg.io.nodata import nodata_in_dtype
from geoseg.io.raster import Scene, open_scene
from geoseg.io.stamps import refuse_repeated, scene_files

__all__ = ["MAX_CLIPPED_SHARE", "NormalizedStack", "stack_dates", "stack_normalized"]

log = logging.getLogger(__name__)

#: Largest share of the normalised dates' valid values that may be clipped to the dtype.
MAX_CLIPPED_SHARE = 0.001


@dataclass(frozen=True)
class NormalizedStack:
    """What :func:`stack_normalized` wrote.

    Attributes:
        path: the stacked raster.
        fits: the gain/offset fit of each later date (date 2 first).
        clipped: values clipped to the data type's range, per later date.
        bands: the names of one date's bands, in the order of each fit's gains (all
            the dates' bands are fitted).
    """

    path: Path
    fits: tuple[DateFit, ...]
    clipped: tuple[int, ...]
    bands: tuple[str, ...] = ()


def stack_dates(
    paths: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write the bands of every date, in date order, into one GeoTIFF.

    Band ``i`` of date ``t`` (1-based) is described ``t<t>_<name>``. Every pixel invalid
    in any date (its nodata value, NaN, internal mask) holds one nodata value in every
    band of the stack: the dates' common value, else date 1's (see :func:`_stack_nodata`).
    Blocks are copied one window at a time.

    Raises:
        GeosegError: fewer than two dates, ``output`` is one of the files they read,
            or dates not on one grid (CRS, transform, size) or of different data types.
    """
    scenes = _open_dates(paths, output, overwrite)
    _write(scenes, output, overwrite, lambda block: block, {})
    return Path(output)


def stack_normalized(
    paths: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str],
    method: str = "irmad", overwrite: bool = False,
) -> NormalizedStack:  # fmt: skip
    """:func:`stack_dates` with dates 2..n normalised to date 1 (see the module docstring).

    The fits are recorded in the tags ``GEOSEG_NORMALIZE`` (the method) and
    ``GEOSEG_NORMALIZE_T<t>`` (JSON: band names, gains, offsets, correlations, invariant share,
    invariant and sampled pixels, clipped values).

    Raises:
        GeosegError: as :func:`stack_dates`; also dates with different bands, too few
            invariant pixels, or more than :data:`MAX_CLIPPED_SHARE` values clipped.
    """
    if method != "irmad":
        raise GeosegError(f"unknown normalisation {method!r}; the choices are: irmad")
    scenes = _open_dates(paths, output, overwrite)
    _check_same_bands(scenes)
    names = _band_names(scenes)
    groups = date_band_groups(names, os.fspath(output))
    data = da.concatenate([s.data.data for s in scenes])
    usable = functools.reduce(operator.and_, [s.valid for s in scenes])
    nodata = _stack_nodata(scenes)
    if nodata_in_dtype(nodata, scenes[0].dtype) is not None:
        usable = usable & (data != nodata).all(axis=0)
    origins = [BandOrigin(s.path, n, s.nodata) for s in scenes for n in s.band_names]
    fits = fit_dates(data, usable, groups, [s.path for s in scenes], bands=origins)
    counter = _Normalizer(scenes[0].dtype, groups, tuple(fits), nodata)
    counter.bands = scenes[0].band_names
    tags = {"GEOSEG_NORMALIZE": "irmad (Nielsen 2007; Canty & Nielsen 2008) to date 1"}
    _write(scenes, output, overwrite, counter, tags, counter.finish)
    return NormalizedStack(Path(output), tuple(fits), tuple(counter.clipped), counter.bands)


class _Normalizer:
    """Maps blocks of the stack (``(bands, h, w)``) and counts the values it clips."""

    def __init__(
        self, dtype: np.dtype, groups: list[list[int]], fits: tuple[DateFit, ...],
        nodata: float | None,
    ) -> None:  # fmt: skip
        self.dtype, self.groups, self.fits, self.nodata = dtype, groups, fits, nodata
        self.clipped = [0] * len(fits)
        self.values = [0] * len(fits)
        self.bands: tuple[str, ...] = ()

    def __call__(self, block: np.ndarray) -> np.ndarray:
        out = apply_fits(block, self.groups, self.fits, self.nodata)
        if self.dtype.kind == "f":
            return out.astype(self.dtype)
        lo, hi = _integer_range(self.dtype, self.nodata)
        out = np.rint(out)
        for t, group in enumerate(self.groups[1:]):
            part, valid = out[group], block[group] != self.nodata
            self.clipped[t] += int(np.count_nonzero(((part < lo) | (part > hi)) & valid))
            self.values[t] += int(np.count_nonzero(valid))
        return np.where(block == self.nodata, block, np.clip(out, lo, hi)).astype(self.dtype)

    def finish(self, dst: Any, source: str) -> None:
        """Refuse a stack with too many clipped values; else tag the fits."""
        for fit, clipped, values in zip(self.fits, self.clipped, self.values, strict=True):
            if clipped > MAX_CLIPPED_SHARE * values:
                raise GeosegError(
                    f"{source}: normalising date {fit.date} pushes {clipped} of {values} values "
                    f"outside {self.dtype.name}; convert the dates to float32 reflectance first "
                    "(e.g. `gdal_translate -ot Float32 -scale 0 10000 0 1`)"
                )
            doc = {
                "bands": list(self.bands), "gains": list(fit.gains), "offsets": list(fit.offsets),
                "correlations": list(fit.correlations), "invariant_share": fit.invariant_share,
                "invariant_pixels": fit.invariant, "sampled_pixels": fit.sampled,
                "clipped_values": clipped,
            }  # fmt: skip
            dst.update_tags(**{f"GEOSEG_NORMALIZE_T{fit.date}": json.dumps(doc)})


def _integer_range(dtype: np.dtype, nodata: float | None) -> tuple[float, float]:
    """The values an integer band may take, less the nodata value at either end."""
    info = np.iinfo(dtype)
    lo, hi = float(info.min), float(info.max)
    return lo + (nodata == lo), hi - (nodata == hi)


def _open_dates(
    paths: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], overwrite: bool
) -> list[Scene]:
    """The dates, once ``output`` may be written: not one of the files they read (a
    date, a VRT's source), which the stack would destroy."""
    if len(paths) < 2:
        raise GeosegError("stack needs at least two dates")
    refuse_repeated(paths, "dates")
    read = [Path(f) for p in paths for f in scene_files(p)]
    check_output_path(Path(output), overwrite, read)
    scenes = [open_scene(p) for p in paths]
    first = scenes[0]
    for s in scenes[1:]:
        check_same_grid(s, first, "date 1")
        if s.dtype != first.dtype:
            raise GeosegError(f"{s.path}: {s.dtype} bands, {first.path} has {first.dtype}")
    return scenes


def _check_same_bands(scenes: Sequence[Scene]) -> None:
    """Refuse, naming the input file, dates whose band names differ from date 1's."""
    first = scenes[0]
    for s in scenes[1:]:
        if s.band_names != first.band_names:
            raise BandMismatchError(
                f"{s.path}: bands {list(s.band_names)}, {first.path} has "
                f"{list(first.band_names)}; --normalize pairs bands by name, so every date "
                "needs the same bands (export the dates with the same bands and names)"
            )


def _band_names(scenes: Sequence[Scene]) -> list[str]:
    return [f"t{t}_{n}" for t, s in enumerate(scenes, start=1) for n in s.band_names]


def _stack_nodata(scenes: Sequence[Scene]) -> float | None:
    """The stack's one nodata value, written at every pixel invalid in any date.

    The dates' nodata value where they share one (NaN equals NaN), else the first
    date's that the data type can hold (date 1 first), else NaN (float) or 0
    (integer); None only when no date can have an invalid pixel.
    """
    dtype = scenes[0].dtype
    for s in scenes:
        if s.nodata is not None and math.isnan(s.nodata) and dtype.kind == "f":
            return s.nodata
        if nodata_in_dtype(s.nodata, dtype) is not None:
            return s.nodata
    if not any(s.maskable for s in scenes):
        return None
    return math.nan if dtype.kind == "f" else 0


def _masked_block(
    scenes: Sequence[Scene], window: Any, nodata: float | None
) -> tuple[np.ndarray, int]:
    """``(bands, h, w)``: the dates' bands in ``window``, every band set to ``nodata`` at
    the pixels invalid in any date (:mod:`geoseg.io.nodata`: a pixel missing any band
    is nodata), so that no invalid pixel of one date becomes valid in the stack; and
    the count of pixels valid in every date that hold ``nodata`` in a band (dates with
    other nodata values: these become nodata in the stack)."""
    (y0, y1), (x0, x1) = window.toranges()
    lazy = [(s.data.data[:, y0:y1, x0:x1], s.valid[y0:y1, x0:x1]) for s in scenes]
    parts = da.compute(*lazy)
    block = np.concatenate([np.asarray(data) for data, _ in parts])
    if nodata is None:
        return block, 0
    valid = functools.reduce(operator.and_, [np.asarray(v) for _, v in parts])
    value = nodata_in_dtype(nodata, block.dtype)
    lost = 0 if value is None else int(np.count_nonzero((block == value).any(axis=0) & valid))
    block[:, ~valid] = nodata
    return block, lost


def _write(
    scenes: Sequence[Scene], output: str | os.PathLike[str], overwrite: bool,
    transform: Callable[[np.ndarray], np.ndarray], tags: dict[str, str],
    finish: Callable[[Any, str], None] | None = None,
) -> None:  # fmt: skip
    """Copy the dates block by block through ``transform``; ``finish(dst, path)`` at the end."""
    first, names = scenes[0], _band_names(scenes)
    profile = {
        "driver": "GTiff", "height": first.height, "width": first.width, "count": len(names),
        "dtype": first.dtype.name, "crs": first.crs, "transform": first.transform,
        "nodata": _stack_nodata(scenes), "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }  # fmt: skip
    with atomic_output(output, overwrite) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
        if tags:
            dst.update_tags(**tags)
        lost = 0
        for _, window in dst.block_windows(1):
            block, collided = _masked_block(scenes, window, profile["nodata"])
            lost += collided
            dst.write(transform(block), window=window)
        if lost:
            log.warning(
                "%s: %d pixels valid in every date hold the stack's nodata value %s "
                "(the dates use different ones) in a band: they are nodata in "
                "the stack", os.fspath(output), lost, profile["nodata"],
            )  # fmt: skip
        if finish is not None:
            finish(dst, os.fspath(output))
