"""Pure arithmetic of the global window grid (DESIGN.md, "Tiled inference").

Window ``i`` along an axis has its core at ``[i*S, (i+1)*S)`` and reads
``[i*S - m, i*S + S + m)`` of the scene reflect-padded at both ends, where
``S = W - 2m``. The grid is anchored at the scene origin, so it does not depend on
how the scene is chunked.
"""

from __future__ import annotations

import math

import numpy as np

from geoseg.types import TileSpec

__all__ = ["chunk_starts", "hann_weight", "padded_size", "reflect_indices", "windows_touching"]


def padded_size(n: int, spec: TileSpec) -> int:
    """Scene length rounded up to whole strides: ``ceil(n / S) * S`` pixels."""
    return max(1, math.ceil(n / spec.stride)) * spec.stride


def chunk_starts(n: int, spec: TileSpec) -> list[int]:
    """Core start of every chunk along an axis of ``n`` pixels, plus the padded end.

    Chunks are ``spec.chunk`` pixels (a multiple of the stride); the last one is
    shorter but still a multiple of the stride.
    """
    end = padded_size(n, spec)
    return [*range(0, end, spec.chunk), end]


def reflect_indices(n: int, before: int, after: int) -> np.ndarray:
    """Source index of each pixel of ``np.pad(x, (before, after), mode="reflect")``.

    Works for any pad width, including pads longer than the axis (the reflection
    repeats) and ``n == 1`` (the single pixel repeats).

    Returns:
        ``(before + n + after,) int64`` indices into ``[0, n)``.
    """
    i = np.arange(-before, n + after, dtype=np.int64)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def windows_touching(a: int, b: int, n_windows: int, spec: TileSpec) -> range:
    """Indices of the windows whose output reaches the core range ``[a, b)``.

    With trim stitching a window writes only its core; with Hann blending it
    writes its whole extent ``[i*S - m, i*S + S + m)``.
    """
    s, m = spec.stride, spec.margin
    if spec.blend == "trim":
        return range(a // s, min(n_windows, -(-b // s)))
    first = max(0, (a - s - m) // s + 1)
    last = min(n_windows, -(-(b + m) // s))
    return range(first, last)


def hann_weight(window: int) -> np.ndarray:
    """``(window, window) float32`` 2-D Hann weight, strictly positive everywhere."""
    w1 = np.hanning(window + 2)[1:-1].astype(np.float32)
    return np.outer(w1, w1)
