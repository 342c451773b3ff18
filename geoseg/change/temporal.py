"""Temporal consistency over three or more dates: ignore changes that do not persist."""

from __future__ import annotations

import numpy as np

from geoseg.errors import GeosegError

__all__ = ["persistent_after"]


def persistent_after(maps: np.ndarray, consistency: int = 1) -> np.ndarray:
    """The "after" class of each pixel, keeping only changes that persist.

    A pixel changes from its first-date class to its last-date class only if the
    last ``consistency`` dates all show that class; otherwise it keeps its
    first-date class ("no change"). Flicker (forest, urban, forest, urban) thus
    does not count as change. Nodata (255) on the last date stays nodata.
    Pixel by pixel, so it is the same for any chunking.

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
    stable = (maps[t - consistency :] == last).all(axis=0)
    return np.where(stable | (last == 255), last, maps[0]).astype(maps.dtype)
