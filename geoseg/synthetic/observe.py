"""One acquisition of the landscape: reflectance, clouds and shadows, haze, DN and truth."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from geoseg.synthetic.canvas import smooth_noise
from geoseg.synthetic.landscape import Landscape
from geoseg.synthetic.materials import (
    CLOUD_CLASS,
    CLOUD_SPECTRUM,
    CROP,
    CROP_RIPE,
    MATERIAL_CLASS,
    OPEN_LAND,
    SENTINEL2_BANDS,
    SPECTRA,
    TEXTURE_AMP,
)
from geoseg.types import NODATA_LABEL

__all__ = ["observe"]


def _surface_reflectance(
    rng: np.random.Generator, land: Landscape, material: NDArray[np.uint8]
) -> NDArray[np.float32]:
    """Cloud-free reflectance ``(6, H, W) float32`` (0-1): new crop phases and sensor noise."""
    phase = rng.uniform(0.3, 1.0, int(land.field_gain.size)).astype(np.float32)[land.field_id]
    crop = material == CROP
    open_land = np.isin(material, OPEN_LAND)
    gain = 1 + 0.05 * land.broad + TEXTURE_AMP[material] * land.fine
    gain *= np.where(open_land, land.field_gain[land.field_id], np.float32(1))
    out = np.empty((len(SENTINEL2_BANDS), *material.shape), np.float32)
    for b in range(out.shape[0]):
        band = SPECTRA[:, b][material]
        ripe = CROP_RIPE[b] + (SPECTRA[CROP, b] - CROP_RIPE[b]) * phase
        out[b] = np.where(crop, ripe, band) * gain
    out *= 1 + 0.02 * rng.standard_normal(out.shape, dtype=np.float32)
    return ndimage.gaussian_filter(out, (0, 0.5, 0.5)).astype(np.float32, copy=False)


def _cloud_opacity(
    rng: np.random.Generator, shape: tuple[int, int], cover: float, sigma_px: float
) -> NDArray[np.float32]:
    """Soft cloud blobs ``(H, W) float32`` in 0-1; ``cover`` of the scene is >= 0.5."""
    puff = smooth_noise(rng, shape, sigma_px) + 0.35 * smooth_noise(rng, shape, sigma_px / 5)
    threshold = np.quantile(puff, 1 - cover)
    return np.clip((puff - threshold) / 0.5 + 0.5, 0, 1).astype(np.float32)


def _add_clouds(
    refl: NDArray[np.float32], opacity: NDArray[np.float32], shadow_px: tuple[int, int]
) -> NDArray[np.float32]:
    """Composite clouds over ``refl`` ``(6, H, W)``; shadows fall ``shadow_px`` (dy, dx) away."""
    h, w = opacity.shape
    dy, dx = shadow_px
    shadow = np.zeros_like(opacity)
    shadow[dy:, dx:] = opacity[: h - dy, : w - dx]
    cloud = CLOUD_SPECTRUM[:, None, None] * (0.85 + 0.15 * opacity)
    return (refl * (1 - 0.6 * shadow) * (1 - opacity) + cloud * opacity).astype(np.float32)


def observe(
    rng: np.random.Generator,
    land: Landscape,
    material: NDArray[np.uint8],
    valid: NDArray[np.bool_],
    cloud_cover: float,
) -> tuple[NDArray[np.uint16], NDArray[np.uint8]]:
    """One acquisition: ``(6, H, W) uint16`` DN (0 = nodata) and ``(H, W) uint8`` truth.

    Args:
        rng: this date's own random stream.
        land: textures shared by both dates.
        material: ``(H, W) uint8`` material ids on this date.
        valid: ``(H, W) bool`` inside the swath; outside, DN 0 and label 255.
        cloud_cover: fraction (0-1) of the scene that is cloud.
    """
    refl = _surface_reflectance(rng, land, material)
    opacity = _cloud_opacity(rng, material.shape, cloud_cover, rng.uniform(10, 25))
    refl = _add_clouds(refl, opacity, (int(rng.integers(8, 20)), int(rng.integers(8, 20))))
    # Sun angle and atmosphere differ a little between dates: a gain and blue-heavy haze.
    haze = rng.uniform(0, 0.01) * np.array([1, 0.7, 0.4, 0, 0, 0], np.float32)
    refl = refl * rng.uniform(0.95, 1.05) + haze[:, None, None]
    dn = np.clip(np.rint(refl * 10_000), 1, 65_535).astype(np.uint16)
    dn[:, ~valid] = 0
    labels = MATERIAL_CLASS[material]
    labels[opacity >= 0.5] = CLOUD_CLASS
    labels[~valid] = NODATA_LABEL
    return dn, labels
