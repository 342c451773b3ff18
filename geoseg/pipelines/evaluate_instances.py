"""Score instance and panoptic maps: AP50 and PQ = SQ x RQ, per class and overall.

The prediction is an instance or panoptic COG (band 1 class, band 2 id) from
``geoseg predict --task instance|panoptic``, or one this module makes first with
an ``instance`` checkpoint. The reference is an id raster on the same grid
(``uint`` ids, 0 = none, optional class band) or a polygon layer rasterized on
the prediction's grid, one id per feature. Counts are summed chunk by chunk
(:func:`geoseg.evaluation.instances.segment_overlaps`), so memory is bounded.

* ``instance``: only thing classes are scored; PQ/SQ/RQ and AP50 are means over
  the thing classes that occur.
* ``panoptic``: stuff classes are scored too (one segment per stuff class).

AP50 is all-point interpolated mask AP over the PQ matches (same class, IoU > 0.5;
:data:`~geoseg.evaluation.instances.AP50_DEFINITION`), predictions ranked by the object
scores that ``geoseg predict`` stores in the raster's ``GEOSEG_INSTANCE_SCORES`` tag; a
raster without them ranks every prediction alike (AP50 is then precision x recall).
Pixels where the reference or the prediction (the image) has no data are void.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from geoseg.errors import CheckpointError, GeosegError, InvalidRasterError
from geoseg.evaluation.instances import (
    AP50_DEFINITION,
    PanopticQuality,
    SegmentOverlaps,
    average_precision_50,
    panoptic_quality,
    segment_overlaps,
)
from geoseg.io.atomic import check_output_path
from geoseg.io.instance_masks import refuse_binary_mask
from geoseg.io.instances import (
    InstanceBlock,
    instance_raster_reader,
    polygon_instance_reader,
    read_instance_scores,
)
from geoseg.io.labels import read_class_schema
from geoseg.io.reports import write_json
from geoseg.io.vectors import FORMATS
from geoseg.models.registry import TASKS, model_task
from geoseg.pipelines.evaluate_instance_checks import (
    refuse_reference_off_grid,
    unknown_classes_warning,
)
from geoseg.pipelines.instances import predict_instances, predict_panoptic
from geoseg.pipelines.predict import PredictOptions
from geoseg.types import NODATA_LABEL, ClassSchema, a_model_of, require_at_least

__all__ = [
    "AP50_NOTE",
    "INSTANCE_TASKS",
    "InstanceEvaluation",
    "evaluate_instance_model",
    "evaluate_task",
    "score_instances",
]

log = logging.getLogger(__name__)

#: Why AP50 is null: 0/0, no reference object of a thing class was scored.
AP50_NOTE = "null: no reference object of a thing class to score"

#: The tasks scored here, object by object (the others: pipelines.evaluate).
INSTANCE_TASKS = tuple(t.name for t in TASKS.values() if t.objects)
_VECTOR_SUFFIXES = {ext for ext, _ in FORMATS.values()} | {".json", ".geojson"}


@dataclass(frozen=True)
class InstanceEvaluation:
    """Scores of an instance / panoptic map and the files written.

    Attributes:
        task: ``"instance"`` or ``"panoptic"``.
        quality: PQ, SQ, RQ (and TP/FP/FN) per class id and their means.
        ap50: class id -> AP at IoU 0.5, for thing classes with reference objects.
        schema: the prediction's classes.
        files: ``metrics.json`` (and the prediction, when a model was run).
    """

    task: str
    quality: PanopticQuality
    ap50: dict[int, float]
    schema: ClassSchema
    files: tuple[Path, ...]

    @property
    def mean_ap50(self) -> float | None:
        """Mean AP50 over the thing classes that have reference objects; None (0/0,
        "n/a") when the reference has no object to score."""
        return sum(self.ap50.values()) / len(self.ap50) if self.ap50 else None


def evaluate_task(model: str | None, task: str | None) -> str:
    """The task to score: ``task``, else the checkpoint's own (``instance`` without a model).

    Raises:
        CheckpointError: ``task`` is instance/panoptic and the model is not an
            instance or panoptic model, or the reverse (the message names the file).
    """
    if model is None:
        return task or "instance"
    own = model_task(model)
    task = task or own
    if (task in INSTANCE_TASKS) != (own in INSTANCE_TASKS):
        raise CheckpointError(
            f"{model}: is {a_model_of(own)} and cannot be scored with --task {task}; pass "
            f"{a_model_of('instance' if task in INSTANCE_TASKS else task)} checkpoint, or leave "
            "--task out"
        )
    return task


def _default_thing(schema: ClassSchema) -> int | None:
    things = [c.id for c in schema.classes if c.is_thing]
    return things[0] if len(things) == 1 else None


@contextlib.contextmanager
def _reference_reader(
    reference: str, prediction: str, schema: ClassSchema, class_field: str | None,
    labels_crs: str | None = None, classes_of: str = "the model",
) -> Iterator[Callable[[tuple[slice, slice]], InstanceBlock]]:  # fmt: skip
    """``reference`` as instance blocks on the prediction's grid; ``classes_of`` says
    whose ``schema`` it is in messages (the model, or the prediction file)."""
    with rasterio.open(prediction) as src:
        grid: dict[str, Any] = {
            "height": src.height, "width": src.width, "crs": src.crs, "transform": src.transform,
        }  # fmt: skip
    thing = _default_thing(schema)
    if Path(reference).suffix.lower() in _VECTOR_SUFFIXES:
        with polygon_instance_reader(
            reference, **grid, schema=schema, class_field=class_field, default_class=thing,
            labels_crs=labels_crs, classes_of=classes_of,
        ) as read:  # fmt: skip
            yield read
    else:
        if class_field is not None or labels_crs is not None:
            raise GeosegError(
                "--class-field and --labels-crs apply to a polygon reference, not a raster"
            )
        refuse_binary_mask(reference)  # a 0/1 mask would score as one object
        refuse_reference_off_grid(reference, prediction)
        size = (grid["height"], grid["width"])
        with instance_raster_reader(reference, *size, thing, classes_of) as read:
            yield read


def _only(classes: np.ndarray, ids: np.ndarray, keep: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Classes outside ``keep`` (and their ids) become 'no segment'."""
    drop = ~np.isin(classes, list(keep))
    return np.where(drop, NODATA_LABEL, classes), np.where(drop, 0, ids)


def _overlaps(
    prediction: str, reference: str, schema: ClassSchema, task: str,
    class_field: str | None, chunk: int, labels_crs: str | None = None,
    classes_of: str = "the model",
) -> tuple[SegmentOverlaps, Counter[int], set[tuple[int, int]]]:  # fmt: skip
    """Segment counts summed over ``chunk x chunk`` blocks of the two maps, and the
    reference's classes outside ``schema`` that were left unscored: scored pixels per
    class value, and their ``(class, id > 0)`` segments.

    Pixels where the reference or the prediction has no data (the prediction's mask
    holds the image's nodata) are void: they count toward no segment.
    """
    things = [c.id for c in schema.classes if c.is_thing]
    keep = set(things) if task == "instance" else set(schema.ids)
    known = np.asarray([*schema.ids, NODATA_LABEL])
    total, unknown_px, unknown_ids = SegmentOverlaps(), Counter[int](), set[tuple[int, int]]()
    with (
        rasterio.open(prediction) as src,
        _reference_reader(
            reference, prediction, schema, class_field, labels_crs, classes_of
        ) as ref,
        instance_raster_reader(prediction, src.height, src.width) as pred,
    ):
        for y0 in range(0, src.height, chunk):
            for x0 in range(0, src.width, chunk):
                key = (
                    slice(y0, min(y0 + chunk, src.height)),
                    slice(x0, min(x0 + chunk, src.width)),
                )
                tc, ti, ref_valid = ref(key)
                pc, pi, pred_valid = pred(key)  # the image's nodata, carried by the COG
                valid = ref_valid & pred_valid  # void where either map has no data
                alien = valid & ~np.isin(tc, known)
                values, counts = np.unique(tc[alien], return_counts=True)
                unknown_px.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
                pairs = np.unique(np.stack([tc[alien & (ti > 0)], ti[alien & (ti > 0)]]), axis=1)
                unknown_ids.update(map(tuple, pairs.T.tolist()))
                tc, ti = _only(tc, ti, keep)
                pc, pi = _only(pc, pi, keep)
                total = total + segment_overlaps(tc, ti, pc, pi, things, valid)
    return total, unknown_px, unknown_ids


def score_instances(
    prediction: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    task: str = "instance",
    class_field: str | None = None,
    overwrite: bool = False,
    chunk: int = 1024,
    extra: dict[str, Any] | None = None,
    labels_crs: str | None = None,
    model: str | None = None,
) -> InstanceEvaluation:
    """AP50 and PQ/SQ/RQ of an instance or panoptic raster; writes ``metrics.json``.

    Args:
        prediction: instance or panoptic COG (band 1 class, band 2 id) with the
            model's classes in its ``GEOSEG_CLASSES`` tag.
        reference: id raster on the same grid (band described ``instance`` or band 1:
            ids, 0 = none; optional band described ``class`` or band 2: classes), or a
            polygon layer (``.gpkg``, ``.geojson``, ``.shp``, ``.fgb``, ``.parquet``).
        out_dir: folder for ``metrics.json``.
        task: ``"instance"`` (thing classes only) or ``"panoptic"`` (stuff too).
        class_field: polygon attribute naming each feature's class; default
            ``"class"``, or the model's only thing class.
        overwrite: replace an existing ``metrics.json``.
        chunk: block side in px.
        extra: more entries for ``metrics.json``.
        labels_crs: a polygon reference's CRS when its file declares none (or a
            wrong one); ``"raster"``: the prediction's (:mod:`geoseg.io.vectors_crs`).
        model: the checkpoint that made ``prediction``, named in messages about its
            classes; None (a prediction file scored alone): the prediction is named.

    Raises:
        GeosegError: unknown task, no class schema, maps on different grids, or
            references that cannot be read.
    """
    if task not in INSTANCE_TASKS:
        raise GeosegError(f"task must be one of {', '.join(INSTANCE_TASKS)}, not {task!r}")
    require_at_least("score_instances", chunk=(chunk, 1))
    pred_path, ref_path = os.fspath(prediction), os.fspath(reference)
    schema = read_class_schema(pred_path)
    if schema is None:
        raise InvalidRasterError(
            f"{pred_path}: no geoseg class schema; score a raster written by `geoseg predict`"
        )
    if task == "instance" and not any(c.is_thing for c in schema.classes):
        raise InvalidRasterError(
            f"{pred_path}: a semantic map (classes {', '.join(schema.names)}; none is a thing "
            "class): --prediction scores instance and panoptic maps; score a semantic model "
            "with -m MODEL --image IMAGE"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_output_path(out / "metrics.json", overwrite)
    classes_of = f"the model {Path(model).name}" if model else f"the prediction {pred_path}"
    ov, unknown_px, unknown_ids = _overlaps(
        pred_path, ref_path, schema, task, class_field, chunk, labels_crs, classes_of
    )
    things = [c.id for c in schema.classes if c.is_thing]
    quality = panoptic_quality(ov, things)
    ap50 = average_precision_50(ov, _scores(pred_path, ov))
    result = InstanceEvaluation(task, quality, ap50, schema, ())
    stuffless = _stuffless_reference(ref_path, ov, schema) if task == "panoptic" else None
    unknown = unknown_classes_warning(ref_path, schema, classes_of, unknown_px, unknown_ids)
    warnings = [w for w in (unknown, stuffless) if w]
    for text in warnings:
        log.warning("%s", text)
    report = {
        "task": task, "prediction": Path(pred_path).name, "reference": Path(ref_path).name,
        **(extra or {}), **_metrics_json(result, ov),
        "unknown_reference_values": [
            {"value": v, "pixels": n, "objects": sum(1 for c, _ in unknown_ids if c == v)}
            for v, n in sorted(unknown_px.items())
        ],
        "warnings": warnings,
    }  # fmt: skip
    return InstanceEvaluation(
        task, quality, ap50, schema, (write_json(out / "metrics.json", report, overwrite),)
    )


def _stuffless_reference(reference: str, ov: SegmentOverlaps, schema: ClassSchema) -> str | None:
    """Why PQ_stuff means little: the prediction has stuff and the reference none at all.

    An id raster without a class band (or a layer of objects only) labels no stuff:
    each predicted stuff class is then one false positive, which is what PQ says of
    such a reference, not of the model.
    """
    things = {c.id for c in schema.classes if c.is_thing}
    if any(c not in things for c, _ in ov.truth_area):
        return None
    names = {c.id: c.name for c in schema.classes}
    stuff = [names.get(c, str(c)) for c in sorted({c for c, _ in ov.pred_area} - things)]
    if not stuff:
        return None
    return (
        f"{reference}: labels no stuff class (only objects), so each predicted stuff class "
        f"({', '.join(stuff)}) counts as a false positive: PQ_stuff is 0 and pulls PQ "
        "down; give a reference with a class band for every pixel, or score --task instance"
    )


def _scores(path: str, ov: SegmentOverlaps) -> dict[tuple[int, int], float] | None:
    """Each predicted object's score from the raster's tag (None: the raster has none)."""
    scores = read_instance_scores(path)
    if scores is None:
        return None
    return {s: float(scores[s[1]]) for s in ov.pred_area if 0 < s[1] < len(scores)}


def _metrics_json(result: InstanceEvaluation, ov: SegmentOverlaps) -> dict[str, Any]:
    names = {c.id: c.name for c in result.schema.classes}
    q = result.quality
    per_class = [
        {
            "id": c, "name": names.get(c, str(c)), "pq": cq.pq, "sq": cq.sq, "rq": cq.rq,
            "tp": cq.tp, "fp": cq.fp, "fn": cq.fn, "ap50": result.ap50.get(c),
        }
        for c, cq in sorted(q.per_class.items())
    ]  # fmt: skip
    return {
        "ap50": result.mean_ap50, "pq": q.pq, "sq": q.sq, "rq": q.rq,
        "pq_things": q.pq_things, "sq_things": q.sq_things, "rq_things": q.rq_things,
        "pq_stuff": q.pq_stuff, "sq_stuff": q.sq_stuff, "rq_stuff": q.rq_stuff,
        **_kind_notes(q),
        **({"note_ap50": AP50_NOTE} if result.mean_ap50 is None else {}),
        "ap_definition": AP50_DEFINITION,
        "pq_match": "same class, mask IoU > 0.5 (unique), void pixels left out",
        "reference_segments": len(ov.truth_area), "predicted_segments": len(ov.pred_area),
        "classes": per_class,
    }  # fmt: skip


def _kind_notes(q: PanopticQuality) -> dict[str, str]:
    """``note_things``/``note_stuff`` saying why that kind's means are null (0/0)."""
    kinds = (("things", q.pq_things), ("stuff", q.pq_stuff))
    return {
        f"note_{kind}": f"null: no {kind} segment in the prediction or the reference"
        for kind, value in kinds
        if value is None
    }


def evaluate_instance_model(
    model: str,
    image: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: PredictOptions | None = None,
    task: str = "instance",
    class_field: str | None = None,
    labels_crs: str | None = None,
) -> InstanceEvaluation:
    """Run an ``instance`` checkpoint on ``image``, then :func:`score_instances`.

    The prediction is kept as ``instances.tif`` (or ``panoptic.tif``) in ``out_dir``.
    """
    opts = options or PredictOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred = out / f"{'instances' if task == 'instance' else 'panoptic'}.tif"
    check_output_path(out / "metrics.json", opts.overwrite)
    if task == "instance":
        predict_instances(image, model, pred, opts)
    else:
        predict_panoptic(image, model, pred, opts)
    extra = {"model": Path(model).name, "image": Path(image).name}
    result = score_instances(
        pred, reference, out, task, class_field, opts.overwrite, opts.chunk, extra, labels_crs,
        model,
    )  # fmt: skip
    return InstanceEvaluation(
        result.task, result.quality, result.ap50, result.schema, (pred, *result.files)
    )
