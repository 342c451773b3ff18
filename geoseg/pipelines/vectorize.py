"""``vectorize_labels``: label raster -> polygon layer (GeoPackage, Shapefile, GeoParquet, ...).

Steps: open the label raster lazily; polygonize it chunk by chunk on the chosen
Dask scheduler, measuring true areas and naming classes in the workers
(geoseg.vector.polygonize, geoseg.vector.attributes); stream each chunk's final
polygons to the writer as it finishes (geoseg.io.vectors, atomic); dissolve the
polygons on chunk seams once all chunks are in and write them last.

With a minimum mapping unit or simplification (geoseg.vector.clean), which need
every polygon's neighbours, the whole layer is built in memory first.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import geopandas as gpd
import numpy as np
import pyarrow as pa
import shapely

from geoseg.areas import HECTARE_M2, AreaMethod, area_method, pixel_area_m2, polygon_area_m2
from geoseg.errors import ConfigError, GeosegError, InvalidRasterError
from geoseg.io.labels import read_class_schema, refuse_probability_raster
from geoseg.io.outputs import output_run
from geoseg.io.raster import Scene, open_scene
from geoseg.io.vectors import (
    GEOMETRY,
    check_vector_output,
    open_vector_writer,
    vector_files,
    write_vectors,
)
from geoseg.pipelines.instance_rows import (
    one_row_per_instance,
    stuff_without_instance_id,
    with_scores,
)
from geoseg.tiling.execute import Progress, store_blocks
from geoseg.types import NODATA_LABEL, ClassSchema, bands_count, require_at_least, require_finite
from geoseg.vector.attributes import (
    Georef,
    UnknownClasses,
    pixel_to_crs,
    polygon_table,
    sort_table,
)
from geoseg.vector.clean import filter_classes, merge_small_polygons, simplify_coverage
from geoseg.vector.label_ids import polygonizable_ids
from geoseg.vector.polygonize import (
    ChunkCollector,
    StreamingCollector,
    merge_chunks,
    polygonize_blocks,
)
from geoseg.vector.polygons import Polygons

__all__ = [
    "VectorizeOptions",
    "VectorizeResult",
    "check_vectorize_output",
    "label_polygons",
    "one_row_per_instance",
    "vectorize_labels",
]

log = logging.getLogger(__name__)

#: Band descriptions that mark the optional bands of a label raster.
CONFIDENCE_BAND = "confidence"
INSTANCE_BAND = "instance"


@dataclass(frozen=True)
class VectorizeOptions:
    """Options of :func:`vectorize_labels` (the CLI flags of ``geoseg vectorize``).

    Attributes:
        simplify_m: coverage simplification tolerance in ground metres (None: none).
        min_area_ha: minimum mapping unit in hectares (None: none).
        classes: class names or ids to write (None: all).
        connectivity: 4 (edge neighbours) or 8 (also diagonal neighbours).
        format: ``gpkg``, ``shp``, ``parquet``, ``fgb`` or ``geojson`` (default:
            from the output's extension).
        layer: layer name (default: the input's file name without extension).
        overwrite: replace an existing output.
        chunk: dask chunk side in px (polygonization unit).
        scheduler: ``threads``, ``sync``, ``local`` or ``tcp://host:port``.
        workers: threads or worker processes.
        assume_crs: CRS for a raster without one.
    """

    simplify_m: float | None = None
    min_area_ha: float | None = None
    classes: Sequence[str] | None = None
    connectivity: int = 4
    format: str | None = None
    layer: str | None = None
    overwrite: bool = False
    chunk: int = 2048
    scheduler: str = "threads"
    workers: int | None = None
    assume_crs: str | None = None

    def __post_init__(self) -> None:
        if self.connectivity not in (4, 8):
            raise ConfigError(f"connectivity must be 4 or 8, got {self.connectivity}")
        require_at_least("VectorizeOptions", chunk=(self.chunk, 16), workers=(self.workers, 1))
        require_finite(
            "VectorizeOptions", simplify_m=(self.simplify_m, 0.0, math.inf),
            min_area_ha=(self.min_area_ha, 0.0, math.inf),
        )  # fmt: skip


@dataclass(frozen=True)
class VectorizeResult:
    """What :func:`vectorize_labels` wrote.

    Attributes:
        output: the vector file.
        format: its format name.
        polygons: number of features.
        area_ha: total area of the features, hectares.
        area_method: how areas were measured (planar in a CRS without a datum).
    """

    output: Path
    format: str
    polygons: int
    area_ha: float
    area_method: AreaMethod = field(default_factory=lambda: AreaMethod(planar=False))


@dataclass(frozen=True)
class _LabelRaster:
    scene: Scene
    labels: da.Array
    confidence: da.Array | None
    instances: da.Array | None
    schema: ClassSchema | None
    area_method: AreaMethod
    nodata: int | None  # the label value that is no class (None: every value is a class)


def _open_labels(path: str, opts: VectorizeOptions) -> _LabelRaster:
    scene = open_scene(path, chunk=opts.chunk, assume_crs=opts.assume_crs)
    method = area_method(scene.crs, path)  # a CRS without measurable areas: refused first
    if not np.issubdtype(scene.dtype, np.integer):
        raise InvalidRasterError(
            f"{path}: not a label raster ({scene.dtype} values, a label raster holds integer "
            "class ids); vectorize a class map, e.g. run `geoseg predict` first"
        )
    refuse_probability_raster(path, scene.tags)
    names = [n.lower() for n in scene.band_names]
    extra = {n: i for i, n in enumerate(names[1:], start=1)}
    unknown = set(extra) - {CONFIDENCE_BAND, INSTANCE_BAND}
    if unknown:
        raise InvalidRasterError(
            f"{path}: not a label raster ({bands_count(scene.count)} {scene.band_names}); a "
            "label raster has band 1 class ids and optional bands named 'confidence' / 'instance'"
        )
    data = scene.data.data

    def band(name: str) -> da.Array | None:
        return data[extra[name]] if name in extra else None

    own = INSTANCE_BAND in extra or any(k.startswith("GEOSEG_") for k in scene.tags)
    labels, nodata = polygonizable_ids(data[0], scene.valid, path, geoseg_map=own)
    return _LabelRaster(
        scene, labels, band(CONFIDENCE_BAND), band(INSTANCE_BAND), read_class_schema(path),
        method, nodata,
    )  # fmt: skip


def resolve_classes(
    classes: Sequence[str] | None,
    schema: ClassSchema | None,
    path: str,
    nodata: int | None = NODATA_LABEL,
) -> list[int] | None:
    """Class ids for ``--classes`` given as names (case-insensitive) or ids (any integer
    but ``nodata``; below 255 on a uint8 map)."""
    if classes is None:
        return None
    by_name = {} if schema is None else {c.name.lower(): c.id for c in schema.classes}
    ids = []
    for item in classes:
        text = str(item).strip()
        number = text.lstrip("-") if nodata is None else text
        if text.lower() in by_name:
            ids.append(by_name[text.lower()])
        elif number.isdigit() and (nodata is None or int(text) < nodata):
            ids.append(int(text))
        else:
            known = ", ".join(schema.names) if schema else "none (use class ids)"
            raise GeosegError(f"{path}: no class {text!r}; its classes are {known}")
    return ids


def _ground_pixel_m(scene: Scene) -> float:
    """Side of a pixel at the scene centre, in ground metres."""
    area = pixel_area_m2(scene.crs, scene.transform, [scene.height // 2], [scene.width // 2])
    return float(np.sqrt(area[0, 0]))


def _postprocess(
    polys: Polygons, scene: Scene, opts: VectorizeOptions, keep: list[int] | None
) -> Polygons:
    # Merged on the pixel grid, then simplified once: the coverage stays a coverage
    # (those simplifying shrinks under the minimum are merged on the grid too).
    min_m2 = (opts.min_area_ha or 0.0) * HECTARE_M2
    if min_m2:
        polys = merge_small_polygons(polys, _true_area(polys.geometry, scene), min_m2)[0]
    if opts.simplify_m:
        polys = simplify_coverage(
            polys, opts.simplify_m / _ground_pixel_m(scene), min_m2,
            lambda geoms: _true_area(geoms, scene),
        )  # fmt: skip
    return filter_classes(polys, keep)


def _true_area(geoms: np.ndarray, scene: Scene) -> np.ndarray:
    """``(N,)`` true areas (m²) of polygons in ``scene``'s pixel coordinates."""
    return polygon_area_m2(pixel_to_crs(geoms, scene.transform), scene.crs)


def _stream(
    raster: _LabelRaster,
    opts: VectorizeOptions,
    keep: list[int] | None,
    emit: Callable[[pa.RecordBatch], None],
    progress: Progress | None,
) -> None:
    """Polygonize, measure and name in the workers; batches to ``emit`` as chunks finish.

    Final polygons (those that meet no chunk seam) go out chunk by chunk, in chunk
    order; regions cut by seams go out dissolved as soon as a row of chunks
    completes them. Memory: the chunks in flight and the seam polygons of open
    regions, not the layer.
    """
    scene = raster.scene
    georef = Georef(scene.crs.to_wkt(), scene.transform)
    lazy = polygonize_blocks(
        raster.labels, scene.valid, instances=raster.instances, confidence=raster.confidence,
        connectivity=opts.connectivity, keep=keep, georef=georef, schema=raster.schema or True,
        nodata=raster.nodata,
    )  # fmt: skip
    starts = [np.cumsum((0, *c[:-1])).tolist() for c in raster.labels.chunks]
    collector = StreamingCollector(
        starts[0], starts[1], emit, opts.connectivity, georef, raster.schema
    )
    store_blocks(lazy, collector, opts.scheduler, opts.workers, progress)
    collector.finish()


def label_polygons(
    labels_path: str | os.PathLike[str],
    options: VectorizeOptions | None = None,
    progress: Progress | None = None,
) -> gpd.GeoDataFrame:
    """Polygons of a label raster with attributes, in the raster's CRS (nothing is written).

    Holds every polygon in memory; :func:`vectorize_labels` streams them to a file.

    Args:
        labels_path: label raster (band 1 integer class ids: uint8 with 255 = nodata, or
            any integer type, every value a class but the raster's nodata; optional
            bands described ``confidence`` and ``instance``).
        options: see :class:`VectorizeOptions` (output options are ignored).
        progress: ``progress(done, total)`` callback for the chunked polygonization.

    Returns:
        One row per connected region of a class (see
        :func:`geoseg.vector.attributes.polygon_table` for the columns), sorted by
        class, instance and position (the same rows for any chunk size).
    """
    opts = options or VectorizeOptions()
    path = os.fspath(labels_path)
    raster = _open_labels(path, opts)
    scene = raster.scene
    keep = resolve_classes(opts.classes, raster.schema, path, raster.nodata)
    if not (opts.min_area_ha or opts.simplify_m):
        batches: list[pa.RecordBatch] = []
        _stream(raster, opts, keep, batches.append, progress)
        return sort_table(_frame(batches, scene.crs))
    lazy = polygonize_blocks(
        raster.labels, scene.valid, instances=raster.instances, confidence=raster.confidence,
        connectivity=opts.connectivity, nodata=raster.nodata,
    )  # fmt: skip
    collector = ChunkCollector()
    store_blocks(lazy, collector, opts.scheduler, opts.workers, progress)
    polys = merge_chunks(collector.chunks, opts.connectivity)
    polys = _postprocess(polys, scene, opts, keep)
    return polygon_table(polys, scene.crs, scene.transform, raster.schema)


def _frame(batches: list[pa.RecordBatch], crs: Any) -> gpd.GeoDataFrame:
    """Record batches (WKB ``geometry`` last) as one GeoDataFrame."""
    table = pa.Table.from_batches(batches)
    frame = table.drop_columns([GEOMETRY]).to_pandas()
    geoms = shapely.from_wkb(table.column(GEOMETRY).to_numpy())
    return gpd.GeoDataFrame(frame, geometry=np.asarray(geoms), crs=crs)


def check_vectorize_output(
    output: str | os.PathLike[str], options: VectorizeOptions, inputs: Sequence[Path] = (),
    format_option: str | None = None,
) -> str:  # fmt: skip
    """Fail early (before any work) on an output that cannot be written; its format name
    (``format_option``: the caller's option setting ``options.format``, named in errors).

    Raises:
        GeosegError: unknown format, missing folder, or the output is an input.
        OutputExistsError: it exists (a Shapefile sidecar included), no ``overwrite``.
    """
    return check_vector_output(Path(output), options.format, options.overwrite, inputs,
                               format_option)  # fmt: skip


def _write_no_objects(
    frame: gpd.GeoDataFrame, path: str, out: Path, fmt: str, layer: str,
    opts: VectorizeOptions, method: AreaMethod,
) -> VectorizeResult:  # fmt: skip
    """The empty layer (the columns of one with objects) of an instance raster without any."""
    log.warning("%s: 0 instances (no object was found); %s is an empty layer", path, out)
    write_vectors(frame, out, fmt, layer, opts.overwrite)
    return VectorizeResult(out, fmt, 0, 0.0, method)


def vectorize_labels(
    labels_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: VectorizeOptions | None = None,
    progress: Progress | None = None,
) -> VectorizeResult:
    """Vectorize a label raster into a polygon layer written atomically at ``output``.

    Args:
        labels_path: label raster, e.g. the COG written by ``predict_scene``.
        output: ``.gpkg``, ``.shp``, ``.parquet``, ``.fgb`` or ``.geojson`` file.
        options: see :class:`VectorizeOptions`.
        progress: ``progress(done, total)`` callback.

    Raises:
        GeosegError: unknown format, output exists, not a label raster, no CRS,
            missing file, unknown class, or no polygon to write.
    """
    opts = options or VectorizeOptions()
    path, out = os.fspath(labels_path), Path(output)
    fmt = check_vectorize_output(out, opts, [Path(path)])
    with output_run(opts.overwrite, [Path(path)]) as run:
        run.lock(out)
        run.add(vector_files(out, fmt))
        return _vectorize(path, out, fmt, opts, progress)


def _vectorize(
    path: str, out: Path, fmt: str, opts: VectorizeOptions, progress: Progress | None
) -> VectorizeResult:
    """:func:`vectorize_labels` once its outputs are registered and locked."""
    layer = opts.layer or Path(path).stem
    what = " of the classes asked for" if opts.classes else ""
    empty = InvalidRasterError(
        f"{path}: no labelled pixel{what} to vectorize (every pixel is nodata); "
        "check the raster's nodata value (`gdalinfo`)"
    )
    raster = _open_labels(path, opts)
    # Post-processing needs every polygon at once; so does one row per object.
    if opts.min_area_ha or opts.simplify_m or raster.instances is not None:
        frame = label_polygons(path, opts, progress)
        if raster.instances is not None:
            frame = stuff_without_instance_id(with_scores(one_row_per_instance(frame), path))
        if len(frame) == 0 and raster.instances is None:
            raise empty
        if len(frame) == 0:  # a run that found no object is a result: an empty layer
            return _write_no_objects(frame, path, out, fmt, layer, opts, raster.area_method)
        if raster.schema is not None:
            tally = UnknownClasses(raster.schema)
            tally.add(frame["class_id"].to_numpy(), frame["area_m2"].to_numpy())
            tally.warn(path)
        write_vectors(frame, out, fmt, layer, opts.overwrite)
        area = float(frame["area_ha"].sum())
        return VectorizeResult(out, fmt, len(frame), area, raster.area_method)
    keep = resolve_classes(opts.classes, raster.schema, path, raster.nodata)
    unknown = UnknownClasses(raster.schema)
    # 8-connected regions may be MultiPolygons (parts touching at a corner).
    kind = "Polygon" if opts.connectivity == 4 else "MultiPolygon"
    area_ha = [0.0]
    with open_vector_writer(out, raster.scene.crs, kind, fmt, layer, opts.overwrite) as writer:

        def emit(batch: pa.RecordBatch) -> None:
            area_ha[0] += float(np.sum(batch.column("area_ha").to_numpy()))
            unknown.add(batch.column("class_id").to_numpy(), batch.column("area_m2").to_numpy())
            writer.write(batch)

        _stream(raster, opts, keep, emit, progress)
        if writer.features == 0:
            raise empty
    unknown.warn(path)
    return VectorizeResult(out, fmt, writer.features, area_ha[0], raster.area_method)
