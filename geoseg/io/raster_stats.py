"""Cheap statistics of a scene: a small sample of its valid pixels, never a pass over it."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from geoseg.io.nodata import band_nodata, valid_values

__all__ = ["sample_valid_pixels"]

log = logging.getLogger(__name__)

#: Pixels a scene with no overviews may have and still be sampled by one decimated read.
_SMALL_SCENE_PX = 4096 * 4096
#: The sample grid of a large scene without overviews: windows per side and their side.
_SAMPLE_GRID, _SAMPLE_WINDOW = 8, 32


def _sample_windows(src: Any) -> list[Window]:
    """Where to read a large scene's sample: an even grid of small windows (a block each)."""
    side = min(_SAMPLE_WINDOW, src.height, src.width)
    rows = np.linspace(0, src.height - side, _SAMPLE_GRID).astype(int)
    cols = np.linspace(0, src.width - side, _SAMPLE_GRID).astype(int)
    return [Window(int(c), int(r), side, side) for r in rows for c in cols]


def _read_sample(src: Any, indexes: list[int], max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """``(C, h, w)`` sampled values and ``(h, w) bool`` dataset mask; see the caller.

    The dataset mask is read for a scene's internal mask or alpha band; it calls a
    pixel valid where any band holds data, and the caller drops those where a
    selected band does not (:mod:`geoseg.io.nodata`)."""
    factor = max(1.0, max(src.height, src.width) / max_side)
    shape = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
    if src.overviews(1) or src.height * src.width <= _SMALL_SCENE_PX:
        values = src.read(indexes, out_shape=(len(indexes), *shape))
        return values, src.dataset_mask(out_shape=shape) > 0
    wins = _sample_windows(src)
    values = np.concatenate([src.read(indexes, window=w) for w in wins], axis=2)
    return values, np.concatenate([src.dataset_mask(window=w) > 0 for w in wins], axis=1)


def sample_valid_pixels(
    path: str | os.PathLike[str], bands: Sequence[int], max_side: int = 256, src: Any = None
) -> np.ndarray:
    """``(len(bands), N) float64`` values of valid pixels in a small sample of a scene.

    For statistics that must not cost a pass over the scene: a decimated read (GDAL
    takes it from an overview when the file has one) of at most ``max_side`` px a
    side when the file has overviews or is small, else an 8 x 8 grid of 32 px
    windows. Pixels the dataset mask calls nodata, or that hold the nodata value or a
    non-finite value in any of ``bands`` (:mod:`geoseg.io.nodata`), are dropped; a
    file that cannot be read gives an empty sample.

    Args:
        path: the scene.
        bands: 0-based band indices.
        max_side: longest side of the decimated read, in px.
        src: ``path`` already open (rasterio dataset), read through this handle: the
            blocks it decodes stay in GDAL's block cache for the caller's own reads of
            it (None: the file is opened here).
    """
    indexes = [i + 1 for i in bands]
    try:
        if src is not None:
            values, mask = _read_sample(src, indexes, max_side)
            nodata = band_nodata(src, indexes)
        else:
            with rasterio.open(os.fspath(path)) as opened:
                values, mask = _read_sample(opened, indexes, max_side)
                nodata = band_nodata(opened, indexes)
    except RasterioIOError as exc:
        # the statistics only advise; the scene's own read names the damaged block
        log.debug("%s: no sample for statistics (%s)", path, exc)
        return np.zeros((len(indexes), 0))
    flat = values.reshape(len(indexes), -1).astype(np.float64)
    keep = mask.ravel() & valid_values(values, nodata).ravel()
    return flat[:, keep]
