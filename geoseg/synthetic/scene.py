"""The synthetic two-date scene pair: its grid, its arrays and the generator tying them up."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from rasterio.transform import Affine

from geoseg.errors import GeosegError
from geoseg.synthetic.changes import clear_forest, flood, footprints
from geoseg.synthetic.landscape import base_landscape
from geoseg.synthetic.materials import TURBID
from geoseg.synthetic.observe import observe

__all__ = ["CRS", "GSD_M", "ScenePair", "generate_scene_pair"]

CRS = "EPSG:32633"
GSD_M = 10.0
_ORIGIN = (500_000.0, 5_100_000.0)  # upper-left corner, easting/northing in m
_MIN_SIDE = 64


@dataclass(frozen=True, eq=False)
class ScenePair:
    """Two co-registered observations of one synthetic landscape and their truth.

    Arrays are read-only. ``after`` is the same place one year later.

    Attributes:
        before: ``(6, H, W) uint16`` reflectance x 10000 in ``SENTINEL2_BANDS``
            order; 0 = nodata (all bands together).
        after: ``(6, H, W) uint16``, like ``before``.
        labels_before: ``(H, W) uint8`` class ids of ``TRUTH_SCHEMA``; 255 = nodata,
            exactly where all bands of ``before`` are 0.
        labels_after: ``(H, W) uint8``, like ``labels_before`` for ``after``.
        transform: pixel -> UTM 33N affine transform, 10 m pixels, north up.
        crs: ``"EPSG:32633"``.
    """

    before: NDArray[np.uint16]
    after: NDArray[np.uint16]
    labels_before: NDArray[np.uint8]
    labels_after: NDArray[np.uint8]
    transform: Affine
    crs: str


def generate_scene_pair(height: int = 768, width: int = 1024, seed: int = 0) -> ScenePair:
    """Generate a synthetic two-date Sentinel-2-like scene and its true land cover.

    Between the dates forest is clear-cut (to bare soil or regrowing grassland) and
    the river floods fields beside it. About 8 % of the first date is cloud, about
    1 % of the second. The default size takes well under 2 s; scenes much smaller
    than 256 px may lack a class.

    Args:
        height: rows ``H`` in pixels (>= 64).
        width: columns ``W`` in pixels (>= 64).
        seed: the same seed always gives the same arrays.

    Returns:
        The scene pair; see :class:`ScenePair` for shapes and nodata values.

    Raises:
        GeosegError: if ``height`` or ``width`` is below 64 px.
    """
    if min(height, width) < _MIN_SIDE:
        raise GeosegError(
            f"a synthetic scene needs at least {_MIN_SIDE} x {_MIN_SIDE} px, "
            f"got {height} x {width}; pass a larger height and width"
        )
    land_rng, edge_rng, change_rng, before_rng, after_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    land = base_landscape(land_rng, height, width)
    valid_before, valid_after = footprints(edge_rng, height, width)
    material_after = clear_forest(change_rng, land.material, valid_before & valid_after)
    material_after[flood(change_rng, material_after)] = TURBID
    before, labels_before = observe(before_rng, land, land.material, valid_before, 0.08)
    after, labels_after = observe(after_rng, land, material_after, valid_after, 0.01)
    for array in (before, after, labels_before, labels_after):
        array.flags.writeable = False
    transform = Affine(GSD_M, 0.0, _ORIGIN[0], 0.0, -GSD_M, _ORIGIN[1])
    return ScenePair(before, after, labels_before, labels_after, transform, CRS)
