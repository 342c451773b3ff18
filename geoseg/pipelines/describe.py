"""Human-readable descriptions for ``geoseg models`` and ``geoseg info``."""

from __future__ import annotations

import os

import pyproj
import rasterio

from geoseg.errors import InputNotFoundError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.io.labels import read_class_schema
from geoseg.io.probe import file_kind
from geoseg.io.raster import open_scene
from geoseg.io.vectors_crs import LONLAT
from geoseg.io.vectors_info import vector_layers
from geoseg.models.registry import checkpoint_family, families
from geoseg.types import ClassSchema

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


def describe_checkpoint(path: str | os.PathLike[str]) -> list[str]:
    """Architecture, bands, classes, window and scores of a checkpoint."""
    meta = read_checkpoint_meta(path)
    family = checkpoint_family(meta)
    lines = [
        f"{path}",
        f"  family: {family.name}   inputs: {family.inputs}   runtime: {family.source}",
        f"  task: {meta.task}   arch: {meta.arch}   encoder: {meta.encoder}",
        f"  bands ({len(meta.bands)}): {', '.join(meta.bands)}",
        f"  window: {meta.window} px   margin: {meta.margin} px   GSD: {meta.gsd_m} m",
        "  classes:",
        *_classes(meta.schema),
    ]
    if meta.metrics:
        lines.append(f"  metrics: {dict(meta.metrics)}")
    return lines


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
        f"  pixel size: {t.a:g} x {-t.e:g}   origin: ({t.c:g}, {t.f:g})",
        f"  nodata: {scene.nodata}",
        f"  bands: {', '.join(scene.band_names)}",
    ]
    schema = read_class_schema(path)
    if schema is not None:
        lines += ["  classes:", *_classes(schema)]
    return lines


def _has_crs(path: str | os.PathLike[str]) -> bool:
    with rasterio.open(path) as src:
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
            f"    bounds: {', '.join(f'{v:.10g}' for v in layer.bounds)}",
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
