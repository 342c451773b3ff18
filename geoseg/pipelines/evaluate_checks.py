"""Checks that keep ``geoseg evaluate`` from scoring a reference it misreads.

A label raster without a class schema (no ``GEOSEG_CLASSES`` tag) has values whose
meaning only its maker knows; evaluate takes them as the model's class ids, which is
right for a map made for this model and silently wrong for any other legend (a
Slovenian LULC raster's 2 = forest scored as the model's 2 = bare gives mIoU 0.0003
and exit 0). These checks say so in words and flag results that look like such a
mismatch, rather than letting a near-zero score pass as a verdict on the model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from geoseg.errors import InvalidRasterError
from geoseg.evaluation.metrics import SegmentationMetrics
from geoseg.io.labels import CLASSES_TAG, read_class_schema
from geoseg.io.vectors_formats import FORMATS
from geoseg.types import ClassSchema

__all__ = ["MIN_COVERAGE", "MIN_MIOU", "MIN_SHARE", "ONE_CLASS_SHARE", "coverage_warning",
           "degenerate_warning", "refuse_vector_reference", "schema_warning"]  # fmt: skip

#: A reference class holding at least this share of the scored pixels with IoU 0 ...
MIN_SHARE = 0.05
#: ... or an mIoU below this, points to label ids that are not the model's classes.
MIN_MIOU = 0.05
_VECTOR_SUFFIXES = {ext for ext, _ in FORMATS.values()} | {".geoparquet", ".json"}
#: A prediction with this share of its pixels in one class is a degenerate model, not
#: a label mismatch (one class everywhere scores IoU 0 on every other class whatever
#: the labels mean).
ONE_CLASS_SHARE = 0.95
#: Share of the scene's valid pixels the reference must label for its score to stand
#: for the scene (labels shifted 500 m scored 4,936 of 10,100 px without a word).
MIN_COVERAGE = 0.9
#: The option that maps reference values to class ids (cli.models.evaluate).
MAP_OPTION = "--map-reference"


def refuse_vector_reference(labels: str | os.PathLike[str]) -> None:
    """Refuse a polygon layer as the reference of a pixel (semantic/change) evaluation.

    Raises:
        InvalidRasterError: ``labels`` has a vector extension; the message says how
            to rasterize it onto the image's grid.
    """
    if Path(labels).suffix.lower() in _VECTOR_SUFFIXES:
        raise InvalidRasterError(
            f"{labels}: is a polygon layer; semantic and change evaluation take a label "
            "raster (polygon references are for --task instance/panoptic): rasterize it "
            "onto the image's grid first, e.g. `gdal_rasterize -a CLASS_FIELD -te XMIN YMIN "
            "XMAX YMAX -tr XRES YRES -ot Byte -a_nodata 255 layer.gpkg labels.tif`"
        )


def _legend(schema: ClassSchema, limit: int = 12) -> str:
    items = [f"{c.id}={c.name}" for c in schema.classes]
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")


def schema_warning(
    labels: str | os.PathLike[str],
    model: str,
    scored: ClassSchema,
    reference_map: Mapping[int, int] | None,
) -> str | None:
    """Why the reference values may not mean the classes they are scored as, or None.

    Args:
        labels: the reference label raster.
        model: ``"spectral"`` or the checkpoint's path (named in the message).
        scored: the classes the values are scored as (the model's or ``--classes``).
        reference_map: the user's value -> class id map; None = values taken as ids.
    """
    if reference_map is not None:
        return None  # the user said what the values mean
    own = read_class_schema(labels)
    name = Path(model).stem
    if own is None:
        return (
            f"{labels}: has no class schema ({CLASSES_TAG} tag): its values are taken as "
            f"{name}'s class ids: {_legend(scored)}; if they mean other classes, map them "
            f"with {MAP_OPTION} (value=class id, e.g. 2=1,3=1)"
        )
    theirs = {c.id: c.name.lower() for c in own.classes}
    differ = [c for c in scored.classes if c.id in theirs and theirs[c.id] != c.name.lower()]
    if not differ:
        return None
    return (
        f"{labels}: its classes ({_legend(own)}) are not {name}'s ({_legend(scored)}) "
        f"but are scored by id; map them with {MAP_OPTION} (value=class id)"
    )


def degenerate_warning(
    labels: str | os.PathLike[str], model: str, metrics: SegmentationMetrics
) -> str | None:
    """A warning when the scores look like mismatched label ids, else None.

    Degenerate: a reference class with >= :data:`MIN_SHARE` of the scored pixels
    has IoU 0, or the mIoU is below :data:`MIN_MIOU`. When the prediction is one class
    on >= :data:`ONE_CLASS_SHARE` of its pixels, the warning says so instead of blaming
    the label ids.
    """
    total = sum(metrics.support)
    if total == 0:
        return None
    missed = [
        f"{name}: IoU 0 over {support / total:.0%} of the reference"
        for name, iou, support in zip(metrics.names, metrics.iou, metrics.support, strict=True)
        if support / total >= MIN_SHARE and iou == 0
    ]
    low = not math.isnan(metrics.miou) and metrics.miou < MIN_MIOU
    if not missed and not low:
        return None
    why = "; ".join([*missed, *([f"mIoU {metrics.miou:.4f}"] if low else [])])
    predicted = sum(metrics.predicted)
    top = max(range(len(metrics.names)), key=lambda k: metrics.predicted[k])
    if predicted and metrics.predicted[top] / predicted >= ONE_CLASS_SHARE:
        return (
            f"{labels}: degenerate scores ({why}): {Path(model).stem} predicts "
            f"{metrics.names[top]} for {metrics.predicted[top] / predicted:.1%} of the pixels, "
            "so the model, not the label ids, is the likely cause: under-trained? (train "
            "longer: more epochs or a larger --time-budget)"
        )
    return (
        f"{labels}: degenerate scores ({why}): the label ids probably do not match "
        f"{Path(model).stem}'s classes; check what the label values mean and map them "
        f"with {MAP_OPTION} (value=class id)"
    )


def coverage_warning(labels: str | os.PathLike[str], image: str, labelled: int,
                     scene: int) -> str | None:  # fmt: skip
    """A warning when ``labels`` cover under :data:`MIN_COVERAGE` of ``image``'s valid pixels.

    Args:
        labelled: valid scene pixels with a reference value.
        scene: valid scene pixels (those with a prediction).
    """
    if scene == 0 or labelled >= MIN_COVERAGE * scene:
        return None
    return (
        f"{labels}: labels cover {labelled / scene:.1%} of the valid pixels of {image} "
        f"({labelled:,} of {scene:,}); the scores describe that part only (check that the "
        "labels lie on the image: CRS, extent, a shifted grid)"
    )
