"""Checks of the reference that ``geoseg evaluate --task instance|panoptic`` scores.

An id raster is scored pixel by pixel against the prediction, so it must lie on the
prediction's (the image's) grid; reference classes that are not the model's cannot be
scored and are reported, not dropped without a word.
"""

from __future__ import annotations

import shlex
from collections import Counter
from pathlib import Path

import rasterio

from geoseg.errors import InvalidRasterError
from geoseg.io.grids import same_transform
from geoseg.io.training_data import refuse_labels_off_image
from geoseg.types import ClassSchema

__all__ = ["refuse_reference_off_grid", "unknown_classes_warning"]


def refuse_reference_off_grid(reference: str, prediction: str) -> None:
    """Refuse an id raster that lies off the prediction (the image) or on another grid.

    Ids are not resampled here: a reference in another CRS or on a shifted grid is
    refused with the ``gdalwarp`` command that writes it on the prediction's grid
    (nearest). Same CRS and transform with another size: the reader's size message.

    Raises:
        InvalidRasterError: the message names ``reference`` and what differs.
    """
    with rasterio.open(prediction) as pred, rasterio.open(reference) as ref:
        if ref.crs == pred.crs and same_transform(ref.transform, pred.transform):
            return
        if ref.crs is None:
            raise InvalidRasterError(
                f"{reference}: the reference raster has no CRS; write it on the grid of "
                f"{prediction} (its CRS and transform) or give a polygon layer"
            )
        b, crs, size = pred.bounds, pred.crs, (pred.width, pred.height)
        other_crs = ref.crs != pred.crs
    corners = " ".join(repr(float(v)) for v in (b.left, b.bottom, b.right, b.top))
    warp = (
        f"`gdalwarp -r near -t_srs {crs.to_string() if crs else 'CRS'} -te {corners} "
        f"-ts {size[0]} {size[1]} "
        f"{shlex.quote(reference)} {shlex.quote(str(Path(reference).with_suffix('.ongrid.tif')))}`"
    )
    refuse_labels_off_image(reference, prediction, "give the reference of this area")
    what = f"is in {ref.crs}, the image in {crs}" if other_crs else "is on a shifted grid"
    raise InvalidRasterError(
        f"{reference}: {what} (its pixels are not the image's, that of {prediction}); ids are "
        f"not resampled: write it on the image's grid (nearest), e.g. {warp}, or give a "
        "polygon layer"
    )


def unknown_classes_warning(
    reference: str, schema: ClassSchema, classes_of: str,
    pixels: Counter[int], segments: set[tuple[int, int]],
) -> str | None:  # fmt: skip
    """The warning about reference classes outside ``schema`` (not scored), or None."""
    if not pixels:
        return None
    each = ", ".join(
        f"{v}: {n:,} px, {sum(1 for c, _ in segments if c == v)} objects"
        for v, n in sorted(pixels.items())
    )
    return (
        f"{reference}: reference classes that are not classes of {classes_of} "
        f"({', '.join(map(str, schema.ids))}) were not scored: {each}; write the reference's "
        "class band in the model's class ids, or check the label file"
    )
