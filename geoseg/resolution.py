"""A scene's pixel size against a model's: warn when off, refuse when far off.

A model sees objects at the size in pixels it was trained on. The shipped
land-cover model (trained at ~10 m) run on the same bands resampled to 300 m
still labels every pixel, with full confidence and exit code 0 — a confident
wrong map. Every command that runs a checkpoint on a scene (predict, evaluate,
calibrate, prompt, track, run, the cloud mask) and ``train --plan`` compare both
ground sample distances here, in metres (a geographic scene's at its centre,
geodesic; the same measure training records). An older checkpoint's GSD in
degrees is compared like for like: with a lon/lat scene's degrees, or measured
the same geodesic way at a projected scene's centre latitude. Over :data:`GSD_WARN` times off
either way warns; over :data:`GSD_REFUSE` refuses unless the user says to go on
(``--ignore-gsd``). A model without a recorded GSD is not checked; a scene whose
pixel size cannot be put in the model's unit (a local grid) warns that it was not.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, NamedTuple, Protocol

from affine import Affine
from pyproj import CRS, Geod, Transformer

from geoseg.errors import GsdMismatchError, UnsupportedCRSError
from geoseg.types import DEGREE_GSD_BELOW

__all__ = ["GSD_REFUSE", "GSD_WARN", "check_gsd_of", "check_scene_gsd", "gsd_ratio", "scene_gsd_m"]

log = logging.getLogger(__name__)

#: GSD ratio (either way) over which a model's window and object sizes in px are wrong.
GSD_REFUSE = 4.0
#: GSD ratio over which a warning says the model sees objects at another size in px.
GSD_WARN = 1.5
_GEOD = Geod(ellps="WGS84")


def gsd_ratio(a_m: float, b_m: float) -> float:
    """How many times the larger of two pixel sizes (m, > 0) is the smaller (>= 1)."""
    return max(a_m / b_m, b_m / a_m)


def _as_crs(crs: Any) -> CRS:
    """A pyproj CRS from a rasterio CRS, a pyproj CRS or any user input."""
    return CRS.from_wkt(crs.to_wkt()) if hasattr(crs, "to_wkt") else CRS.from_user_input(crs)


def _geodesic_side_m(lon: float, lat: float, dx: float, dy: float) -> float:
    """``sqrt(east-west x north-south)`` geodesic sides (WGS84), m, of a ``dx`` by ``dy``
    degree pixel centred on ``lon, lat``."""
    ew = _GEOD.inv(lon - dx / 2, lat, lon + dx / 2, lat)[2]
    ns = _GEOD.inv(lon, lat - dy / 2, lon, lat + dy / 2)[2]
    return float(math.sqrt(ew * ns))


def scene_gsd_m(crs: Any, transform: Affine, shape: tuple[int, int]) -> float | None:
    """A north-up ``(H, W)`` raster's pixel size in metres; None in a CRS of unknown unit.

    Geographic CRS: ``sqrt(east-west x north-south)`` geodesic side lengths (pyproj
    Geod, WGS84) of the scene's centre pixel, as :func:`geoseg.areas.pixel_size_m`
    measures training data (a 0.0009 degree pixel at 46 N: 69.8 x 100.0 m, 83.5 m).
    Projected CRS: the pixel width in its linear unit, in metres. Only a local
    (engineering) grid goes through :mod:`geoseg.areas`, whose shapely import a
    plain ``predict`` does not otherwise pay.
    """
    crs = _as_crs(crs)
    if crs.is_geographic:
        h, w = shape
        lon, lat = transform @ (w // 2 + 0.5, h // 2 + 0.5)
        return _geodesic_side_m(lon, lat, abs(transform.a), abs(transform.e))
    if not crs.is_engineering and crs.axis_info:
        return abs(transform.a) * float(crs.axis_info[0].unit_conversion_factor or 1.0)
    from geoseg.areas import pixel_size_m

    try:
        return pixel_size_m(crs, transform, shape)
    except UnsupportedCRSError:  # a local grid in an unknown unit: nothing to compare
        return None


class _Compared(NamedTuple):
    """Both pixel sizes in one unit, and the model's in the scene CRS's unit (``-tr``)."""

    model: float
    scene: float
    unit: str
    tr: float
    note: str = ""


def _unit_factor(crs: CRS) -> float:
    """The first axis's unit: metres per unit (projected) or radians per unit (geographic)."""
    return float(crs.axis_info[0].unit_conversion_factor or 1.0) if crs.axis_info else 1.0


def _degree_model(
    model_deg: float, crs: CRS, transform: Affine, shape: tuple[int, int]
) -> _Compared | str:
    """An older checkpoint's GSD in degrees against a scene, like for like.

    A geographic scene: degrees with degrees, no conversion. A projected scene: the
    model's degree pixel measured as :func:`scene_gsd_m` measures a lon/lat grid
    (geodesic, WGS84) at the scene centre's latitude, assuming the model's training
    ground lay near it (a degree's east-west length shrinks with cos(latitude)).
    A scene with no place on Earth (a local grid): why nothing can be compared.
    """
    if crs.is_geographic:
        scene_deg = math.degrees(abs(transform.a) * _unit_factor(crs))
        tr = model_deg / math.degrees(_unit_factor(crs))
        return _Compared(model_deg, scene_deg, "degrees", tr)
    scene_m = scene_gsd_m(crs, transform, shape)
    recorded = f"the model recorded its pixel size in degrees ({model_deg:.4g}°)"
    if crs.is_engineering or scene_m is None or crs.geodetic_crs is None:
        return (
            f"{recorded} and the scene's CRS {crs.name!r} is a local grid with no latitude "
            "to measure a degree at"
        )
    h, w = shape
    x, y = transform @ (w // 2 + 0.5, h // 2 + 0.5)
    lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(x, y)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return f"{recorded} and the scene's centre has no longitude/latitude in {crs.name!r}"
    model_m = _geodesic_side_m(lon, lat, model_deg, model_deg)
    note = f" ({model_deg:.4g} degrees at latitude {lat:.1f})"
    return _Compared(model_m, scene_m, "m", model_m / _unit_factor(crs), note)


def _compare(
    model_gsd: float, crs: CRS, transform: Affine, shape: tuple[int, int]
) -> _Compared | str:
    """Model and scene pixel sizes in one unit, or why they cannot be compared."""
    if model_gsd < DEGREE_GSD_BELOW:
        return _degree_model(model_gsd, crs, transform, shape)
    scene_m = scene_gsd_m(crs, transform, shape)
    if scene_m is None:
        return f"the scene's local grid {crs.name!r} has no unit to measure its pixels in metres"
    projected = not crs.is_geographic and not crs.is_engineering and crs.axis_info
    return _Compared(model_gsd, scene_m, "m", model_gsd / _unit_factor(crs) if projected
                     else model_gsd)  # fmt: skip


def check_scene_gsd(
    path: str,
    model: str,
    model_gsd: float | None,
    crs: Any,
    transform: Affine,
    shape: tuple[int, int],
    ignore: bool = False,
) -> None:
    """Warn or refuse when ``path``'s pixel size is far from ``model``'s training GSD.

    Args:
        path: the scene (named in the message).
        model: the checkpoint (named in the message).
        model_gsd: :attr:`geoseg.types.ModelMeta.gsd_m` as recorded: metres, or an older
            checkpoint's degrees (under :data:`geoseg.types.DEGREE_GSD_BELOW`), compared
            like for like by :func:`_degree_model` (None: not recorded, no check).
        crs: the scene's CRS.
        transform: the scene's north-up affine transform.
        shape: the scene's ``(H, W)`` in pixels.
        ignore: ``--ignore-gsd``: a far-off GSD only warns.

    A scene that cannot be compared (a local grid with a degree-recorded model, or in
    an unknown unit) logs one warning saying why, and is not refused.

    Raises:
        GsdMismatchError: the two differ by more than :data:`GSD_REFUSE` times and
            ``ignore`` is False.
    """
    if not model_gsd:
        return
    c = _compare(model_gsd, _as_crs(crs), transform, shape)
    if isinstance(c, str):  # skipped, but said: a wrong-resolution map would pass unnoticed
        log.warning(
            "%s: pixel size not compared with the model %s's: %s; check by hand that the "
            "scene's resolution matches the model's training data",
            path, os.path.basename(model), c,
        )  # fmt: skip
        return
    if not c.scene:
        return
    ratio = gsd_ratio(c.model, c.scene)
    what = (
        f"{path}: pixels of {c.scene:.3g} {c.unit}, the model {os.path.basename(model)} was "
        f"trained at {c.model:.3g} {c.unit}{c.note} ({ratio:.1f}x "
        f"{'coarser' if c.scene > c.model else 'finer'})"
    )
    if ratio > GSD_REFUSE and not ignore:
        # averaging suits shrinking a finer scene; a coarser one can only be interpolated
        how = "bilinear" if c.scene > c.model else "average"
        lonlat = c.unit == "m" and _as_crs(crs).is_geographic
        raise GsdMismatchError(
            f"{what}; its objects would be {ratio:.1f}x off in pixels and the map meaningless: "
            f"resample the scene to the model's pixel size (gdalwarp -tr {c.tr:.4g} "
            f"{c.tr:.4g} -r {how}"
            + ("; a lon/lat scene also needs -t_srs with a metric CRS such as its UTM zone"
               if lonlat else "")
            + "), or pass --ignore-gsd"
        )  # fmt: skip
    if ratio > GSD_WARN:
        log.warning("%s; objects look %.1fx off in pixels, expect a worse map", what, ratio)


class _Grid(Protocol):
    """What :func:`check_gsd_of` reads of an opened scene (:class:`geoseg.io.raster.Scene`)."""

    @property
    def crs(self) -> Any: ...
    @property
    def transform(self) -> Affine: ...
    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...


def check_gsd_of(
    scene: _Grid, path: str, model: str, model_gsd: float | None, ignore: bool = False
) -> None:
    """:func:`check_scene_gsd` of an opened scene (its CRS, transform and shape)."""
    check_scene_gsd(
        path, model, model_gsd, scene.crs, scene.transform, (scene.height, scene.width), ignore
    )
