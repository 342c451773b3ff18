"""Temporal consistency over three or more dates: ignore changes that do not persist."""

from __future__ import annotations

import numpy as np

from geoseg.errors import GeosegError
from geoseg.types import NODATA_LABEL

__all__ = ["persistent_after"]


def persistent_after(maps: np.ndarray, consistency: int = 1) -> np.ndarray:
    """The "after" class of each pixel, keeping only changes that persist.

    A pixel changes from its first-date class to its last-date class only if the
    last ``consistency`` dates all show that class; where one of them shows another
    class it keeps its first-date class ("no change"). Flicker (forest, urban,
    forest, urban) thus does not count as change. Where the change is not refuted but
    one of those dates has no class (nodata 255: a cloud), persistence cannot be
    checked: the pixel becomes nodata, so it is neither counted as change nor
    silently as no change (it is reported with the nodata area). Nodata on the last
    date stays nodata. Pixel by pixel, so it is the same for any chunking.

    Args:
        maps: ``(T, h, w)`` class ids, first date first, ``T >= 2``.
        consistency: how many final dates must agree (1 = take the last date as is).

    Returns:
        ``(h, w)`` class ids, dtype of ``maps``.
    """
    t = maps.shape[0]
    if consistency < 1 or consistency > t - 1:
        raise GeosegError(f"consistency must be in 1-{t - 1} for {t} dates, got {consistency}")
    last = maps[-1]
    if consistency == 1:
        return np.asarray(last)
    window = maps[t - consistency :]
    refuted = ((window != last) & (window != NODATA_LABEL)).any(axis=0)
    unseen = (window == NODATA_LABEL).any(axis=0) & (last != maps[0])
    out = np.where(refuted & (last != NODATA_LABEL), maps[0], last)
    return np.where(unseen & ~refuted, NODATA_LABEL, out).astype(maps.dtype)
