"""Where a report's maps lie: CRS by name, extent coordinates, scale bars.

Ground distances for a scale bar are geodesic (WGS84) along the middle row of
the map, so they hold in any CRS with a datum, geographic ones included; a CRS
without a datum (a local engineering grid) is measured in its linear unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError, ProjError

from geoseg.areas import pyproj_crs

__all__ = ["Grid", "MapFigure", "crs_name", "extent_lines", "ground_width_m", "scale_bar"]

_GEOD = Geod(ellps="WGS84")
_NICE = (1, 2, 5)
_ROW_POINTS = 65  # points along the middle row: follows curved rows in any projection


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, pixel-to-CRS transform and ``(height, width)`` in pixels."""

    crs: Any
    transform: Affine
    height: int
    width: int


@dataclass(frozen=True)
class MapFigure:
    """A map image of the report with its legend and scale bar.

    Attributes:
        file: the PNG beside the page.
        caption: what it shows.
        legend: ``(name, (r, g, b))`` of each colour in it.
        scale: ``(bar_px, label)`` of a scale bar at the PNG's own size, or None.
        width_px: the PNG's width; the page shows it at this size so the bar holds.
    """

    file: str
    caption: str
    legend: tuple[tuple[str, tuple[int, int, int]], ...]
    scale: tuple[int, str] | None
    width_px: int


def crs_name(crs: Any) -> str:
    """``WGS 84 / UTM zone 33N (EPSG:32633)``; the name alone without an EPSG code."""
    try:
        c = pyproj_crs(crs)
    except CRSError:
        return "unknown CRS"
    code = c.to_epsg()
    name = c.name or "unnamed CRS"
    return f"{name} (EPSG:{code})" if code else name


def _to_lonlat(c: CRS) -> Transformer | None:
    try:
        return Transformer.from_crs(c, CRS.from_epsg(4326), always_xy=True)
    except ProjError:  # no datum: a local engineering grid
        return None


def _bounds(grid: Grid) -> tuple[float, float, float, float]:
    t = grid.transform
    xs = [t.c, t.c + t.a * grid.width]
    ys = [t.f, t.f + t.e * grid.height]
    return min(xs), min(ys), max(xs), max(ys)


def extent_lines(grid: Grid) -> list[str]:
    """The extent in CRS units and, where the CRS has a datum, in WGS84 lon/lat."""
    c = pyproj_crs(grid.crs)
    left, bottom, right, top = _bounds(grid)
    unit = c.axis_info[0].unit_name if c.axis_info else "CRS units"
    nd = 6 if c.is_geographic else 2
    lines = [f"x {left:,.{nd}f} to {right:,.{nd}f}, y {bottom:,.{nd}f} to {top:,.{nd}f} ({unit})"]
    to_ll = _to_lonlat(c)
    if to_ll is not None and not c.is_geographic:
        xs = np.linspace(left, right, _ROW_POINTS)
        ys = np.linspace(bottom, top, _ROW_POINTS)
        ex = np.concatenate([xs, xs, np.full_like(ys, left), np.full_like(ys, right)])
        ey = np.concatenate([np.full_like(xs, bottom), np.full_like(xs, top), ys, ys])
        lon, lat = to_ll.transform(ex, ey)
        lines.append(
            f"longitude {np.min(lon):.5f}° to {np.max(lon):.5f}°, "
            f"latitude {np.min(lat):.5f}° to {np.max(lat):.5f}° (WGS 84)"
        )
    return lines


def ground_width_m(grid: Grid) -> float | None:
    """Ground length (m) of the grid's middle row, or None when the CRS has no known unit."""
    c = pyproj_crs(grid.crs)
    t = grid.transform
    cols = np.linspace(0.0, grid.width, _ROW_POINTS)
    x = t.c + t.a * cols + t.b * grid.height / 2
    y = t.f + t.d * cols + t.e * grid.height / 2
    to_ll = _to_lonlat(c)
    if to_ll is not None:
        lon, lat = to_ll.transform(x, y)
        return float(_GEOD.line_length(lon, lat))
    factor = c.axis_info[0].unit_conversion_factor if c.axis_info else None
    if not factor or c.axis_info[0].unit_name in ("degree", "radian"):
        return None
    return float(np.hypot(np.diff(x), np.diff(y)).sum() * factor)


def _distance_label(metres: float) -> str:
    if metres >= 1000:
        return f"{metres / 1000:g} km"
    return f"{metres:g} m"


def scale_bar(
    width_m: float | None, image_px: int, target_px: float = 150
) -> tuple[int, str] | None:
    """``(bar_px, label)``: a 1/2/5 x 10^n length near ``target_px`` long, or None.

    Args:
        width_m: ground width of the image (m), or None when unknown.
        image_px: the image's width in px.
        target_px: about how long the bar should be (at most half the image).
    """
    if not width_m or width_m <= 0 or image_px <= 0:
        return None
    m_per_px = width_m / image_px
    want = m_per_px * min(target_px, image_px / 2)
    exp = math.floor(math.log10(want))
    nice = max(n * 10.0**exp for n in _NICE if n * 10.0**exp <= want)
    return max(1, round(nice / m_per_px)), _distance_label(nice)
