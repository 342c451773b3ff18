"""Overview kernels of label COGs: halve a ``(bands, h, w) uint8`` level by 2 x 2 blocks.

Class ids take the **mode** of each block (:func:`mode_halve`), value bands such as
class probabilities its rounded **average** (:func:`average_halve`); nodata does
not vote, an all-nodata block stays nodata, and both are exact integer
arithmetic, so overviews do not depend on how the raster was chunked.
"""

from __future__ import annotations

import numpy as np

from geoseg.types import NODATA_LABEL

__all__ = ["HALVE", "average_halve", "mode_halve"]


def _pad_even(level: np.ndarray, nodata: int) -> np.ndarray:
    """``level`` ``(B, h, w) uint8`` padded with ``nodata`` to even ``h`` and ``w``."""
    b, h, w = level.shape
    if not (h % 2 or w % 2):
        return level
    padded = np.full((b, h + h % 2, w + w % 2), nodata, np.uint8)
    padded[:, :h, :w] = level
    return padded


def mode_halve(level: np.ndarray, nodata: int = NODATA_LABEL) -> np.ndarray:
    """``(B, ceil(h/2), ceil(w/2)) uint8``: the mode of each 2 x 2 block of ``(B, h, w)``.

    Nodata pixels do not vote (an odd edge is padded with nodata); a block of
    nodata stays nodata; among values with equal counts the smallest wins.
    """
    level = _pad_even(level, nodata)
    votes = [level[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]
    best = np.zeros(votes[0].shape, np.uint16)
    for k, v in enumerate(votes):
        count = np.ones(v.shape, np.uint16)
        for j, u in enumerate(votes):
            if j != k:
                count += v == u
        count[v == nodata] = 0
        # count first, then the smaller value: key = count * 256 + (255 - value)
        np.maximum(best, (count << 8) | (255 - v), out=best)
    return (255 - (best & 255)).astype(np.uint8)


def average_halve(level: np.ndarray, nodata: int = NODATA_LABEL) -> np.ndarray:
    """``(B, ceil(h/2), ceil(w/2)) uint8``: the rounded mean of each 2 x 2 block of ``(B, h, w)``.

    Nodata pixels do not count (an odd edge is padded with nodata); a block of
    nodata stays nodata; halves round up (integer arithmetic, so exact).
    """
    level = _pad_even(level, nodata)
    b, h, w = level.shape
    total = np.zeros((b, h // 2, w // 2), np.uint16)
    count = np.zeros_like(total)
    for i in (0, 1):
        for j in (0, 1):
            v = level[:, i::2, j::2]
            ok = v != nodata
            total += np.where(ok, v, 0).astype(np.uint16)
            count += ok
    out = (total + count // 2) // np.maximum(count, 1)
    return np.where(count > 0, out, nodata).astype(np.uint8)


#: How each overview kind halves a level.
HALVE = {"mode": mode_halve, "average": average_halve}
