"""Prompt longitudes on a geographic scene that crosses the antimeridian.

Such a scene's grid runs on past +180 (or below -180): a scene starting at
179.99 deg holds 180.002 deg, the place most tools write -179.998. A prompt's
longitude is taken modulo 360 into the turn of the globe centred on the scene,
so both spellings fall on the same pixel; a scene that stays within -180..180
keeps every coordinate as given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyproj
import shapely
from affine import Affine

__all__ = ["Wrap", "longitude_wrap", "wrap_geometries"]

#: ``wrap(x) -> x``: ``(N,) float64`` longitudes into the scene's turn of the globe.
Wrap = Callable[[np.ndarray], np.ndarray]


def longitude_wrap(crs: Any, transform: Affine, width: int) -> Wrap | None:
    """How to wrap longitudes into the scene's range; None where nothing needs it.

    Args:
        crs: the scene's CRS (any pyproj input).
        transform: its pixel -> CRS transform (north-up: x is the longitude).
        width: its width in px.

    Returns:
        ``wrap(x)`` for a geographic scene whose longitudes reach beyond +-180
        (half a turn in the CRS's angular unit); None otherwise.
    """
    parsed = pyproj.CRS.from_user_input(crs)
    if not parsed.is_geographic or not parsed.axis_info:
        return None
    radians = parsed.axis_info[0].unit_conversion_factor
    if not radians:
        return None
    turn = 2 * math.pi / radians  # 360 for degrees
    west = transform.c
    east = west + width * transform.a
    if min(west, east) >= -turn / 2 and max(west, east) <= turn / 2:
        return None
    start = (west + east) / 2 - turn / 2

    def wrap(x: np.ndarray) -> np.ndarray:
        return start + np.mod(np.asarray(x, np.float64) - start, turn)

    return wrap


def wrap_geometries(geoms: np.ndarray, wrap: Wrap | None) -> np.ndarray:
    """``(N,) object`` geometries with every vertex's x wrapped (as they are without ``wrap``).

    Vertex by vertex, so a polygon written across the antimeridian (179.99 to
    -179.99) comes out whole on the scene's side.
    """
    if wrap is None:
        return geoms

    def on_scene(xy: np.ndarray) -> np.ndarray:
        return np.column_stack([wrap(xy[:, 0]), xy[:, 1]])

    return np.asarray(shapely.transform(geoms, on_scene), dtype=object)
