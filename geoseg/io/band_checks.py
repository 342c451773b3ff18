"""Bands of a scene that hold no valid value: the cause, named, when no pixel is valid.

A band lost in an export (every value NaN) makes every pixel of the scene invalid,
and the error a user then sees (every pixel is nodata, no invariant pixel to
normalise on) does not say which band. Finding it costs a pass over the data, so
these checks run only on those error paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dask.array as da
import numpy as np

__all__ = ["BandOrigin", "empty_band_text", "empty_bands"]


@dataclass(frozen=True)
class BandOrigin:
    """Where one band of an array made of files' bands comes from, for messages.

    Attributes:
        path: its file.
        name: its description (or 1-based number) in that file.
        nodata: that file's nodata value, or None.
    """

    path: str
    name: str
    nodata: float | None


def empty_bands(data: da.Array, nodata: Sequence[float | None]) -> np.ndarray:
    """``(bands,) bool``: bands of ``(bands, H, W)`` ``data`` without one valid value.

    A value is valid when it is finite and not its band's ``nodata`` (None: no
    nodata value). One pass over ``data``, chunk by chunk.
    """
    values = np.array([np.nan if v is None else v for v in nodata], np.float64)
    good = da.isfinite(data) & (data != values[:, None, None])
    return np.asarray(~good.any(axis=(1, 2)).compute(), dtype=bool)


def empty_band_text(names: Sequence[str], nodata: float | None = None) -> str:
    """``"band B04 holds no valid value (every value is NaN or infinite)"``, for
    one or more band ``names`` (descriptions, or 1-based numbers as text)."""
    what = "NaN or infinite" if nodata is None else f"NaN, infinite or the nodata value {nodata:g}"
    if len(names) == 1:
        return f"band {names[0]} holds no valid value (every value is {what})"
    return f"bands {', '.join(names)} hold no valid value (every value is {what})"
