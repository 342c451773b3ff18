"""The landscape of the first date: river and lake, fields, forest, a town, a gravel pit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from geoseg.synthetic.canvas import grid, smooth_noise
from geoseg.synthetic.materials import (
    ASPHALT,
    BARE,
    CONCRETE,
    DARK_ROOF,
    FOREST,
    GRASS,
    OPEN_LAND,
    SUBURB,
    TILE_ROOF,
    WATER,
)

__all__ = ["Landscape", "base_landscape"]


@dataclass(frozen=True, eq=False)
class Landscape:
    """Material map of the first date and the textures both dates share.

    Attributes:
        material: ``(H, W) uint8`` material id on the first date.
        field_id: ``(H, W) intp`` index of the field cell holding each pixel.
        field_gain: ``(n_fields,) float32`` brightness of each field (soil, moisture).
        broad: ``(H, W) float32`` smooth zero-mean brightness variation.
        fine: ``(H, W) float32`` per-pixel zero-mean texture.
    """

    material: NDArray[np.uint8]
    field_id: NDArray[np.intp]
    field_gain: NDArray[np.float32]
    broad: NDArray[np.float32]
    fine: NDArray[np.float32]


def _river_and_lake(rng: np.random.Generator, h: int, w: int) -> NDArray[np.bool_]:
    """Water mask ``(H, W) bool``: a north-south meandering river and a lake beside it."""
    yy, xx = grid(h, w)
    y = yy[:, 0]
    wander = ndimage.gaussian_filter1d(rng.standard_normal(h + 200), 40)[100 : 100 + h]
    wander /= wander.std() + 1e-12
    period = rng.uniform(0.6, 1.1) * h
    centre = rng.uniform(0.15, 0.25) * w + 0.03 * w * wander
    centre += 0.04 * w * np.sin(2 * np.pi * y / period + rng.uniform(0, 2 * np.pi))
    half_width = 4.5 + 1.5 * np.sin(2 * np.pi * y / rng.uniform(80, 160))
    water = np.abs(xx - centre[:, None]) < half_width[:, None]
    radius = max(6.0, 0.07 * min(h, w))
    lake_y = rng.uniform(0.55, 0.8) * h
    lake_x = centre[int(lake_y)] - 0.9 * radius  # west of the river, away from the town
    dist = np.hypot((yy - lake_y) / 0.75, xx - lake_x) / radius
    return water | (dist + 0.25 * smooth_noise(rng, (h, w), 12) < 1)


def _field_cells(rng: np.random.Generator, h: int, w: int) -> tuple[NDArray, NDArray, int]:
    """Rotated grid of 250-700 m fields: ``(H, W) intp`` index, ``(H, W) bool`` hedges, count."""
    yy, xx = grid(h, w)
    angle = rng.uniform(-0.35, 0.35)
    coords = (xx * np.cos(angle) + yy * np.sin(angle), yy * np.cos(angle) - xx * np.sin(angle))
    index, edge, count = np.zeros((h, w), np.intp), np.zeros((h, w), bool), 1
    for coord in coords:
        lo, hi = float(coord.min()), float(coord.max())
        cuts = lo - 1 + np.cumsum(rng.uniform(25, 70, size=int((hi - lo) / 25) + 2))
        idx = np.searchsorted(cuts, coord)
        near = np.minimum(
            np.abs(coord - cuts[np.minimum(idx, cuts.size - 1)]),
            np.abs(coord - cuts[np.maximum(idx - 1, 0)]),
        )
        edge |= near < 0.75
        index, count = index * (cuts.size + 1) + idx, count * (cuts.size + 1)
    return index, edge, count


def _town(rng: np.random.Generator, h: int, w: int) -> NDArray[np.uint8]:
    """Town materials ``(H, W) uint8`` (streets, blocks, parks, a main road); 255 = not town."""
    yy, xx = grid(h, w)
    dy, dx = yy - rng.uniform(0.35, 0.65) * h, xx - rng.uniform(0.45, 0.6) * w
    radius, block = max(12.0, 0.12 * min(h, w)), rng.uniform(18, 26)
    angle, road_angle = rng.uniform(0, np.pi / 2), rng.uniform(0, np.pi)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = dy * np.cos(angle) - dx * np.sin(angle)
    n = int(2 * radius / block) + 2
    kinds = rng.choice(
        np.array([CONCRETE, TILE_ROOF, DARK_ROOF, SUBURB, GRASS], np.uint8),
        p=[0.25, 0.3, 0.1, 0.25, 0.1],
        size=(2 * n + 1, 2 * n + 1),
    )
    bi = np.clip(np.floor(u / block).astype(np.intp) + n, 0, 2 * n)
    bj = np.clip(np.floor(v / block).astype(np.intp) + n, 0, 2 * n)
    street = (np.mod(u, block) < 3) | (np.mod(v, block) < 3)
    town = np.where(street, np.uint8(ASPHALT), kinds[bi, bj])
    inside = np.hypot(dx, dy) / radius + 0.3 * smooth_noise(rng, (h, w), 20) < 1
    town[~inside] = 255
    town[np.abs(dx * np.sin(road_angle) - dy * np.cos(road_angle)) < 1.2] = ASPHALT
    return town


def base_landscape(rng: np.random.Generator, h: int, w: int) -> Landscape:
    """Material map of the first date plus the textures both dates share.

    Args:
        rng: the landscape's own random stream.
        h: rows ``H`` in pixels.
        w: columns ``W`` in pixels.

    Returns:
        The landscape; see :class:`Landscape` for shapes.
    """
    field_id, edge, n_fields = _field_cells(rng, h, w)
    field_kind = rng.choice(np.array(OPEN_LAND, np.uint8), p=[0.6, 0.28, 0.12], size=n_fields)
    material = field_kind[field_id]
    material[edge] = GRASS
    forest = smooth_noise(rng, (h, w), 45) + 0.3 * smooth_noise(rng, (h, w), 5)
    material[forest > np.quantile(forest, 0.68)] = FOREST
    yy, xx = grid(h, w)  # a gravel pit north or south of the town, so bare soil always shows
    pit_y = rng.choice([rng.uniform(0.08, 0.22), rng.uniform(0.78, 0.92)]) * h
    pit = np.hypot(yy - pit_y, (xx - rng.uniform(0.3, 0.65) * w) / 1.5) < 0.035 * min(h, w)
    material[pit] = BARE
    material[_river_and_lake(rng, h, w)] = WATER
    town = _town(rng, h, w)
    material = np.where(town != 255, town, material)
    fine = ndimage.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), 0.8)
    return Landscape(
        material=material,
        field_id=field_id,
        field_gain=rng.uniform(0.85, 1.15, n_fields).astype(np.float32),
        broad=smooth_noise(rng, (h, w), 15),
        fine=fine / (fine.std() + 1e-12),
    )
