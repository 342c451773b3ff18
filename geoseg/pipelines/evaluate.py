"""``evaluate_scene``: score a model on a labelled raster with predict's own tiled inference."""

from __future__ import annotations

import functools
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
from geoseg.io.raster import Scene, open_scene
from geoseg.io.reports import write_confusion_csv, write_confusion_png, write_json
from geoseg.io.training_data import LABEL_NODATA, read_labels_on_grid
from geoseg.models.cache import load_predictor
from geoseg.pipelines.predict import PredictOptions, prepare_model_input
from geoseg.tiling.confusion import remap_values, tiled_confusion
from geoseg.tiling.execute import Progress
from geoseg.types import ClassSchema

__all__ = ["EvaluateResult", "evaluate_scene"]

REPORT_FILES = ("metrics.json", "confusion.csv", "confusion.png")


@dataclass(frozen=True)
class EvaluateResult:
    """Metrics and the files written."""

    metrics: SegmentationMetrics
    confusion: np.ndarray
    files: tuple[Path, ...]


def _reference(label_path: str, scene: Scene) -> da.Array:
    """``(H, W) int64`` reference values on the scene grid; nodata -> a value no class has."""
    ref = open_scene(label_path, chunk=int(scene.data.data.chunks[1][0]))
    same = (
        ref.crs == scene.crs and ref.transform == scene.transform
        and (ref.height, ref.width) == (scene.height, scene.width)
    )  # fmt: skip
    if not same:
        values = read_labels_on_grid(label_path, scene.path)
        return da.from_array(values, chunks=scene.data.data.chunks[1:])
    data = ref.data.data[0].astype(np.int64)
    return da.where(ref.valid, data, LABEL_NODATA)


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
) -> EvaluateResult:
    """Confusion matrix and metrics of ``model`` on ``image`` against ``labels``.

    Args:
        model: ``"spectral"`` or a checkpoint.
        image: the scene.
        labels: reference label raster (aligned onto the scene grid if needed).
        out_dir: folder for ``metrics.json``, ``confusion.csv``, ``confusion.png``.
        options: tiling/band options, exactly as for ``predict``.
        classes: classes to score in (default: the model's).
        reference_map: reference value -> class id (default: identity).
        prediction_map: model class id -> class id (default: identity).
        progress: ``progress(done, total)`` callback.
    """
    opts = options or PredictOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        check_output_path(out / name, opts.overwrite)
    path = os.fspath(image)
    scene, spec, model_schema, tile = prepare_model_input(path, model, opts)
    schema = classes or model_schema
    if prediction_map is None and set(model_schema.ids) - set(schema.ids):
        raise GeosegError("the model's classes differ from --classes; give --map-prediction")
    ref = _reference(os.fspath(labels), scene)
    if reference_map is not None:
        ref = da.map_blocks(
            functools.partial(remap_values, mapping=reference_map), ref, dtype=np.int32
        )
    conf = tiled_confusion(
        scene.data.data, scene.valid, ref, functools.partial(load_predictor, spec), tile,
        model_schema.ids, schema.ids, prediction_map, opts.scheduler, opts.workers, progress,
    )  # fmt: skip
    if conf.sum() == 0:
        raise GeosegError(
            f"{labels}: no pixel has both a reference class and a prediction; check the "
            "label values against the classes (or --map-reference)"
        )
    metrics = metrics_from_confusion(conf, schema.names)
    report: dict[str, Any] = {
        "model": Path(model).name, "image": Path(path).name, "labels": Path(labels).name,
        "window": tile.window, "margin": tile.margin, "blend": tile.blend,
        "reference_map": _json_map(reference_map), "prediction_map": _json_map(prediction_map),
        **metrics.to_json(),
    }  # fmt: skip
    files = (
        write_json(out / "metrics.json", report, opts.overwrite),
        write_confusion_csv(out / "confusion.csv", conf, schema.names, opts.overwrite),
        write_confusion_png(out / "confusion.png", conf, schema.names, opts.overwrite),
    )
    return EvaluateResult(metrics, conf, files)


def _json_map(mapping: Mapping[int, int] | None) -> dict[str, int] | None:
    return None if mapping is None else {str(k): int(v) for k, v in mapping.items()}
