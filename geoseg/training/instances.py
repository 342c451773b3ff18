"""Instance labels and scores for training a bottom-up instance model.

Instances come from an id raster (``uint32``, 0 = no instance, its nodata =
unlabelled) or from a polygon layer (GPKG, GeoJSON, ...; any CRS), reprojected
to the image CRS and burnt onto the image grid with
:func:`rasterio.features.rasterize` (pixel centres inside a polygon; feature
``i`` gets id ``i + 1``, a later feature wins where two overlap).

The per-pixel targets and loss the model learns from are in
:mod:`geoseg.training.instance_targets` (imported here so older imports keep working).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import torch
from rasterio.features import rasterize
from rasterio.transform import array_bounds
from torch import nn

from geoseg.errors import GeosegError, InvalidRasterError
from geoseg.evaluation.instances import average_precision_50, panoptic_quality, segment_overlaps
from geoseg.io.instance_masks import refuse_binary_mask
from geoseg.io.raster import open_scene
from geoseg.io.training_data import (
    LABEL_NODATA,
    LabelledRaster,
    read_labelled_raster,
    read_labels_on_grid,
)
from geoseg.io.vectors_crs import read_layer_on_grid
from geoseg.models.registry import window_multiple
from geoseg.stitching.protocol import InstancePredictor
from geoseg.training.config import check_instance_classes
from geoseg.training.instance_targets import boundary_pos_weight as boundary_pos_weight
from geoseg.training.instance_targets import (
    boundary_target,
    encode_targets,
    instance_loss,
)
from geoseg.types import NODATA_LABEL, ClassSchema, ModelMeta

__all__ = [
    "InstanceRaster",
    "InstanceScores",
    "boundary_target",
    "encode_targets",
    "instance_loss",
    "instance_scorer",
    "instance_scores",
    "predict_instance_ids",
    "read_instance_ids",
    "read_instance_raster",
    "score_instance_model",
]

_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet")


@dataclass(frozen=True, eq=False)
class InstanceRaster(LabelledRaster):
    """A training image with instance labels on its grid.

    Attributes:
        labels: ``(H, W) int64`` class id per pixel: the instance's thing class,
            the background class off instances, ``LABEL_NODATA`` where unlabelled
            or the image has no data.
        ids: ``(H, W) uint32`` instance id, 0 = none (unique within the raster).
    """

    ids: np.ndarray


def _split_schema(schema: ClassSchema) -> tuple[int, tuple[int, ...]]:
    """The background class id and the thing class ids; raises if not one background."""
    check_instance_classes(schema, "the class schema")
    stuff = [c.id for c in schema.classes if not c.is_thing]
    return stuff[0], tuple(c.id for c in schema.classes if c.is_thing)


def _feature_classes(
    frame: gpd.GeoDataFrame, schema: ClassSchema, class_field: str | None, path: str
) -> np.ndarray:
    """``(n,) int64`` thing class id of each feature."""
    _, things = _split_schema(schema)
    n = len(frame)
    if class_field is None:
        if len(things) != 1:
            raise GeosegError(
                f"{path}: the schema has {len(things)} object classes; name the attribute "
                "holding each polygon's class with --class-field"
            )
        return np.full(n, things[0], np.int64)
    if class_field not in frame.columns:
        raise GeosegError(f"{path}: no attribute {class_field!r}; check --class-field")
    by_key = {str(c.id): c.id for c in schema.classes if c.is_thing}
    by_key |= {c.name: c.id for c in schema.classes if c.is_thing}
    values = [str(v) for v in frame[class_field]]
    unknown = sorted(set(values) - set(by_key))
    if unknown:
        raise GeosegError(
            f"{path}: {class_field} values {unknown[:5]} are not object classes of the "
            f"schema ({sorted(by_key)}); fix the layer or the class file"
        )
    return np.array([by_key[v] for v in values], np.int64)


def read_instance_ids(
    label_path: str | os.PathLike[str],
    image_path: str | os.PathLike[str],
    schema: ClassSchema,
    class_field: str | None = None,
    labels_crs: str | None = None,
) -> tuple[np.ndarray, dict[int, int], np.ndarray]:
    """Instance ids of an id raster or a polygon layer, on the image grid.

    Args:
        label_path: ``uint32`` id raster (0 = none) or a polygon layer.
        image_path: the image whose grid (CRS, transform, size) the ids take.
        schema: classes; see :func:`_split_schema`.
        class_field: polygon attribute holding the class id or name (default:
            the schema's single object class; id rasters always use that).
        labels_crs: the polygon layer's CRS when its file declares none (or a
            wrong one); ``"raster"``: the image's (see :mod:`geoseg.io.vectors_crs`).

    Returns:
        ``ids (H, W) uint32``, ``{id: class id}`` and ``labelled (H, W) bool``.
    """
    label_path, image_path = os.fspath(label_path), os.fspath(image_path)
    if Path(label_path).suffix.lower() in _VECTOR_SUFFIXES:
        scene = open_scene(image_path)
        shape = (scene.height, scene.width)
        bounds = array_bounds(*shape, scene.transform)
        frame = read_layer_on_grid(
            label_path, scene.crs, bounds, labels_crs, "--labels-crs", image_path
        )
        classes = _feature_classes(frame, schema, class_field, label_path)
        shapes = [(g, i + 1) for i, g in enumerate(frame.geometry) if g is not None]
        ids = (
            rasterize(shapes, out_shape=shape, transform=scene.transform, fill=0, dtype="uint32")
            if shapes
            else np.zeros(shape, np.uint32)
        )
        return ids, {i + 1: int(c) for i, c in enumerate(classes)}, np.ones(shape, bool)
    raw = read_labels_on_grid(label_path, image_path)
    labelled = raw != LABEL_NODATA
    if (raw[labelled] < 0).any() or raw.max(initial=0) > np.iinfo(np.uint32).max:
        raise InvalidRasterError(
            f"{label_path}: instance ids out of range; expected uint32, 0 = none"
        )
    ids = np.where(labelled, raw, 0).astype(np.uint32)
    refuse_binary_mask(label_path, ids)  # else every patch of 1 trains as one object
    _, things = _split_schema(schema)
    if len(things) != 1:
        raise GeosegError(
            f"{label_path}: an id raster carries no classes and the schema has "
            f"{len(things)} object classes; use a polygon layer with --class-field"
        )
    return ids, {int(i): things[0] for i in np.unique(ids) if i}, labelled


def read_instance_raster(
    image_path: str | os.PathLike[str],
    label_path: str | os.PathLike[str],
    bands: Sequence[str] | None,
    schema: ClassSchema,
    class_field: str | None = None,
    labels_crs: str | None = None,
) -> InstanceRaster:
    """An image with its instance labels (see :func:`read_instance_ids`) in memory."""
    ids, id_class, labelled = read_instance_ids(
        label_path, image_path, schema, class_field, labels_crs
    )
    # A polygon layer is no raster: the image stands in as the label raster and
    # its labels are replaced by the ids' classes below.
    is_raster = Path(os.fspath(label_path)).suffix.lower() not in _VECTOR_SUFFIXES
    base = read_labelled_raster(image_path, label_path if is_raster else image_path, bands)
    background, _ = _split_schema(schema)
    lut = np.full(max([int(ids.max()), *id_class]) + 1, background, np.int64)
    for i, c in id_class.items():
        lut[i] = c
    labels = np.where(labelled & base.valid, lut[ids], LABEL_NODATA)
    fields = {k: getattr(base, k) for k in LabelledRaster.__dataclass_fields__}
    return InstanceRaster(**(fields | {"labels": labels, "ids": np.where(base.valid, ids, 0)}))


@dataclass(frozen=True)
class InstanceScores:
    """Instance scores of thing classes (means over classes that occur).

    Attributes:
        ap50: AP at IoU 0.5 (segments ranked by score).
        pq, sq, rq: panoptic, segmentation and recognition quality of the things.
        truth, predicted: reference and predicted instances (void-free counts).
    """

    ap50: float
    pq: float
    sq: float
    rq: float
    truth: int
    predicted: int


def instance_scores(
    truth_classes: np.ndarray,
    truth_ids: np.ndarray,
    pred_classes: np.ndarray,
    pred_ids: np.ndarray,
    schema: ClassSchema,
    valid: np.ndarray,
    scores: Mapping[tuple[int, int], float] | None = None,
) -> InstanceScores:
    """AP50 and PQ of predicted instances against reference ones (arrays ``(H, W)``).

    Only thing classes are scored: the background is left out of the means.
    """
    _, things = _split_schema(schema)
    ov = segment_overlaps(truth_classes, truth_ids, pred_classes, pred_ids, things, valid)
    pq = panoptic_quality(ov)
    ap = average_precision_50(ov, scores)
    per = [pq.per_class[c] for c in things if c in pq.per_class]
    return InstanceScores(
        ap50=_mean([ap[c] for c in things if c in ap]),
        pq=_mean([q.pq for q in per]), sq=_mean([q.sq for q in per]),
        rq=_mean([q.rq for q in per]),
        truth=sum(1 for s in ov.truth_area if s[0] in things and s[1] > 0),
        predicted=sum(1 for s in ov.pred_area if s[0] in things and s[1] > 0),
    )  # fmt: skip


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def predict_instance_ids(
    predictor: InstancePredictor, image: np.ndarray, valid: np.ndarray, multiple: int
) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], float]]:
    """Run an instance model on a whole in-memory raster as one window.

    Works for every :class:`~geoseg.stitching.InstancePredictor` (bottom-up,
    Panoptic-DeepLab, Mask R-CNN). Where instances overlap the higher score wins.

    Args:
        predictor: the model.
        image: ``(C, H, W) float32`` band values as stored.
        valid: ``(H, W) bool``.
        multiple: the architecture's window multiple (the raster is padded to it).

    Returns:
        ``classes (H, W) uint8`` (the instance's class id, the background class id
        off instances, 255 = nodata), ``ids (H, W) uint32`` and
        ``{(class id, instance id): score}``.
    """
    h, w = valid.shape
    ph, pw = -h % multiple, -w % multiple
    x = np.pad(image, ((0, 0), (0, ph), (0, pw)), mode="symmetric")[None]
    v = np.pad(valid, ((0, ph), (0, pw)))[None]
    masks, classes, scores = predictor.predict_instances(x, v)[0]
    background, _ = _split_schema(predictor.schema)
    ids = np.zeros((h, w), np.uint32)
    cls = np.where(valid, background, NODATA_LABEL).astype(np.uint8)
    for i in np.argsort(scores, kind="stable"):  # ascending: the best is painted last
        m = masks[i][:h, :w] & valid
        ids[m], cls[m] = i + 1, classes[i]
    pairs = enumerate(zip(classes, scores, strict=True), start=1)
    return cls, ids, {(int(c), i): float(s) for i, (c, s) in pairs}


def score_instance_model(
    predictor: InstancePredictor, rasters: Sequence[InstanceRaster], multiple: int
) -> InstanceScores:
    """:class:`InstanceScores` of a model over several rasters, each run whole.

    The rasters are scored together (ids offset to stay unique), so AP50 ranks
    the predictions of all rasters in one list.
    """
    truth_c, truth_i, pred_c, pred_i, valid = [], [], [], [], []
    scores: dict[tuple[int, int], float] = {}
    t_off = p_off = 0
    for r in rasters:
        cls, ids, sc = predict_instance_ids(predictor, r.image, r.valid, multiple)
        truth_c.append(np.where(r.labels == LABEL_NODATA, NODATA_LABEL, r.labels).ravel())
        truth_i.append(np.where(r.ids > 0, r.ids.astype(np.int64) + t_off, 0).ravel())
        pred_c.append(cls.ravel())
        pred_i.append(np.where(ids > 0, ids.astype(np.int64) + p_off, 0).ravel())
        valid.append(r.valid.ravel())
        scores |= {(c, i + p_off): s for (c, i), s in sc.items()}
        t_off, p_off = t_off + int(r.ids.max(initial=0)), p_off + int(ids.max(initial=0))
    cat = np.concatenate
    return instance_scores(
        cat(truth_c), cat(truth_i), cat(pred_c), cat(pred_i), predictor.schema, cat(valid), scores
    )


def instance_scorer(
    predictor: Callable[[nn.Module, ModelMeta, torch.device], InstancePredictor],
    field: str,
    meta: ModelMeta,
    device: torch.device,
    val: Sequence[LabelledRaster],
) -> Callable[[nn.Module], float] | None:
    """The trainer's validation score of an instance or panoptic model.

    Args:
        predictor: wraps the training module (e.g. :class:`PanopticPredictor`).
        field: :class:`InstanceScores` attribute to return (``"ap50"``, ``"pq"``).
        meta: the checkpoint metadata (window multiple from ``arch``/``options``).
        device: where the module runs.
        val: validation rasters (:class:`InstanceRaster`).

    Returns:
        module -> score over all ``val`` rasters, each predicted whole (the module
        is put back in train mode); None without validation rasters.
    """
    rasters = [r for r in val if isinstance(r, InstanceRaster)]
    if not rasters:
        return None
    multiple = window_multiple(meta.arch, meta.options)

    def score(module: nn.Module) -> float:
        scores = score_instance_model(predictor(module, meta, device), rasters, multiple)
        module.train()
        return float(getattr(scores, field))

    return score
