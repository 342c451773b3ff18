"""``areas.csv`` of ``geoseg track``: each object's true area on each date; its COGs' tags
and the outputs of an earlier run that an overwriting one supersedes.

The areas are measured on the instance COGs as written (after overlaps are
resolved and nodata masked), block by block, with the ellipsoidal pixel areas
of :func:`geoseg.areas.pixel_area_m2`: the table always agrees with the rasters.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geoseg import __version__
from geoseg.areas import HECTARE_M2, pixel_area_m2
from geoseg.io.instances import INSTANCE_BANDS
from geoseg.io.labels import CLASSES_TAG
from geoseg.io.raster import Scene
from geoseg.pipelines.prompt_inputs import Prompts, SceneFrame, attribute_row
from geoseg.pipelines.prompt_objects import BLOCK

__all__ = ["AREAS", "area_rows", "date_raster_tags", "earlier_outputs", "written_areas_m2"]

log = logging.getLogger(__name__)

#: The table's file name in the output folder.
AREAS = "areas.csv"


def written_areas_m2(path: Path, frame: SceneFrame) -> dict[int, float]:
    """Object id -> its area in m² in the instance COG ``path`` (band 2), on ``frame``'s grid."""
    totals: dict[int, float] = {}
    with rasterio.open(path) as src:
        for y0 in range(0, frame.height, BLOCK):
            for x0 in range(0, frame.width, BLOCK):
                h, w = min(BLOCK, frame.height - y0), min(BLOCK, frame.width - x0)
                ids = src.read(2, window=Window(x0, y0, w, h))
                hit = ids > 0
                if not hit.any():
                    continue
                area = pixel_area_m2(frame.crs, frame.transform, np.arange(y0, y0 + h),
                                     np.arange(x0, x0 + w))  # fmt: skip
                found, index = np.unique(ids[hit], return_inverse=True)
                sums = np.bincount(index, weights=area[hit], minlength=len(found))
                for k, s in zip(found.tolist(), sums.tolist(), strict=True):
                    totals[k] = totals.get(k, 0.0) + s
    return totals


def area_rows(
    prompts: Prompts, labels: Sequence[str], areas: Sequence[Mapping[int, float]]
) -> tuple[list[dict[str, Any]], int]:
    """One row per prompt: ``object_id``, the prompt's fields, the area in ha on each date
    (column: the date's label), ``note`` (the dates without a mask); and how many
    (object, date) pairs have no mask."""
    rows, lost, clashes = [], 0, set()
    for prompt in prompts.items:
        own = dict(attribute_row(prompts, prompt))
        ha = {label: a.get(prompt.id, 0.0) / HECTARE_M2
              for label, a in zip(labels, areas, strict=True)}  # fmt: skip
        missing = [label for label, v in ha.items() if v == 0]
        lost += len(missing)
        ours = {"object_id": prompt.id, **ha,
                "note": f"no mask on {', '.join(missing)}" if missing else ""}  # fmt: skip
        clashes |= set(own) & set(ours)
        fields = {k: v for k, v in own.items() if k not in ours}
        rows.append({"object_id": prompt.id, **fields, **ha, "note": ours["note"]})
    if clashes:
        log.warning("prompt fields %s are replaced by geoseg's own", ", ".join(sorted(clashes)))
    return rows, lost


def date_raster_tags(scene: Scene, model: str) -> dict[str, str]:
    """The tags of a date's instance COG, as ``geoseg predict`` tags a label map: the
    scene's acquisition date as ``DATE`` (:func:`geoseg.pipelines.predict.date_tags`),
    the model, geoseg's version and the scene's file name."""
    from geoseg.pipelines.predict import date_tags

    return {
        **date_tags(scene.tags), "GEOSEG_MODEL": Path(model).name,
        "GEOSEG_VERSION": __version__, "GEOSEG_SOURCE": Path(scene.path).name,
    }  # fmt: skip


def earlier_outputs(out: Path, written: Sequence[str]) -> list[Path]:
    """The date COGs of an earlier track run in ``out`` that a run writing ``written``
    (file names) does not replace: those named by a date column of the ``areas.csv``
    there (a date label: ``LABEL.tif``) that are instance COGs as track writes them.
    Nothing else (inputs, unknown files) is ever named; none without ``areas.csv``."""
    try:
        with (out / AREAS).open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    names = {f"{c}.tif" for c in header[1:-1] if re.fullmatch(r"[A-Za-z0-9._-]+", c)}
    return sorted(out / n for n in names - set(written) if _is_date_cog(out / n))


def _is_date_cog(path: Path) -> bool:
    """``path`` is an instance COG as :func:`write_object_raster` writes a date's."""
    if not path.is_file():
        return False
    try:
        with rasterio.open(path) as src:
            return (
                src.count == 2 and set(src.dtypes) == {"uint32"}
                and tuple(src.descriptions) == INSTANCE_BANDS and CLASSES_TAG in src.tags()
            )  # fmt: skip
    except RasterioError:
        return False
