"""Pixel grids, size scaling and smooth noise that the synthetic landscape is drawn with."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["grid", "scale", "smooth_noise"]


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma_px: float
) -> NDArray[np.float32]:
    """Gaussian-filtered noise ``(H, W) float32``, zero mean, unit std (coarse grid: fast)."""
    h, w = shape
    step = max(1, int(sigma_px // 4))
    noise = rng.standard_normal((h // step + 3, w // step + 3), dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, sigma_px / step, mode="wrap")
    if step > 1:
        noise = ndimage.zoom(noise, step, order=1)
    field = noise[:h, :w]
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def grid(h: int, w: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Row ``(H, 1)`` and column ``(1, W)`` pixel coordinates."""
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


def scale(shape: tuple[int, int]) -> float:
    """Size factor for features drawn in pixels, 1 at the default 768 x 1024."""
    return float(np.clip(min(shape) / 768, 0.4, 2.0))
