"""``geoseg prompt``: SAM segments the objects that points and boxes point at.

The prompts (:mod:`geoseg.pipelines.prompt_inputs`) are put on windows of the
scene (:mod:`geoseg.pipelines.prompt_windows`); each window is read alone (box
plus context, decimated when the box is larger than one encoder input) and
encoded once for all its prompts, windows batched through the encoder; the
prompts of a batch are decoded :data:`DECODE_PROMPTS` at a time, one decoder call
for consecutive windows holding as many prompts, and the masks go back to the scene
grid (:mod:`geoseg.pipelines.prompt_objects`); reading and decoding run in threads
beside the encoder (:mod:`geoseg.pipelines.prompt_segment`). Memory follows the
objects, not the scene. The instance COG and the polygons are outputs of one
run: a failure leaves neither.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.areas import AreaMethod, area_method, pyproj_crs
from geoseg.errors import CheckpointError, GeosegError
from geoseg.io.raster import open_scene
from geoseg.io.vectors import write_vectors
from geoseg.models.bands import named_by_colour
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.registry import model_family, model_task
from geoseg.models.sam import SamPrompter
from geoseg.pipelines.model_input import match_bands
from geoseg.pipelines.prompt_inputs import Prompts, SceneFrame, read_prompts
from geoseg.pipelines.prompt_objects import (
    ObjectMask,
    object_table,
    write_object_raster,
)
from geoseg.pipelines.prompt_refine import IouSummary, mask_iou, on_nodata, summarize_ious
from geoseg.pipelines.prompt_scale import warn_if_off_scale
from geoseg.pipelines.prompt_segment import DECODE_PROMPTS, segment
from geoseg.pipelines.prompt_windows import scene_rasterio, scene_valid
from geoseg.resolution import check_gsd_of
from geoseg.types import a_model_of

__all__ = [
    "DECODE_PROMPTS", "PromptOptions", "PromptResult", "Prompted", "prompt_ious", "prompt_scene",
    "prompted",
]  # fmt: skip

log = logging.getLogger(__name__)

#: ``--multimask`` values: SAM's best candidate, or all three.
MULTIMASK = ("best", "all")


@dataclass(frozen=True)
class PromptOptions:
    """How ``geoseg prompt`` runs (exactly one of ``boxes``, ``points``, ``point``).

    Attributes:
        boxes: a polygon layer; each feature's bounding box is one prompt.
        points: a point layer (``label`` 1/0, ``prompt_id`` groups points).
        point: ``"X,Y[,CRS]"``: one positive point.
        prompts_crs: the layer's CRS when it declares none (or ``raster``).
        crs_option: the command's option for ``prompts_crs``, named in errors
            (``geoseg evaluate`` takes it as ``--labels-crs``).
        multimask: ``best`` (the raster and polygons keep SAM's best mask) or
            ``all`` (polygons of all three candidates, with a ``candidate`` field).
        interior_points: with ``boxes``, up to this many positive points inside
            each polygon join its box (:mod:`geoseg.pipelines.prompt_refine`).
        bands: scene bands feeding the model (None: by name, else in file order).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: windows per encoder call (None: 4 on the CPU, 16 on a GPU).
        assume_crs: the scene's CRS when it has none.
        overwrite: replace existing outputs.
        ignore_gsd: run on a scene whose pixel size is over 4x off the model's
            recorded GSD (:mod:`geoseg.resolution`; it still warns).
    """

    boxes: str | None = None
    points: str | None = None
    point: str | None = None
    prompts_crs: str | None = None
    crs_option: str = "--prompts-crs"
    multimask: str = "best"
    interior_points: int = 0
    bands: Sequence[str] | None = None
    device: str = "auto"
    batch_size: int | None = None
    assume_crs: str | None = None
    overwrite: bool = False
    ignore_gsd: bool = False

    def __post_init__(self) -> None:
        if self.multimask not in MULTIMASK:
            raise GeosegError(f"--multimask must be best or all, not {self.multimask!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise GeosegError(f"--batch-size must be >= 1, not {self.batch_size}")
        if self.interior_points < 0:
            raise GeosegError(f"--interior-points must be >= 0, not {self.interior_points}")
        if self.interior_points and self.boxes is None:
            raise GeosegError("--interior-points adds points inside --boxes polygons; give --boxes")


@dataclass(frozen=True)
class PromptResult:
    """What :func:`prompt_scene` wrote and found.

    Attributes:
        output, vector: the instance COG and the polygon layer (None: not asked for).
        objects: prompts that gave an object; empty: prompts whose mask was empty.
        outside, nodata: prompts skipped (outside the scene, points on nodata).
        windows: windows encoded.
        area_method: how the polygons' areas were measured.
        iou: ``--boxes``: IoU of the input polygons with their objects (an
            empty mask counts 0); None for point prompts.
    """

    output: Path
    vector: Path | None
    objects: int
    empty: int
    outside: int
    nodata: int
    windows: int
    area_method: AreaMethod
    iou: IouSummary | None = None


def load_prompter(model: str, device: str) -> SamPrompter:
    """The SAM of ``model``; any other checkpoint is refused in one line."""
    family = model_family(model)
    if family.inputs != "prompts":
        raise CheckpointError(
            f"{model}: is {a_model_of(model_task(model))} of the {family.name} family, which "
            "takes pixels, not prompts; `geoseg prompt` runs SAM checkpoints (geoseg import "
            "SAM_FOLDER -o sam.safetensors --bands R,G,B)"
        )
    prompter = load_predictor(model_spec(model, device))
    if not isinstance(prompter, SamPrompter):
        raise CheckpointError(f"{model}: the {family.name} family gives no SAM prompter")
    return prompter


@dataclass(frozen=True)
class Prompted:
    """A run's prompts and the objects SAM found for them (inside :func:`prompted`).

    Attributes:
        prompter: the loaded SAM.
        src: the scene, open for windowed reads.
        frame, prompts: where the scene is; the prompts kept and those skipped.
        objects: every prompt's object(s) on the scene grid.
        windows: windows encoded.
        area_method: how the scene's areas are measured.
    """

    prompter: SamPrompter
    src: Any
    frame: SceneFrame
    prompts: Prompts
    objects: list[ObjectMask]
    windows: int
    area_method: AreaMethod


@contextlib.contextmanager
def prompted(
    scene: str | os.PathLike[str], model: str, opts: PromptOptions,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Prompted]:  # fmt: skip
    """Read ``opts``' prompts and segment them on ``scene`` (kept open while in the block)."""
    path = os.fspath(scene)
    prompter = load_prompter(model, opts.device)
    opened = open_scene(path, None, 1024, opts.assume_crs)
    check_gsd_of(opened, path, model, prompter.meta.gsd_m, opts.ignore_gsd)
    names = named_by_colour(opened.band_names, opened.colorinterp)
    index = match_bands(path, names, prompter.meta, opts.bands)
    bands = tuple(i + 1 for i in index)
    with scene_rasterio(path) as src:
        frame = SceneFrame(path, opened.crs, opened.transform, opened.height, opened.width,
                           lambda r, c: _valid_at(src, bands, r, c), bands=bands)  # fmt: skip
        prompts = read_prompts(
            frame, boxes=opts.boxes, points=opts.points, point=opts.point,
            prompts_crs=opts.prompts_crs, interior_points=opts.interior_points,
            crs_option=opts.crs_option,
        )  # fmt: skip
        method = area_method(opened.crs, path)
        # the scale check samples the scene on the reading thread, through ``src``, once
        # the first windows are read (the encoder starts on them meanwhile): the later
        # window reads find the blocks it decoded in GDAL's block cache
        scale_check = functools.partial(warn_if_off_scale, path, index,
                                        prompter.meta.normalization.scale, model, opened.dtype,
                                        "geoseg prompt", src)  # fmt: skip
        batch = opts.batch_size or (16 if prompter.device.type == "cuda" else 4)
        objects, windows = segment(prompter, src, list(bands), frame, prompts,
                                   batch, opts.multimask, progress, scale_check)  # fmt: skip
        yield Prompted(prompter, src, frame, prompts, objects, windows, method)


@contextlib.contextmanager
def _meanwhile(call: Callable[[], None]) -> Iterator[None]:
    """Run ``call`` in a thread while the block runs; the block ends when both have (its
    error raised then, unless the block's own).

    ``call`` runs in a copy of this context, so what it publishes belongs to the output
    run in progress (:func:`geoseg.io.outputs.output_run`): rolled back if it fails.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="geoseg-meanwhile") as pool:
        done = pool.submit(contextvars.copy_context().run, call)
        yield
        done.result()


def prompt_ious(run: Prompted) -> tuple[np.ndarray, np.ndarray]:
    """IoU of the ``--boxes`` polygons with their objects
    (:func:`~geoseg.pipelines.prompt_refine.mask_iou`: pixels weighted by true area).

    Returns:
        ``(len(objects),)`` each object's IoU with its prompt's polygon, and
        ``(len(prompts),)`` each prompt's, from its best object (0 if it has none).
    """
    shapes, items = run.prompts.shapes, run.prompts.items
    # the CRS parsed once, not twice an object (a rasterio CRS is re-read from its WKT);
    # the scene's mask read through one handle of this thread's own (``run.src`` is the
    # COG writer's meanwhile), not one opened per object
    with run.frame.valid() as valid:
        frame = dataclasses.replace(run.frame, crs=pyproj_crs(run.frame.crs), valid_window=valid)
        per_object = np.array(
            [mask_iou(shapes[items[o.prompt].row], (o.row0, o.col0, o.mask), frame)
             for o in run.objects], np.float64,
        )  # fmt: skip
    per_prompt = np.zeros(len(items))
    for o, iou in zip(run.objects, per_object, strict=True):
        if o.best:
            per_prompt[o.prompt] = iou
    return per_object, per_prompt


def scored_ious(run: Prompted, per_prompt: np.ndarray) -> tuple[IouSummary, np.ndarray]:
    """The IoU summary of the prompts whose polygon is not all on nodata, and ``(len(
    prompts),) bool`` which those are: a polygon over no data cannot be segmented, so it
    is not scored (neither as an IoU nor as an empty mask), as ``evaluate`` does."""
    items = run.prompts.items
    scored = np.array([not on_nodata(run.prompts.shapes[p.row], run.frame) for p in items],
                      bool).reshape(-1)  # fmt: skip
    found = {o.prompt for o in run.objects}
    empty = sum(1 for i in np.flatnonzero(scored) if i not in found)
    return summarize_ious(per_prompt[scored], empty), scored


def prompt_scene(
    scene: str | os.PathLike[str], model: str, output: str | os.PathLike[str],
    opts: PromptOptions, vector: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PromptResult:  # fmt: skip
    """Segment the objects ``opts``' prompts point at in ``scene`` (see module doc).

    With ``--boxes`` each object's IoU with its input polygon is measured
    (:attr:`PromptResult.iou`, field ``input_iou`` of the polygons).

    Raises:
        GeosegError: a model that is not SAM, prompts that cannot be read or that all
            miss the scene, a scene without the model's bands (nothing is written).
    """
    with prompted(scene, model, opts, progress) as run:
        kept = {o.prompt for o in run.objects}
        empty = len(run.prompts.items) - len(kept)
        if empty:
            log.warning("%s: %d prompts gave an empty mask (no polygon, no pixel)",
                        run.frame.path, empty)  # fmt: skip
        write = functools.partial(write_object_raster, Path(output), run.frame, run.src,
                                  run.objects, run.prompter.schema, opts.overwrite)  # fmt: skip
        # the COG is written in a thread (GDAL compresses without the GIL) while the IoUs
        # and polygons are measured here; the polygons are written after the COG
        with _meanwhile(write):
            summary, table = _measure(run, opts, vector is not None)
    if vector is not None and table is not None:
        write_vectors(table, vector, overwrite=opts.overwrite)
    return PromptResult(Path(output), None if vector is None else Path(vector), len(kept), empty,
                        run.prompts.outside, run.prompts.nodata, run.windows, run.area_method,
                        summary)  # fmt: skip


def _measure(run: Prompted, opts: PromptOptions, polygons: bool) -> tuple[IouSummary | None, Any]:
    """With ``--boxes``, the summary of the objects' IoUs with their input polygons; with
    ``polygons``, the table of the polygon output (each object's IoU in ``input_iou``);
    None for what is not asked for."""
    per_object, summary, table = None, None, None
    if opts.boxes is not None:
        per_object, per_prompt = prompt_ious(run)
        summary = scored_ious(run, per_prompt)[0]
    if polygons:
        table = object_table(run.objects, run.prompts, run.frame, opts.multimask == "all",
                             input_iou=per_object)  # fmt: skip
    return summary, table


def _valid_at(src: Any, bands: Sequence[int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``(N,) bool``: the scene holds data in every one of ``bands`` at pixels
    ``(rows, cols)`` (one px read each; the rule of :mod:`geoseg.io.nodata`)."""
    from rasterio.windows import Window

    out = np.zeros(len(rows), bool)
    for k, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        mask = scene_valid(src, Window(c, r, 1, 1), bands=bands)
        values = src.read(list(bands), window=Window(c, r, 1, 1))
        out[k] = bool(mask[0, 0]) and bool(np.isfinite(values).all())
    return out
