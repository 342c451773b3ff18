"""Instance and panoptic prediction with a checkpoint: what ``geoseg predict`` runs for one.

:func:`predict_instances` matches the scene's bands to the model as ``predict_scene``
does, then runs :func:`~geoseg.pipelines.instance_scene.segment_instances` (whose
options and result are importable from here too); for a panoptic raster the stuff
classes come from the model's own semantic head or another model's label map.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from pathlib import Path

from geoseg.errors import CheckpointError, GeosegError
from geoseg.io.atomic import check_output_path, temporary_sibling
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.io.raster import open_scene
from geoseg.models.bands import named_by_colour
from geoseg.models.cache import ModelSpec, default_batch_size, load_predictor, model_spec
from geoseg.models.registry import (
    checkpoint_family,
    task_kind,
    window_multiple,
)
from geoseg.pipelines.instance_scene import (  # same names importable from here
    InstanceOptions,
    InstanceResult,
    segment_instances,
    stuff_schema,
)
from geoseg.pipelines.model_input import (
    PredictOptions,
    match_bands,
    model_window,
    refuse_tta,
    require_pixels,
    scene_scale,
)
from geoseg.pipelines.object_sizes import warn_if_oversized
from geoseg.pipelines.plausibility import warn_if_outside_training
from geoseg.pipelines.prompt_scale import warn_if_off_scale
from geoseg.pipelines.tasks import predict_task  # importable from here too
from geoseg.resolution import check_gsd_of
from geoseg.stitching import InstancePredictor
from geoseg.tiling.execute import Progress
from geoseg.types import a_model_of

__all__ = [
    "InstanceOptions",
    "InstanceResult",
    "load_instance_model",
    "predict_instances",
    "predict_panoptic",
    "predict_task",
    "segment_instances",
    "stuff_schema",
]


def load_instance_model(spec: ModelSpec, points_per_side: int | None = None) -> InstancePredictor:
    """The instance model of ``spec``, cached per process (picklable with ``partial``).

    Args:
        spec: the checkpoint and how to run it.
        points_per_side: SAM: its segment-everything point grid (None: the default,
            :data:`geoseg.models.sam_everything.POINTS_PER_SIDE`).

    Raises:
        CheckpointError: the checkpoint holds no instance model.
    """
    model = load_predictor(spec)
    if points_per_side is not None:
        from geoseg.models.sam_everything import everything_predictor

        return everything_predictor(model, points_per_side)
    if not isinstance(model, InstancePredictor):
        raise CheckpointError(
            f"{spec.source}: not an instance model; pass a checkpoint whose task is instance"
        )
    return model


def _instance_options(
    path: str,
    model: str,
    opts: PredictOptions,
    panoptic: str | os.PathLike[str] | None,
    stuff_labels: str | os.PathLike[str] | None = None,
) -> tuple[InstanceOptions, ModelSpec]:
    """The scene's bands, grid and scaling for an instance checkpoint, as ``predict`` does."""
    meta = read_checkpoint_meta(model)
    kind, family = task_kind(meta.task), checkpoint_family(meta)
    if "instance" not in kind.predicts:
        raise CheckpointError(
            f"{model}: {a_model_of(meta.task)}, not an instance or panoptic model"
        )
    if panoptic is not None and "panoptic" not in kind.predicts:
        raise CheckpointError(f"{model}: {a_model_of(meta.task)} has no stuff; drop --panoptic")
    if family.inputs != "prompts":  # a prompt model prompts itself here (segment everything)
        require_pixels(model, family)
    multiple = window_multiple(meta.arch, meta.options)
    # SAM checkpoints store margin 0 (each prompt reads its own window); stitching needs one
    defaults = (meta.window, meta.margin or meta.window // 8)
    window, margin = model_window(model, defaults, multiple, opts.window, opts.margin)
    if family.inputs == "prompts" and window != meta.window:
        raise GeosegError(
            f"{model}: SAM's encoder takes {meta.window} px windows; leave --window out"
        )
    refuse_tta(model, "panoptic" if panoptic is not None else "instance", opts.tta)
    if opts.blend != "trim":
        raise GeosegError("instance models use trim windows; drop --blend hann")
    unused = [f"--{n}" for n in ("confidence", "preview", "resume") if getattr(opts, n)]
    if unused:
        verb = "does" if len(unused) == 1 else "do"
        raise GeosegError(f"{model}: {', '.join(unused)} {verb} not apply to an instance model")
    whole = open_scene(path, None, opts.chunk, opts.assume_crs)
    check_gsd_of(whole, path, model, meta.gsd_m, opts.ignore_gsd)
    names = named_by_colour(whole.band_names, whole.colorinterp)
    selection = [str(i + 1) for i in match_bands(path, names, meta, opts.bands)]
    dtype = whole.dtype  # a raster's dtype is its first band's, whatever the selection
    scale = scene_scale(path, dtype, meta) or meta.normalization.scale
    if family.inputs == "prompts":  # SAM: 0-255 images, which the sigma rule does not see
        warn_if_off_scale(path, [int(i) - 1 for i in selection], scale, model, dtype,
                          "geoseg predict")  # fmt: skip
    else:
        warn_if_outside_training(path, [int(i) - 1 for i in selection], scale, model, meta,
                                 opts.bands is not None)  # fmt: skip
    same = math.isclose(scale, meta.normalization.scale, rel_tol=1e-6)
    spec = model_spec(
        model, opts.device, None, None if same else scale, opts.torch_threads, opts.precision
    )
    inst = InstanceOptions(
        window=window, margin=margin, chunk=opts.chunk,
        batch_size=opts.batch_size or default_batch_size(model, opts.device),
        bands=selection, assume_crs=opts.assume_crs, scheduler=opts.scheduler,
        workers=opts.workers, overwrite=opts.overwrite, panoptic=panoptic,
        stuff_labels=stuff_labels,
    )  # fmt: skip
    return inst, spec


def predict_instances(
    scene_path: str | os.PathLike[str],
    model: str,
    output: str | os.PathLike[str],
    options: PredictOptions | None = None,
    panoptic: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    stuff_labels: str | os.PathLike[str] | None = None,
    *,
    points_per_side: int | None = None,
) -> InstanceResult:
    """Segment the objects of a scene with an ``instance`` checkpoint (or SAM: everything).

    Args:
        scene_path: GeoTIFF/COG/VRT.
        model: ``.safetensors`` checkpoint whose task is ``instance``.
        output: instance COG: band 1 class (255 = none), band 2 ``uint32`` id (0 = none).
        options: the options of ``geoseg predict`` (window, margin, bands, device,
            chunk, scheduler, ...); ``confidence``, ``resume`` and ``preview`` do not
            apply.
        panoptic: also write a panoptic COG here: band 1 class (stuff from the
            model's semantic side, or from ``stuff_labels``), band 2 id (0 for stuff).
        progress: ``progress(done, total)`` over the chunks of the first pass.
        stuff_labels: label map of the same scene from another (semantic) model:
            the panoptic map's stuff comes from it (see :func:`stuff_schema`).
        points_per_side: a SAM (``prompt``) checkpoint's point grid per window side
            (default :data:`geoseg.models.sam_everything.POINTS_PER_SIDE`).

    Raises:
        GeosegError: bad input, model or output; nothing is written.
    """
    opts = options or PredictOptions()
    path = os.fspath(scene_path)
    inst, spec = _instance_options(path, model, opts, panoptic, stuff_labels)
    if points_per_side is not None:
        meta = read_checkpoint_meta(model)
        if checkpoint_family(meta).inputs != "prompts" or points_per_side < 1:
            raise GeosegError(
                f"{model}: --points-per-side {points_per_side}: a SAM checkpoint's point grid "
                f"(at least 1), not for {a_model_of(meta.task)}"
            )
    load = functools.partial(load_instance_model, spec, points_per_side)
    result = segment_instances(path, load, output, inst, progress)
    warn_if_oversized(model, read_checkpoint_meta(model), result.object_px, result.pixel_m)
    return result


def predict_panoptic(
    scene_path: str | os.PathLike[str],
    model: str,
    output: str | os.PathLike[str],
    options: PredictOptions | None = None,
    progress: Progress | None = None,
    stuff_labels: str | os.PathLike[str] | None = None,
) -> InstanceResult:
    """Only the panoptic COG of :func:`predict_instances` (band 1 class, band 2 id).

    The instance raster is staged beside ``output`` and removed; the result's
    ``output`` and ``panoptic`` are both ``output``.
    """
    opts = options or PredictOptions()
    path, out = os.fspath(scene_path), Path(output)
    check_output_path(out, opts.overwrite, [Path(path)])
    inst, spec = _instance_options(path, model, opts, out, stuff_labels)
    load = functools.partial(load_instance_model, spec)
    with temporary_sibling(out, "inst") as tmp:
        # ``out`` was checked above; overwrite lets the staged raster replace its empty file.
        inst = dataclasses.replace(inst, overwrite=True)
        result = segment_instances(path, load, tmp, inst, progress)
    warn_if_oversized(model, read_checkpoint_meta(model), result.object_px, result.pixel_m)
    return dataclasses.replace(result, output=out)
