"""What differs between the two dates: the swath edge, clear-cut forest, flooded fields."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from geoseg.synthetic.canvas import grid, scale, smooth_noise
from geoseg.synthetic.materials import FOREST, GRASS, OPEN_LAND, SLASH, TURBID, WATER

__all__ = ["clear_forest", "flood", "footprints"]


def footprints(rng: np.random.Generator, h: int, w: int) -> tuple[NDArray, NDArray]:
    """Valid masks ``(H, W) bool`` of both dates: a ragged, slanted swath edge in the east."""
    yy, xx = grid(h, w)
    edge = rng.uniform(0.76, 0.84) * w + rng.uniform(0.18, 0.26) * w * yy / h
    edge = edge + rng.integers(-1, 2, size=(h, 1))
    return xx < edge, xx < edge - rng.uniform(4, 12)


def clear_forest(
    rng: np.random.Generator, material: NDArray[np.uint8], valid: NDArray[np.bool_]
) -> NDArray[np.uint8]:
    """Copy of ``material`` with four rectangular clear-cuts: three fresh, one regrown."""
    h, w = material.shape
    out = material.copy()
    forest = material == FOREST
    candidates = np.flatnonzero(forest & valid)
    if candidates.size == 0:
        return out
    yy, xx = grid(h, w)
    for k, idx in enumerate(rng.choice(candidates, size=4)):
        cy, cx = divmod(int(idx), w)
        angle = rng.uniform(0, np.pi)
        half_u, half_v = rng.uniform(12, 30, size=2) * scale((h, w))
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = (yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)
        out[(np.abs(u) < half_u) & (np.abs(v) < half_v) & forest] = SLASH if k < 3 else GRASS
    return out


def flood(rng: np.random.Generator, material: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Open land ``(H, W) bool`` the river overflows into, connected to existing water."""
    water = np.isin(material, (WATER, TURBID))
    dist = ndimage.distance_transform_edt(~water)
    reach = 30 * scale(material.shape) * np.clip(smooth_noise(rng, dist.shape, 40) + 0.4, 0, None)
    flooded = (dist < reach) & np.isin(material, OPEN_LAND)
    parts, _ = ndimage.label(flooded | water)
    wet_parts = np.unique(parts[water])
    return flooded & np.isin(parts, wet_parts[wet_parts > 0])
