"""``geoseg evaluate`` of a SAM checkpoint: the prompt setting, one object per prompt.

Each reference polygon becomes one box prompt (its bounding box in the image's
CRS, plus up to ``interior_points`` positive points inside it, as
``geoseg prompt --boxes LAYER --interior-points N`` makes them), SAM's best mask
is the prediction for that polygon, and the score is the IoU of the two
(:func:`geoseg.pipelines.prompt_refine.mask_iou`: on the image's pixel grid, each
pixel weighted by its true ellipsoidal area, the layer reprojected first). An
empty mask scores 0. ``metrics.json`` holds the mean, median, share with IoU >= 0.5
and count, and each polygon's IoU and SAM's predicted IoU (``score``). The IoU
counts the image's valid pixels only; polygons outside the image (``outside``)
and polygons whose pixels all lie on nodata (``on_nodata``) are not scored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import CheckpointError
from geoseg.io.atomic import check_output_path
from geoseg.io.reports import write_json
from geoseg.io.vectors_formats import FORMATS
from geoseg.pipelines.prompt import PromptOptions, prompt_ious, prompted, scored_ious
from geoseg.pipelines.prompt_refine import IouSummary

__all__ = ["PromptEvaluation", "evaluate_prompt_model", "is_polygon_layer"]

_VECTOR_SUFFIXES = {ext for ext, _ in FORMATS.values()} | {".geoparquet", ".json", ".geojson"}
#: What the refusal of a non-polygon reference tells the user to run instead.
_PROMPT_HINT = (
    "geoseg prompt SCENE -m MODEL --boxes LAYER | --points LAYER | --point X,Y -o OUT.tif"
)


@dataclass(frozen=True)
class PromptEvaluation:
    """Scores of SAM prompted by reference polygons.

    Attributes:
        iou: mean / median / share >= 0.5 / count of the per-polygon IoUs.
        outside: reference polygons outside the image (not scored).
        windows: windows encoded.
        files: ``metrics.json``.
        nodata: reference polygons whose pixels all lie on the image's nodata (not scored).
    """

    iou: IouSummary
    outside: int
    windows: int
    files: tuple[Path, ...]
    nodata: int = 0


def is_polygon_layer(path: str | os.PathLike[str]) -> bool:
    """``path`` names a vector layer (by its extension, as the writers know them)."""
    return Path(path).suffix.lower() in _VECTOR_SUFFIXES


def evaluate_prompt_model(
    model: str, image: str | os.PathLike[str], labels: str | os.PathLike[str],
    out_dir: str | os.PathLike[str], opts: PromptOptions,
) -> PromptEvaluation:  # fmt: skip
    """Score SAM ``model`` on ``image`` with one box prompt per polygon of ``labels``.

    Args:
        opts: how SAM runs (device, bands, batch size, ``interior_points``,
            ``prompts_crs``, ``overwrite``); its prompt source is ``labels``.

    Raises:
        CheckpointError: ``labels`` is not a polygon layer (the message names
            ``geoseg prompt`` for other uses).
        GeosegError: as ``geoseg prompt --boxes labels`` (unreadable layer,
            every polygon outside the image, ...); nothing is written.
    """
    if not is_polygon_layer(labels):
        raise CheckpointError(
            f"{model}: a SAM checkpoint is scored against a polygon layer (--labels "
            f"footprints.gpkg: one box prompt per polygon), not {Path(labels).name}; "
            f"to segment a scene run it with `{_PROMPT_HINT}`"
        )
    out = Path(out_dir)
    check_output_path(out / "metrics.json", opts.overwrite)
    opts = PromptOptions(**{**opts.__dict__, "boxes": os.fspath(labels), "multimask": "best"})
    with prompted(image, model, opts) as run:
        _, per_prompt = prompt_ious(run)
        items = run.prompts.items
        summary, scored = scored_ious(run, per_prompt)
    scores = {o.prompt: o.score for o in run.objects if o.best}
    report: dict[str, Any] = {
        "task": "prompt", "model": Path(model).name, "image": Path(image).name,
        "labels": Path(labels).name, "prompts": "box per reference polygon",
        "interior_points": opts.interior_points,
        "iou_basis": "valid image pixels (centre in the polygon / object), true-area weighted",
        **summary.to_json(), "outside": run.prompts.outside, "on_nodata": int((~scored).sum()),
        "windows": run.windows, "objects": _objects(items, per_prompt, scores, scored),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    files = (write_json(out / "metrics.json", report, opts.overwrite),)
    return PromptEvaluation(summary, run.prompts.outside, run.windows, files,
                            int((~scored).sum()))  # fmt: skip


def _objects(
    items: Sequence[Any], ious: np.ndarray, scores: dict[int, float], scored: np.ndarray
) -> list[dict[str, Any]]:
    """Each scored polygon's feature number, IoU and SAM's predicted IoU (None: no mask)."""
    return [{"feature": p.id, "iou": float(ious[i]), "score": scores.get(i)}
            for i, p in enumerate(items) if scored[i]]  # fmt: skip
