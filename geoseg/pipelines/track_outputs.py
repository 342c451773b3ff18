"""``areas.csv`` of ``geoseg track``: each object's true area on each date.

The areas are measured on the instance COGs as written (after overlaps are
resolved and nodata masked), block by block, with the ellipsoidal pixel areas
of :func:`geoseg.areas.pixel_area_m2`: the table always agrees with the rasters.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.areas import HECTARE_M2, pixel_area_m2
from geoseg.pipelines.prompt_inputs import Prompts, SceneFrame, attribute_row
from geoseg.pipelines.prompt_objects import BLOCK

__all__ = ["AREAS", "area_rows", "written_areas_m2"]

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
