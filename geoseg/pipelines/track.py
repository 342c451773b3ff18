"""``geoseg track``: objects prompted on one date, followed through the others with SAM 2.

The prompts (boxes or points, :mod:`geoseg.pipelines.prompt_inputs`) are read on
the first date's grid and put on windows exactly as ``geoseg prompt`` does
(:mod:`geoseg.pipelines.prompt_windows`). Each window is read from every date
(:mod:`geoseg.pipelines.track_dates`: a date on another grid is warped onto the
first's), the dates become the frames of a SAM 2 video in their given order, and
SAM 2's memory carries each object from the prompt date forward and back
(:meth:`geoseg.models.sam2.Sam2Prompter.track`). Memory follows the windows, not
the scenes.

Outputs, in one folder and as one transaction (a failure leaves none of them):
one instance COG per date (``LABEL.tif``: band 1 class, band 2 the prompt's id,
the same id on every date, 255 in band 1 where the date holds no data on the grid;
:func:`~geoseg.pipelines.prompt_objects.write_object_raster`; tagged with the date's
``DATE`` as ``geoseg predict`` tags a label map),
and ``areas.csv``: per object its id, the prompt's fields and its true
(ellipsoidal) area in ha on each date, measured on the written rasters; an
object SAM 2 loses on a date has area 0 there and a note. With ``overwrite``, the
date COGs of an earlier run in the folder that this run does not write are removed
once it has succeeded (:func:`~geoseg.pipelines.track_outputs.earlier_outputs`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.areas import AreaMethod, area_method
from geoseg.errors import CheckpointError, GeosegError
from geoseg.io.outputs import output_run
from geoseg.models.bands import named_by_colour
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.registry import model_family, model_task
from geoseg.models.sam2 import FramePrompt, Sam2Prompter
from geoseg.pipelines.model_input import match_bands
from geoseg.pipelines.prompt import DECODE_PROMPTS
from geoseg.pipelines.prompt_inputs import Prompt, Prompts, SceneFrame, read_prompts
from geoseg.pipelines.prompt_objects import ObjectMask, place_mask, write_object_raster
from geoseg.pipelines.prompt_scale import warn_if_off_scale
from geoseg.pipelines.prompt_windows import PromptWindow, plan_windows
from geoseg.pipelines.track_dates import (
    TrackDate,
    date_valid,
    dates_in_time_order,
    open_dates,
    read_date_window,
)
from geoseg.pipelines.track_outputs import (
    AREAS,
    area_rows,
    date_raster_tags,
    earlier_outputs,
    written_areas_m2,
)
from geoseg.report.tables import write_csv_rows
from geoseg.resolution import check_gsd_of
from geoseg.types import a_model_of

__all__ = ["TrackOptions", "TrackResult", "follow", "frame_prompt", "load_tracker", "track_scenes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackOptions:
    """How ``geoseg track`` runs (exactly one of ``boxes``, ``points``, ``point``).

    Attributes:
        boxes, points, point, prompts_crs: the prompts, as ``geoseg prompt`` takes them.
        prompt_date: the date (1-based, in the order given) the prompts point at.
        bands: scene bands feeding the model (None: by name, else in file order).
        device: ``auto``, ``cpu`` or ``cuda``.
        assume_crs: the scenes' CRS when they have none.
        overwrite: replace existing outputs.
        ignore_gsd: run on scenes whose pixel size is over 4x off the model's
            recorded GSD (:mod:`geoseg.resolution`; it still warns).
    """

    boxes: str | None = None
    points: str | None = None
    point: str | None = None
    prompts_crs: str | None = None
    prompt_date: int = 1
    bands: Sequence[str] | None = None
    device: str = "auto"
    assume_crs: str | None = None
    overwrite: bool = False
    ignore_gsd: bool = False


@dataclass(frozen=True)
class TrackResult:
    """What :func:`track_scenes` wrote and found.

    Attributes:
        rasters: one instance COG per date, in date order.
        areas: ``areas.csv``.
        objects: prompts followed.
        lost: (object, date) pairs without a mask.
        windows: windows read (from every date).
        warped: dates resampled onto the first date's grid.
        area_method: how the areas were measured.
        dated: every date has an acquisition date (False: the order given was taken
            as time order).
    """

    rasters: tuple[Path, ...]
    areas: Path
    objects: int
    lost: int
    windows: int
    warped: int
    area_method: AreaMethod
    dated: bool = True


def load_tracker(model: str, device: str) -> Sam2Prompter:
    """The SAM 2 video model of ``model``; any other checkpoint is refused in one line."""
    family = model_family(model)
    fix = ("import a transformers Sam2VideoModel folder with `geoseg import FOLDER -o "
           "sam2.safetensors --bands R,G,B`")  # fmt: skip
    if family.name != "sam2":
        raise CheckpointError(
            f"{model}: is {a_model_of(model_task(model))} of the {family.name} family; "
            f"tracking needs SAM 2 (its video memory): {fix}"
        )
    prompter = load_predictor(model_spec(model, device))
    if not isinstance(prompter, Sam2Prompter) or prompter.video is None:
        raise CheckpointError(
            f"{model}: an image-only SAM 2 checkpoint (Sam2Model); tracking needs the SAM 2 "
            f"video model: {fix}"
        )
    return prompter


def track_scenes(
    scenes: Sequence[str | os.PathLike[str]], model: str, out_dir: str | os.PathLike[str],
    opts: TrackOptions, progress: Callable[[int, int], None] | None = None,
) -> TrackResult:  # fmt: skip
    """Follow ``opts``' prompts through ``scenes`` (dates, in order; see module doc).

    Raises:
        GeosegError: fewer than two dates, dates with other bands or disjoint extents,
            a checkpoint that is not a SAM 2 video model, prompts that cannot be read
            or all miss the scene, existing outputs without ``overwrite`` (nothing is
            written).
    """
    prompter = load_tracker(model, opts.device)
    with open_dates(scenes, opts.assume_crs, prompter.meta.bands) as (opened, dates):
        if not 1 <= opts.prompt_date <= len(dates):
            raise GeosegError(
                f"--prompt-date {opts.prompt_date}: give a date between 1 and {len(dates)} "
                "(its place in the list of scenes)"
            )
        first, start = opened[0], opts.prompt_date - 1
        dated = dates_in_time_order(opened)
        names = named_by_colour(first.band_names, first.colorinterp)
        bands = [i + 1 for i in match_bands(first.path, names, prompter.meta, opts.bands)]
        for scene in opened:
            check_gsd_of(scene, scene.path, model, prompter.meta.gsd_m, opts.ignore_gsd)
            warn_if_off_scale(scene.path, [b - 1 for b in bands], prompter.meta.normalization.scale,
                              model, scene.dtype, "geoseg track")  # fmt: skip
        grid = dates[0].src
        # prompts are put on the first date's grid, but point at (and are told of) the
        # prompt date
        frame = SceneFrame(
            opened[start].path, first.crs, first.transform, first.height, first.width,
            lambda r, c: _valid_at(dates[start], grid, bands, r, c),
        )  # fmt: skip
        prompts = read_prompts(frame, boxes=opts.boxes, points=opts.points, point=opts.point,
                               prompts_crs=opts.prompts_crs)  # fmt: skip
        method = area_method(first.crs, first.path)
        out = Path(out_dir)
        rasters = [out / f"{d.label}.tif" for d in dates]
        with output_run(opts.overwrite, [Path(model), *(Path(d.path) for d in dates)]) as run:
            written = [r.name for r in rasters] + [AREAS]
            run.add_folder(out, written)
            if opts.overwrite:  # an earlier run's other dates: removed once this one succeeds
                run.retire(earlier_outputs(out, written))
            run.make_folder(out)
            per_date, windows = follow(prompter, dates, grid, bands, frame, prompts, start,
                                       progress)  # fmt: skip
            for date, scene, objects, raster in zip(dates, opened, per_date, rasters, strict=True):
                write_object_raster(raster, frame, date.src, objects, prompter.schema,
                                    opts.overwrite, date_raster_tags(scene, model),
                                    partial(date_valid, date, bands=bands))  # fmt: skip
            areas = [written_areas_m2(r, frame) for r in rasters]
            rows, lost = area_rows(prompts, [d.label for d in dates], areas)
            write_csv_rows(out / AREAS, rows, opts.overwrite)
    if lost:
        log.warning("%s: %d objects have no mask on some dates (area 0, see the note column)",
                    out / AREAS, sum(1 for row in rows if row["note"]))  # fmt: skip
    return TrackResult(tuple(rasters), out / AREAS, len(prompts.items), lost, windows,
                       sum(d.warped for d in dates), method, dated)  # fmt: skip


def _valid_at(
    date: TrackDate, grid: Any, bands: Sequence[int], rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """``(N,) bool``: the prompt date holds data at grid pixels ``(rows, cols)``."""
    return np.array([
        bool(read_date_window(date, grid, bands, PromptWindow(0, r, c, 1), 1)[1][0, 0])
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
    ], bool)  # fmt: skip


def frame_prompt(prompt: Prompt, window: PromptWindow) -> FramePrompt:
    """A scene prompt in the encoder input px of ``window``."""
    box = None
    if prompt.box is not None:
        x0, y0, x1, y1 = window.to_input(np.asarray(prompt.box, np.float64).reshape(2, 2)).ravel()
        box = (float(x0), float(y0), float(x1), float(y1))
    points = window.to_input(prompt.points) if len(prompt.points) else np.zeros((0, 2))
    return FramePrompt(prompt.id, points, prompt.labels, box)


def follow(
    prompter: Sam2Prompter, dates: Sequence[TrackDate], grid: Any, bands: Sequence[int],
    frame: SceneFrame, prompts: Prompts, start: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[list[ObjectMask]], int]:  # fmt: skip
    """Per date, every object's mask on the grid; and the number of windows read."""
    plan = plan_windows(prompts.items, prompter.size)
    per_date: list[list[ObjectMask]] = [[] for _ in dates]
    for n, (window, members) in enumerate(plan.items()):
        pixels = [read_date_window(d, grid, bands, window, prompter.size) for d in dates]
        frames = np.stack([p[0] for p in pixels])
        valid = np.stack([p[1] for p in pixels])
        for first in range(0, len(members), DECODE_PROMPTS):
            chosen = members[first : first + DECODE_PROMPTS]
            masks = prompter.track(frames, valid,
                                   [frame_prompt(prompts.items[i], window) for i in chosen],
                                   start)  # fmt: skip
            for t, found in enumerate(per_date):
                for p, i in enumerate(chosen):
                    logits = np.where(masks[t, p], np.float32(1), np.float32(-1))
                    placed = place_mask(logits, valid[t], window, frame.height, frame.width)
                    if placed is not None:
                        found.append(ObjectMask(prompts.items[i].id, i, 0, 1.0, 1.0, *placed))
        if progress is not None:
            progress(n + 1, len(plan))
    return per_date, len(plan)
