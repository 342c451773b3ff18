"""``evaluate_scene``: score a model on a labelled raster with predict's own tiled inference.

Two tasks, as the checkpoint says (``ModelMeta.task``):

* ``semantic``: the reference is a label raster; per-class IoU/F1/precision/recall,
  mIoU, overall accuracy and kappa.
* ``change``: the model reads two stacked dates (``geoseg stack``) and the
  reference is a change mask, 0 = no change and 1 or 255 = change (any other
  value is not scored). Predictions are scored as no change (the model's class
  id 0, else its first class) / change (every other class), and ``metrics.json``
  also holds the F1, IoU, precision and recall of the change class.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from geoseg.errors import GeosegError
from geoseg.evaluation.metrics import SegmentationMetrics, metrics_from_confusion
from geoseg.io.atomic import check_output_path
from geoseg.io.grids import same_grid
from geoseg.io.label_classes import label_ids_by_name, mapping_note
from geoseg.io.labels import refuse_probability_raster
from geoseg.io.raster import Scene, open_scene
from geoseg.io.reports import write_confusion_csv, write_confusion_png, write_json
from geoseg.io.training_data import LABEL_NODATA, read_labels_on_grid
from geoseg.models.cache import load_predictor
from geoseg.models.registry import TASKS, model_task
from geoseg.pipelines.evaluate_checks import (
    MAP_OPTION,
    coverage_warning,
    degenerate_warning,
    refuse_vector_reference,
    schema_warning,
)
from geoseg.pipelines.plausibility import guessed_band_order, predicted_shares, warn_if_one_class
from geoseg.pipelines.predict import PredictOptions, prepare_model_input
from geoseg.tiling.confusion import tiled_confusion_sink
from geoseg.tiling.execute import Progress
from geoseg.tiling.tta import tta_loader
from geoseg.types import ClassInfo, ClassSchema, a_model_of

__all__ = [
    "CHANGE_MASK_MAP", "CHANGE_SCHEMA", "PIXEL_TASKS", "EvaluateResult", "evaluate_scene",
    "reference_on_grid",
]  # fmt: skip

log = logging.getLogger(__name__)

REPORT_FILES = ("metrics.json", "confusion.csv", "confusion.png")
#: The tasks scored here, pixel by pixel (the others find objects: evaluate_instances).
PIXEL_TASKS = tuple(t.name for t in TASKS.values() if not t.objects)
#: The two classes a change model is scored in.
CHANGE_SCHEMA = ClassSchema(
    (ClassInfo(0, "no change", (200, 200, 200)), ClassInfo(1, "change", (227, 26, 28)))
)
#: Change-mask value -> :data:`CHANGE_SCHEMA` id: 0/255 and 0/1 masks.
CHANGE_MASK_MAP: Mapping[int, int] = {0: 0, 1: 1, 255: 1}


@dataclass(frozen=True)
class EvaluateResult:
    """Metrics and the files written."""

    metrics: SegmentationMetrics
    confusion: np.ndarray
    files: tuple[Path, ...]
    task: str = "semantic"


def reference_on_grid(
    label_path: str, scene: Scene, task: str = "semantic", assume_crs: str | None = None
) -> da.Array:
    """``(H, W) int64`` reference values on the scene grid; nodata -> a value no class has.

    A change mask's declared nodata is ignored when it is 0, 1 or 255 (a mask value).
    ``assume_crs`` (``--assume-crs``) is the CRS of labels that declare none, as of the scene.
    """
    ref = open_scene(label_path, chunk=int(scene.data.data.chunks[1][0]), assume_crs=assume_crs)
    refuse_probability_raster(label_path, ref.tags)
    same = same_grid(
        ref.crs, ref.transform, (ref.height, ref.width),
        scene.crs, scene.transform, (scene.height, scene.width),
    )  # fmt: skip
    masks_changes = task == "change" and ref.nodata in CHANGE_MASK_MAP
    if masks_changes and not same:
        raise GeosegError(
            f"{label_path}: declares nodata {ref.nodata:g}, a value of the change mask "
            "(0 = no change, 1 or 255 = change), and is not on the grid of the image; "
            "unset it (gdal_edit.py -unsetnodata) or write the mask on the image's grid"
        )
    if not same:
        values = read_labels_on_grid(label_path, scene.path)
        return da.from_array(values, chunks=scene.data.data.chunks[1:])
    data = ref.data.data[0].astype(np.int64)
    if masks_changes:
        log.warning("%s: nodata %g is a change-mask value; ignored", label_path, ref.nodata)
        return data
    return da.where(ref.valid, data, LABEL_NODATA)


def _model_task(model: str, task: str | None) -> str:
    """The task to score ``model`` for: its own, which ``task`` (if given) must equal."""
    if task is not None and task not in PIXEL_TASKS:
        raise GeosegError(f"--task must be one of {', '.join(PIXEL_TASKS)}, not {task!r}")
    own = model_task(model)
    if task is not None and task != own:
        raise GeosegError(
            f"{model}: is {a_model_of(own)} and cannot be scored with --task {task}; "
            f"pass a {task} checkpoint, or leave --task out to score it as {own}"
        )
    return own


def _change_prediction_map(schema: ClassSchema) -> dict[int, int]:
    """Model class id -> no change (0) / change (1): id 0 (else the first class) is no change."""
    unchanged = 0 if 0 in schema.ids else schema.ids[0]
    return {int(c): int(c != unchanged) for c in schema.ids}


def _change_scores(metrics: SegmentationMetrics) -> dict[str, float | str | None]:
    """F1, IoU, precision and recall of the change class (None where 0/0, with a
    ``change_note`` saying why, e.g. "no pixel predicted as change")."""
    c = CHANGE_SCHEMA.ids.index(1)
    values = {
        "change_f1": metrics.f1[c],
        "change_iou": metrics.iou[c],
        "change_precision": metrics.precision[c],
        "change_recall": metrics.recall[c],
    }
    out: dict[str, float | str | None] = {
        k: None if math.isnan(v) else float(v) for k, v in values.items()
    }
    out["change_note"] = metrics.notes()[c]
    return out


def evaluate_scene(
    model: str,
    image: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: PredictOptions | None = None,
    classes: ClassSchema | None = None,
    reference_map: Mapping[int, int] | None = None,
    prediction_map: Mapping[int, int] | None = None,
    progress: Progress | None = None,
    task: str | None = None,
) -> EvaluateResult:
    """Confusion matrix and metrics of ``model`` on ``image`` against ``labels``.

    Args:
        model: ``"spectral"`` or a checkpoint.
        image: the scene (for a change model: the dates stacked by ``geoseg stack``).
        labels: reference label raster, or for ``task="change"`` a 0/255 (or 0/1)
            change mask (aligned onto the scene grid if needed).
        out_dir: folder for ``metrics.json``, ``confusion.csv``, ``confusion.png``.
        options: tiling/band options, exactly as for ``predict``.
        classes: classes to score in (default: the model's); not for ``change``.
        reference_map: reference value -> class id (default: identity; for
            ``change``, :data:`CHANGE_MASK_MAP`).
        prediction_map: model class id -> class id (default: identity; for
            ``change``, class id 0 (else the first class) -> 0, others -> 1).
        progress: ``progress(done, total)`` callback.
        task: ``"semantic"`` or ``"change"``; default the checkpoint's own task.

    Raises:
        GeosegError: ``task`` differs from the checkpoint's task (the message names
            the file), or no pixel can be scored.
    """
    opts = options or PredictOptions()
    task = _model_task(model, task)
    if task == "change" and classes is not None:
        raise GeosegError(
            "--classes does not apply to --task change: change models are scored as "
            "no change / change (use --map-prediction to say which classes are change)"
        )
    refuse_vector_reference(labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        check_output_path(out / name, opts.overwrite)
    path = os.fspath(image)
    scene, spec, model_schema, tile = prepare_model_input(path, model, opts)
    guess = guessed_band_order(scene, spec.roles, opts.band_roles, opts.sensor)  # as predict
    if task == "change":
        classes = CHANGE_SCHEMA
        prediction_map = prediction_map or _change_prediction_map(model_schema)
        reference_map = CHANGE_MASK_MAP if reference_map is None else reference_map
    schema = classes or model_schema
    if prediction_map is None and set(model_schema.ids) - set(schema.ids):
        raise GeosegError("the model's classes differ from --classes; give --map-prediction")
    ref = reference_on_grid(os.fspath(labels), scene, task, opts.assume_crs)
    if task == "semantic" and reference_map is None:  # a tagged raster is read by name
        named = "--classes" if classes is not None else Path(model).stem
        reference_map = label_ids_by_name(labels, schema, named, f"{MAP_OPTION} (value=class id)")
        if reference_map is not None:
            log.warning("%s", mapping_note(labels, reference_map, schema, named))
    warnings = [schema_warning(labels, model, schema, reference_map)] if task == "semantic" else []
    sink = tiled_confusion_sink(
        scene.data.data, scene.valid, ref,
        tta_loader(functools.partial(load_predictor, spec), opts.tta), tile,
        model_schema.ids, schema.ids, prediction_map, reference_map, opts.scheduler,
        opts.workers, progress,
    )  # fmt: skip
    conf, unknown = sink.matrix, dict(sorted(sink.unknown_reference.items()))
    shares = predicted_shares(conf.sum(axis=0), schema.ids)  # columns: predicted classes
    warn_if_one_class(shares, f"{path} (predictions of {model})", path, schema, guess)
    if unknown:
        log.warning(
            "%s: reference values that are not classes (%s) were not scored: %s; "
            "give --map-reference (value=class id) or check the label file",
            labels, ", ".join(str(c) for c in (reference_map or schema.ids)),
            ", ".join(f"{v}: {n:,} px" for v, n in unknown.items()),
        )  # fmt: skip
    coverage = sink.labelled_pixels / max(sink.scene_pixels, 1)
    warnings.append(coverage_warning(labels, path, sink.labelled_pixels, sink.scene_pixels))
    if conf.sum() == 0:
        raise _nothing_scored(labels, path, ref, scene, reference_map or schema.ids)
    metrics = metrics_from_confusion(conf, schema.names)
    if task == "semantic":
        warnings.append(degenerate_warning(labels, model, metrics))
    for message in filter(None, warnings):
        log.warning("%s", message)
    report: dict[str, Any] = {
        "task": task, "model": Path(model).name, "image": Path(path).name,
        "labels": Path(labels).name, "window": tile.window, "margin": tile.margin,
        "blend": tile.blend, "tta": opts.tta, "reference_map": _json_map(reference_map),
        "prediction_map": _json_map(prediction_map),
        **(_change_scores(metrics) if task == "change" else {}), **metrics.to_json(),
        "unknown_reference_values": [{"value": v, "pixels": n} for v, n in unknown.items()],
        "label_coverage": round(coverage, 4),
        "warnings": [w for w in warnings if w],
    }  # fmt: skip
    files = (
        write_json(out / "metrics.json", report, opts.overwrite),
        write_confusion_csv(out / "confusion.csv", conf, schema.names, opts.overwrite),
        write_confusion_png(out / "confusion.png", conf, schema.names, opts.overwrite),
    )
    return EvaluateResult(metrics, conf, files, task)


def _nothing_scored(
    labels: str | os.PathLike[str], path: str, ref: da.Array, scene: Scene, values: Any
) -> GeosegError:
    """The error of an empty confusion, naming the file at fault: the image when its
    pixels under the labelled ones are all nodata, else the labels."""
    labelled = da.isin(ref, np.asarray(list(values), np.int64))
    counts = da.compute(labelled.sum(), (labelled & scene.valid).sum(), scheduler="sync")
    if int(counts[0]) and not int(counts[1]):
        return GeosegError(
            f"{path}: nodata under all {int(counts[0]):,} px of {labels} that hold a class; "
            "give the scene the labels were drawn on"
        )
    return GeosegError(
        f"{labels}: no pixel has both a reference class and a prediction; check the "
        "label values against the classes (or --map-reference)"
    )


def _json_map(mapping: Mapping[int, int] | None) -> dict[str, int] | None:
    return None if mapping is None else {str(k): int(v) for k, v in mapping.items()}
