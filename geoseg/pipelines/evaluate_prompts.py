"""``geoseg evaluate`` of a SAM checkpoint: the prompt setting, one object per prompt.

Each reference polygon becomes one box prompt (its bounding box in the image's
CRS, plus up to ``interior_points`` positive points inside it, as
``geoseg prompt --boxes LAYER --interior-points N`` makes them), SAM's best mask
is the prediction for that polygon, and the score is the IoU of the two
(:func:`geoseg.pipelines.prompt_refine.mask_iou`: on the image's pixel grid, each
pixel weighted by its true ellipsoidal area, the layer reprojected first). An
empty mask scores 0. ``metrics.json`` holds the mean, median, share with IoU >= 0.5
and count, and each polygon's IoU and SAM's predicted IoU (``score``). Polygons
outside the image are not scored (counted as ``outside``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import CheckpointError
from geoseg.io.atomic import check_output_path
from geoseg.io.reports import write_json
from geoseg.io.vectors_formats import FORMATS
from geoseg.pipelines.prompt import PromptOptions, prompt_ious, prompted
from geoseg.pipelines.prompt_refine import IouSummary, summarize_ious

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
    """

    iou: IouSummary
    outside: int
    windows: int
    files: tuple[Path, ...]


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
    empty = len(run.prompts.items) - len({o.prompt for o in run.objects})
    summary = summarize_ious(per_prompt, empty)
    scores = {o.prompt: o.score for o in run.objects if o.best}
    report: dict[str, Any] = {
        "task": "prompt", "model": Path(model).name, "image": Path(image).name,
        "labels": Path(labels).name, "prompts": "box per reference polygon",
        "interior_points": opts.interior_points,
        "iou_basis": "image pixels (centre in the polygon / object), true-area weighted",
        **summary.to_json(), "outside": run.prompts.outside, "windows": run.windows,
        "objects": [
            {"feature": p.id, "iou": float(iou), "score": scores.get(i)}
            for i, (p, iou) in enumerate(zip(run.prompts.items, per_prompt, strict=True))
        ],
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    files = (write_json(out / "metrics.json", report, opts.overwrite),)
    return PromptEvaluation(summary, run.prompts.outside, run.windows, files)
