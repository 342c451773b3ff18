"""GDAL's per-band scale and offset: a file that says how its values map to physical units.

geoseg maps stored values to reflectance by the storage type alone
(:func:`geoseg.models.bands.reflectance_scale`: uint16 x 1e-4, uint8 / 255, float as
is) and applies no offset, which is how every model it trains or imports was fed. A
file whose bands declare another mapping in GDAL metadata (``gdalinfo``'s
``Offset: -0.1, Scale:0.0001``: Sentinel-2 L2A from processing baseline 04.00 on, with
its -1000 DN offset; Landsat Collection 2 surface reflectance, x 2.75e-5 - 0.2) holds
other units than the model saw, and the map can be confidently wrong with no error.
:func:`declared_scaling` finds those bands; the pipelines warn with the
``gdal_translate -unscale`` that converts the file to reflectance.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from geoseg.io.georef import open_raster_quietly
from geoseg.models.bands import reflectance_scale

__all__ = ["DeclaredScaling", "declared_scaling", "scaling_warning"]


@dataclass(frozen=True)
class DeclaredScaling:
    """One band whose GDAL scale/offset differs from geoseg's reading of its type.

    Attributes:
        band: the band's description, or its 1-based number.
        scale: the declared multiplier (physical value = stored x scale + offset).
        offset: the declared offset, in physical units.
        assumed: the multiplier geoseg uses for the storage type (offset 0).
    """

    band: str
    scale: float
    offset: float
    assumed: float


def declared_scaling(path: str | os.PathLike[str], index: Sequence[int]) -> list[DeclaredScaling]:
    """The bands of ``index`` (0-based) whose declared scale/offset is neither none
    (1, 0) nor geoseg's own reading of the storage type (type multiplier, 0)."""
    with open_raster_quietly(path) as src:
        assumed = reflectance_scale(src.dtypes[0], os.fspath(path))
        found = []
        for i in index:
            scale, offset = float(src.scales[i]), float(src.offsets[i])
            if offset == 0 and (scale == 1 or math.isclose(scale, assumed, rel_tol=1e-6)):
                continue
            found.append(DeclaredScaling(src.descriptions[i] or str(i + 1), scale, offset,
                                         assumed))  # fmt: skip
    return found


def scaling_warning(path: str | os.PathLike[str], found: Sequence[DeclaredScaling]) -> str:
    """The one-line warning for :func:`declared_scaling`'s bands (the first is quoted)."""
    first = found[0]
    sign = "-" if first.offset < 0 else "+"
    others = f" (and {len(found) - 1} more band(s))" if len(found) > 1 else ""
    return (
        f"{path}: band {first.band}{others} declares value x {first.scale:g} {sign} "
        f"{abs(first.offset):g} (GDAL scale/offset), but geoseg reads its values as value x "
        f"{first.assumed:g} with no offset, as models are trained and fed; if the model was "
        "trained on data without this scaling (e.g. Sentinel-2 L2A before processing baseline "
        "04.00), its map may be wrong: convert first with `gdal_translate -unscale -ot "
        f"Float32 {os.path.basename(os.fspath(path))} reflectance.tif` and run on "
        "reflectance.tif"
    )
