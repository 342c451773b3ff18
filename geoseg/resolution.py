"""A scene's pixel size against a model's: warn when off, refuse when far off.

A model sees objects at the size in pixels it was trained on. The shipped
land-cover model (trained at ~10 m) run on the same bands resampled to 300 m
still labels every pixel, with full confidence and exit code 0 — a confident
wrong map. Every command that runs a checkpoint on a scene (predict, evaluate,
calibrate, prompt, track, run, the cloud mask) and ``train --plan`` compare both
ground sample distances here, in metres (a geographic scene's at its centre,
geodesic; the same measure training records). Over :data:`GSD_WARN` times off
either way warns; over :data:`GSD_REFUSE` refuses unless the user says to go on
(``--ignore-gsd``). A model without a recorded GSD is not checked.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from affine import Affine
from pyproj import CRS, Geod

from geoseg.errors import GsdMismatchError, UnsupportedCRSError

__all__ = ["GSD_REFUSE", "GSD_WARN", "check_scene_gsd", "gsd_ratio", "scene_gsd_m"]

log = logging.getLogger(__name__)

#: GSD ratio (either way) over which a model's window and object sizes in px are wrong.
GSD_REFUSE = 4.0
#: GSD ratio over which a warning says the model sees objects at another size in px.
GSD_WARN = 1.5
_GEOD = Geod(ellps="WGS84")


def gsd_ratio(a_m: float, b_m: float) -> float:
    """How many times the larger of two pixel sizes (m, > 0) is the smaller (>= 1)."""
    return max(a_m / b_m, b_m / a_m)


def scene_gsd_m(crs: Any, transform: Affine, shape: tuple[int, int]) -> float | None:
    """A north-up ``(H, W)`` raster's pixel size in metres; None in a CRS of unknown unit.

    Geographic CRS: ``sqrt(east-west x north-south)`` geodesic side lengths (pyproj
    Geod, WGS84) of the scene's centre pixel, as :func:`geoseg.areas.pixel_size_m`
    measures training data (a 0.0009 degree pixel at 46 N: 69.8 x 100.0 m, 83.5 m).
    Projected CRS: the pixel width in its linear unit, in metres. Only a local
    (engineering) grid goes through :mod:`geoseg.areas`, whose shapely import a
    plain ``predict`` does not otherwise pay.
    """
    crs = CRS.from_wkt(crs.to_wkt()) if hasattr(crs, "to_wkt") else CRS.from_user_input(crs)
    if crs.is_geographic:
        h, w = shape
        lon, lat = transform @ (w // 2 + 0.5, h // 2 + 0.5)
        dx, dy = abs(transform.a), abs(transform.e)
        ew = _GEOD.inv(lon - dx / 2, lat, lon + dx / 2, lat)[2]
        ns = _GEOD.inv(lon, lat - dy / 2, lon, lat + dy / 2)[2]
        return float(math.sqrt(ew * ns))
    if not crs.is_engineering and crs.axis_info:
        return abs(transform.a) * float(crs.axis_info[0].unit_conversion_factor or 1.0)
    from geoseg.areas import pixel_size_m

    try:
        return pixel_size_m(crs, transform, shape)
    except UnsupportedCRSError:  # a local grid in an unknown unit: nothing to compare
        return None


def check_scene_gsd(
    path: str,
    model: str,
    model_gsd_m: float | None,
    scene_m: float | None,
    ignore: bool = False,
) -> None:
    """Warn or refuse when ``path``'s pixel size is far from ``model``'s training GSD.

    Args:
        path: the scene (named in the message).
        model: the checkpoint (named in the message).
        model_gsd_m: the GSD the model was trained at, m (None: not recorded, no check).
        scene_m: the scene's pixel size, m (None: unknown unit, no check).
        ignore: ``--ignore-gsd``: a far-off GSD only warns.

    Raises:
        GsdMismatchError: the two differ by more than :data:`GSD_REFUSE` times and
            ``ignore`` is False.
    """
    if not model_gsd_m or not scene_m:
        return
    ratio = gsd_ratio(model_gsd_m, scene_m)
    what = (
        f"{path}: pixels of {scene_m:.3g} m, the model {os.path.basename(model)} was trained "
        f"at {model_gsd_m:.3g} m ({ratio:.1f}x {'coarser' if scene_m > model_gsd_m else 'finer'})"
    )
    if ratio > GSD_REFUSE and not ignore:
        # averaging suits shrinking a finer scene; a coarser one can only be interpolated
        how = "bilinear" if scene_m > model_gsd_m else "average"
        raise GsdMismatchError(
            f"{what}; its objects would be {ratio:.1f}x off in pixels and the map meaningless: "
            f"resample the scene to the model's pixel size (gdalwarp -tr {model_gsd_m:.4g} "
            f"{model_gsd_m:.4g} -r {how}; a lon/lat scene also needs -t_srs with a metric "
            "CRS such as its UTM zone), or pass --ignore-gsd"
        )
    if ratio > GSD_WARN:
        log.warning("%s; objects look %.1fx off in pixels, expect a worse map", what, ratio)
