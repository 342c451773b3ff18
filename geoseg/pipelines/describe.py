"""Human-readable descriptions for ``geoseg models`` and ``geoseg info``."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pyproj

from geoseg.errors import InputNotFoundError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.io.georef import open_raster_quietly
from geoseg.io.labels import read_class_schema
from geoseg.io.probe import file_kind
from geoseg.io.raster import open_scene
from geoseg.io.vectors_crs import LONLAT
from geoseg.io.vectors_info import vector_layers
from geoseg.models.registry import checkpoint_family, families
from geoseg.types import DEGREE_GSD_BELOW, OBJECT_SIZES_KEY, ClassSchema, ModelMeta

__all__ = [
    "describe_checkpoint",
    "describe_file",
    "describe_models",
    "describe_raster",
    "describe_vector",
]


def _classes(schema: ClassSchema) -> list[str]:
    return [f"    {c.id:3d}  {c.name}  rgb{c.colour}" for c in schema.classes]


def describe_models() -> list[str]:
    """Every registered model family: tasks, inputs, runtime, ``--arch`` names, classes."""
    lines: list[str] = []
    for family in families():
        lines += [*family.describe(), ""]
    return [
        *lines,
        "trained models are .safetensors checkpoints: `geoseg models FILE` describes one",
    ]


def _scale_lines(meta: ModelMeta, prompts: bool) -> list[str]:
    """The model's input scale and mean/std, so what it takes can be checked.

    A SAM on data of another scale sees a black or saturated image
    (:mod:`geoseg.pipelines.prompt_scale`), so its listing says which it takes; an
    imported model is fed by its ``geoseg import --scale`` (README "Bring your own
    model"); a trained one by its training data's type.
    """
    norm = meta.normalization
    numbers = ", ".join
    if prompts:
        how = f"geoseg import --scale {1 / norm.scale:g}; 0-1 expected"
    elif "imported_from" in meta.provenance:
        how = f"geoseg import --scale {1 / norm.scale:g}"
    else:
        how = "from the training data's type"
    return [
        f"  pixel scale: model input = stored value / {1 / norm.scale:g} ({how})",
        f"  mean: {numbers(f'{v:.4g}' for v in norm.mean)}   "
        f"std: {numbers(f'{v:.4g}' for v in norm.std)}",
    ]


#: Training options shown by ``geoseg info`` when the checkpoint recorded them.
TRAINING_KEYS = ("epochs", "steps_per_epoch", "batch_size", "lr", "weight_decay", "seed",
                 "dice_weight", "class_weights", "ema", "normalization", "date_augment",
                 "swap_dates")  # fmt: skip


def _training_lines(meta: ModelMeta) -> list[str]:
    """One line of the recorded training options (none for checkpoints without them)."""
    items = [f"{k} {meta.provenance[k]}" for k in TRAINING_KEYS if k in meta.provenance]
    return [f"  training: {', '.join(items)}"] if items else []


def describe_checkpoint(path: str | os.PathLike[str]) -> list[str]:
    """Architecture, bands, classes, window and scores of a checkpoint."""
    meta = read_checkpoint_meta(path)
    family = checkpoint_family(meta)
    lines = [
        f"{path}",
        f"  family: {family.name}   inputs: {family.inputs}   runtime: {family.source}",
        f"  task: {meta.task}   arch: {meta.arch}   encoder: {meta.encoder}",
        f"  bands ({len(meta.bands)}): {', '.join(meta.bands)}",
        f"  window: {meta.window} px   margin: {meta.margin} px   GSD: {_gsd_text(meta)}",
        *_scale_lines(meta, family.inputs == "prompts"),
        *_object_size_lines(meta),
        *_training_lines(meta),
        "  classes:",
        *_classes(meta.schema),
    ]
    if meta.metrics:
        lines += ["  metrics:", *_metric_lines(meta.metrics, "    ")]
    return lines


def _object_size_lines(meta: ModelMeta) -> list[str]:
    """The training objects' sizes (instance/panoptic checkpoints that recorded them)."""
    rec = meta.provenance.get(OBJECT_SIZES_KEY)
    if not isinstance(rec, Mapping) or "largest_px" not in rec:
        return []
    return [
        f"  training objects: {rec.get('objects', '?')}   largest: "
        f"{rec.get('largest_m2', '?')} m² ({rec['largest_px']} px)   "
        f"p99: {rec.get('p99_m2', '?')} m² ({rec.get('p99_px', '?')} px)"
    ]


def _gsd_text(meta: ModelMeta) -> str:
    """The checkpoint's GSD as recorded, with its unit; an old checkpoint's degrees first,
    then in metres at the equator (a degree's east-west length shrinks with cos(latitude),
    so the metre figure is only right there)."""
    if meta.gsd_m is None or meta.gsd_approx_m is None:
        return "unknown"
    if meta.gsd_m >= DEGREE_GSD_BELOW:
        return f"{meta.gsd_m:.4g} m"
    return (
        f"{meta.gsd_m:.4g}° (about {meta.gsd_approx_m:.3g} m at the equator; this older "
        "checkpoint recorded the training CRS's unit, degrees)"
    )


def _metric_value(value: Any) -> str:
    if value is None:  # a 0/0 score (e.g. a class never predicted)
        return "n/a"
    if isinstance(value, float):  # '#' keeps trailing zeros: 0.9250 has 4 digits, 0.925 3
        return f"{value:#.4g}".rstrip(".")
    return str(value)


def _metric_lines(metrics: Mapping[str, Any], indent: str) -> list[str]:
    """``name: value`` lines, values aligned, floats to 4 significant digits; nested
    scores indented under their name (a list of named scores under each name)."""
    items = list(metrics.items())
    width = max((len(str(k)) for k, v in items if not isinstance(v, Mapping | list)), default=0)
    lines: list[str] = []
    for key, value in items:
        if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
            value = {str(v.get("name", i)): {k: x for k, x in v.items() if k != "name"}
                     for i, v in enumerate(value)}  # fmt: skip
        if isinstance(value, Mapping) and value and all(map(_flat, value.values())):
            lines += [f"{indent}{key}:", *_row_lines(value, indent + "  ")]
        elif isinstance(value, Mapping):
            lines += [f"{indent}{key}:", *_metric_lines(value, indent + "  ")]
        elif isinstance(value, list):
            lines.append(f"{indent}{f'{key}:':<{width + 1}} {', '.join(map(_metric_value, value))}")
        else:
            lines.append(f"{indent}{f'{key}:':<{width + 1}} {_metric_value(value)}")
    return lines


def _flat(value: Any) -> bool:
    """A mapping of plain scores (one row of a per-class table)."""
    return isinstance(value, Mapping) and not any(
        isinstance(v, Mapping | list) for v in value.values()
    )


def _row_lines(rows: Mapping[str, Mapping[str, Any]], indent: str) -> list[str]:
    """One line per row: ``name: key value, key value, ...`` (per-class scores)."""
    width = max(len(str(k)) for k in rows)
    return [
        f"{indent}{f'{name}:':<{width + 1}} "
        + ", ".join(f"{k} {_metric_value(v)}" for k, v in row.items())
        for name, row in rows.items()
    ]


def describe_raster(path: str | os.PathLike[str]) -> list[str]:
    """Size, georeferencing, bands and (for label rasters) classes of a raster."""
    if not os.path.exists(path):
        raise InputNotFoundError(f"{path}: no such file; check the path")
    scene = open_scene(path, assume_crs="EPSG:4326" if _no_crs(path) else None)
    t = scene.transform
    lines = [
        f"{path}",
        f"  size: {scene.width} x {scene.height} px, {scene.count} band(s) {scene.dtype}",
        f"  crs: {scene.crs.to_string() if _has_crs(path) else 'none'}",
        f"  pixel size: {t.a:g} x {-t.e:g}   origin: {_coords((t.c, t.f), scene.crs)}",
        f"  nodata: {scene.nodata}",
        f"  bands: {', '.join(scene.band_names)}",
    ]
    schema = read_class_schema(path)
    if schema is not None:
        lines += ["  classes:", *_classes(schema)]
    return lines


def _coords(values: Sequence[float], crs: Any) -> str:
    """Coordinates in full: 8 decimals in degrees (about 1 mm), 3 in metres or feet."""
    geographic = crs is not None and pyproj.CRS.from_user_input(crs).is_geographic
    return ", ".join(f"{v:.{8 if geographic else 3}f}" for v in values)


def _bounds_text(features: int, bounds: Sequence[float]) -> str:
    """A layer's bounds, or why it has none (GDAL reports NaN for an empty layer)."""
    if features == 0:
        return "none (no features)"
    if not all(math.isfinite(v) for v in bounds):
        return "none (no geometry)"
    return ", ".join(f"{v:.10g}" for v in bounds)


def _has_crs(path: str | os.PathLike[str]) -> bool:
    with open_raster_quietly(path) as src:  # open_scene says what is wrong
        return src.crs is not None


def _no_crs(path: str | os.PathLike[str]) -> bool:
    return not _has_crs(path)


def _crs_text(crs: pyproj.CRS | None) -> str:
    if crs is None:
        return f"none declared (read as {LONLAT} only if the coordinates fit lon/lat)"
    code = crs.to_epsg()
    return f"EPSG:{code} ({crs.name})" if code else crs.name


def describe_vector(path: str | os.PathLike[str]) -> list[str]:
    """Each layer's geometry type, feature count, CRS, bounds and fields (as ``ogrinfo -so``)."""
    layers = vector_layers(path)
    lines = [f"{path}", f"  {len(layers)} layer(s)"]
    for layer in layers:
        fields = ", ".join(f"{name} ({dtype})" for name, dtype in layer.fields)
        lines += [
            f"  layer {layer.name}: {layer.geometry_type or 'no geometry'}, "
            f"{layer.features} feature(s)",
            f"    crs: {_crs_text(layer.crs)}",
            f"    bounds: {_bounds_text(layer.features, layer.bounds)}",
            f"    fields: {fields or 'none'}",
        ]
    return lines


def describe_file(path: str | os.PathLike[str]) -> list[str]:
    """:func:`describe_checkpoint`, :func:`describe_raster` or :func:`describe_vector`.

    Raises:
        InputNotFoundError: no such file.
        UnknownFileError: the file is none of the three kinds.
    """
    kind = file_kind(path)
    if kind == "checkpoint":
        return describe_checkpoint(path)
    return describe_raster(path) if kind == "raster" else describe_vector(path)
