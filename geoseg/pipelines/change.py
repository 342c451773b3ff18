"""``change_report``: two or more label maps -> transition tables, change raster, HTML report.

Steps: align the maps onto the first map's grid (geoseg.change.align); optionally
keep only changes that persist over the last ``consistency`` dates
(geoseg.change.temporal) and drop change patches under a minimum mapping unit
(geoseg.change.mmu); stream transition codes block by block into one sink that
writes ``change.tif``, sums the exact transition areas (geoseg.change.transitions)
and, with an AOI layer, the areas per feature (geoseg.change.zones); then write
the tables (CSV/JSON), the PNG chart and thumbnails, and ``index.html``
(geoseg.report); optionally a stratified sample to label, or error-adjusted
areas from a labelled one (geoseg.change.accuracy, Olofsson et al. 2014).
Every input and output path is checked before anything is written; each output
is written atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from geoseg.areas import HECTARE_M2
from geoseg.change.accuracy import error_matrix, sample_design, stratified_estimate
from geoseg.change.align import AlignedMaps, align_label_maps
from geoseg.change.mmu import mmu_blocks
from geoseg.change.sampling import stratified_sample
from geoseg.change.temporal import persistent_after
from geoseg.change.transitions import (
    TransitionMatrix,
    TransitionSink,
    transition_codes,
)
from geoseg.change.zones import ZoneMasker, prepare_aoi
from geoseg.errors import GeosegError
from geoseg.io.atomic import atomic_output, check_output_path
from geoseg.io.labels import BlockSink, label_cog_writer
from geoseg.io.preview import write_label_preview
from geoseg.io.raster import open_scene
from geoseg.io.reports import write_json
from geoseg.io.samples import write_sample_points
from geoseg.io.vectors import read_vectors
from geoseg.report import (
    ReportFacts,
    class_change_rows,
    render_index,
    render_transition_chart,
    transition_rows,
    write_csv_rows,
)
from geoseg.tiling.execute import Progress, store_blocks
from geoseg.types import NODATA_LABEL, ClassInfo, ClassSchema

__all__ = ["OUTPUT_FILES", "ChangeOptions", "ChangeResult", "change_report", "change_schema"]

log = logging.getLogger(__name__)

#: Files a change report writes into its folder.
OUTPUT_FILES = (
    "transitions.csv", "class_change.csv", "transitions.json", "change.tif", "change.gpkg",
    "transitions.png", "before.png", "after.png", "change.png", "index.html",
)  # fmt: skip

#: Colour of unchanged (from == to) pixels in change.tif.
UNCHANGED_GREY = (170, 170, 170)


@dataclass(frozen=True)
class ChangeOptions:
    """Options of :func:`change_report` (the CLI flags of ``geoseg change``).

    Attributes:
        overwrite: replace existing outputs.
        consistency: a change counts only if the new class is seen on the last
            ``consistency`` dates (needs at least ``consistency + 1`` maps; 1 = off).
        chunk: dask chunk side in px.
        scheduler: ``threads``, ``sync``, ``local`` or ``tcp://host:port``.
        workers: threads or worker processes.
        thumbnail_px: longest side of the PNG thumbnails.
        mmu_ha: minimum mapping unit of change in ha: connected (8-neighbour) patches
            of one transition smaller than this become "no change"; seam-safe and
            chunked (geoseg.change.mmu), at the cost of computing the codes twice.
        aoi: polygon layer; adds ``transitions_by_aoi.csv`` with one table per feature
            (reprojected to the map CRS; invalid geometries made valid with a warning).
        aoi_field: AOI attribute naming each feature (default: its number).
        samples_se: write ``samples.gpkg``, a stratified random sample of change.tif's
            codes sized for this standard error of overall accuracy (Olofsson et al.
            2014, eq. 13; expected user's accuracy 0.9 for unchanged, 0.7 for change
            strata; at least 50 points per stratum, or all its pixels).
        reference: labelled sample points (``stratum`` and ``reference`` columns,
            change codes or names as in change.tif); adds ``accuracy.csv`` and
            ``accuracy.json`` with error-adjusted areas and 95 % CIs.
    """

    overwrite: bool = False
    consistency: int = 1
    chunk: int = 1024
    scheduler: str = "threads"
    workers: int | None = None
    thumbnail_px: int = 768
    mmu_ha: float | None = None
    aoi: str | None = None
    aoi_field: str | None = None
    samples_se: float | None = None
    reference: str | None = None


@dataclass(frozen=True)
class ChangeResult:
    """What :func:`change_report` computed and wrote."""

    matrix: TransitionMatrix
    files: tuple[Path, ...] = field(default_factory=tuple)


def change_schema(schema: ClassSchema) -> ClassSchema:
    """Classes of change.tif: code ``i * K + j`` = "from i to j"; unchanged codes grey.

    Raises:
        GeosegError: ``K * K`` codes do not fit a uint8 raster beside nodata 255 (K > 15).
    """
    k = len(schema)
    if k * k >= NODATA_LABEL:
        raise GeosegError(
            f"{k} classes give {k * k} transition codes, more than a uint8 change raster holds "
            "(254); merge classes to at most 15 before change detection"
        )
    infos = []
    for i, a in enumerate(schema.classes):
        for j, b in enumerate(schema.classes):
            colour = UNCHANGED_GREY if i == j else b.colour
            infos.append(ClassInfo(i * k + j, f"{a.name} -> {b.name}", colour))
    return ClassSchema(tuple(infos))


class _ChangeSink:
    """Writes ``(1, h, w)`` code blocks to change.tif and adds them to the transition sums."""

    def __init__(
        self, raster: BlockSink, totals: TransitionSink, k: int, zones: ZoneMasker | None
    ) -> None:
        self._raster, self._totals, self._k, self._zones = raster, totals, k, zones

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        codes = np.asarray(block[0], dtype=np.int64)
        self._totals.add_codes(key[-2], key[-1], codes)
        if self._zones is not None:
            self._zones.add_codes(key[-2], key[-1], codes)
        out = np.where(codes == self._k * self._k, NODATA_LABEL, codes).astype(np.uint8)
        self._raster[key] = out[None]


def _codes(aligned: AlignedMaps, consistency: int) -> da.Array:
    """``(1, H, W) int32`` lazy transition codes between the first and the last map."""
    ids = list(aligned.schema.ids)
    before = aligned.labels[0]
    stack = da.stack([lab.rechunk(before.chunks) for lab in aligned.labels]).rechunk({0: -1})

    def block(maps: np.ndarray) -> np.ndarray:
        after = persistent_after(maps, consistency)
        return transition_codes(maps[0], after, ids)[None]

    return da.map_blocks(block, stack, dtype=np.int32, chunks=((1,), *before.chunks))


def _filtered_codes(aligned: AlignedMaps, opts: ChangeOptions) -> da.Array:
    """Codes after the temporal filter and, with ``mmu_ha``, the minimum mapping unit."""
    codes = _codes(aligned, opts.consistency)
    if opts.mmu_ha is None:
        return codes
    return mmu_blocks(
        codes, len(aligned.schema), aligned.crs, aligned.transform, opts.mmu_ha * HECTARE_M2,
        scheduler=opts.scheduler, workers=opts.workers,
    )  # fmt: skip


def _check_outputs(
    out_dir: Path, names: Sequence[str], overwrite: bool, inputs: Sequence[Path]
) -> list[Path]:
    """Every output path, refused if one exists (before anything is written)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GeosegError(f"{out_dir}: is a file; give a folder for the change report")
    if not out_dir.parent.is_dir():
        raise GeosegError(f"{out_dir}: the folder {out_dir.parent} does not exist; create it first")
    paths = [out_dir / name for name in names]
    if out_dir.is_dir():
        for p in paths:
            check_output_path(p, overwrite, inputs)
    return paths


def change_report(
    maps: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: ChangeOptions | None = None,
    progress: Progress | None = None,
) -> ChangeResult:
    """Compare label maps (first date first) and write a change report into ``out_dir``.

    ``out_dir`` is created if missing (its parent must exist), after the inputs
    have been validated, so a refused input leaves nothing behind.

    Writes ``transitions.csv`` (one row per from/to pair plus a nodata row),
    ``class_change.csv`` (gross gain/loss and net change per class),
    ``transitions.json`` (both, and the grid), ``change.tif`` (COG of codes
    ``from_index * K + to_index``, 255 nodata), ``transitions.png`` (bar chart),
    ``before.png``/``after.png``/``change.png`` thumbnails and ``index.html``.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is False (nothing written).
        InvalidRasterError / GeosegError: see :func:`geoseg.change.align_label_maps`.
    """
    opts = options or ChangeOptions()
    out = Path(out_dir)
    inputs = [Path(m) for m in maps]
    if opts.consistency < 1 or (opts.consistency > 1 and len(maps) < opts.consistency + 1):
        raise GeosegError(
            f"--consistency {opts.consistency} needs at least {opts.consistency + 1} maps "
            f"(got {len(maps)}); give more dates or lower it"
        )
    names = (
        OUTPUT_FILES
        + (("transitions_by_aoi.csv",) if opts.aoi else ())
        + (("samples.gpkg",) if opts.samples_se else ())
        + (("accuracy.csv", "accuracy.json") if opts.reference else ())
    )
    paths = dict(zip(names, _check_outputs(out, names, opts.overwrite, inputs), strict=True))
    aligned = align_label_maps(maps, opts.chunk)
    codes_schema = change_schema(aligned.schema)
    zones = _zones(aligned, opts)
    samples = _read_reference(opts.reference, codes_schema) if opts.reference else None
    out.mkdir(exist_ok=True)  # only once every input is known to be usable
    k = len(aligned.schema)
    totals = TransitionSink(
        aligned.schema.ids, aligned.crs, aligned.transform, shape=(aligned.height, aligned.width)
    )
    with label_cog_writer(
        paths["change.tif"], height=aligned.height, width=aligned.width, count=1,
        crs=aligned.crs, transform=aligned.transform, schema=codes_schema,
        descriptions=["change code (from_index * K + to_index)"],
        tags={"GEOSEG_CHANGE_FROM": aligned.paths[0], "GEOSEG_CHANGE_TO": aligned.paths[-1]},
        overwrite=opts.overwrite, source=f"{aligned.paths[0]} / {aligned.paths[-1]}",
    ) as raster:  # fmt: skip
        sink = _ChangeSink(raster, totals, k, zones)
        store_blocks(_filtered_codes(aligned, opts), sink, opts.scheduler, opts.workers,
                     progress)  # fmt: skip
    matrix = totals.matrix(aligned.schema.names)
    _write_change_polygons(paths["change.tif"], paths["change.gpkg"], aligned.schema, opts)
    _write_tables(matrix, aligned, paths, opts)
    if zones is not None:
        _write_zone_table(zones, aligned, paths["transitions_by_aoi.csv"], opts)
    _write_images(matrix, aligned, codes_schema, paths, opts)
    if opts.samples_se:
        _write_samples(matrix, aligned, codes_schema, paths, opts)
    if samples is not None:
        _write_accuracy(matrix, codes_schema, samples, paths, opts)
    _write_index(matrix, aligned, paths, opts)
    return ChangeResult(matrix, tuple(paths.values()))


def _write_change_polygons(
    raster: Path, output: Path, schema: ClassSchema, opts: ChangeOptions
) -> None:
    """``change.gpkg``: one polygon per changed patch, with from/to class names and areas."""
    from geoseg.io.vectors import write_vectors
    from geoseg.pipelines.vectorize import VectorizeOptions, label_polygons

    k = len(schema)
    changed = [str(i * k + j) for i in range(k) for j in range(k) if i != j]
    vopts = VectorizeOptions(
        classes=changed, chunk=max(opts.chunk, 256), scheduler=opts.scheduler, workers=opts.workers
    )
    frame = label_polygons(raster, vopts)
    codes = frame["class_id"].to_numpy(dtype=int)
    frame.insert(1, "from_class", [schema.classes[c // k].name for c in codes])
    frame.insert(2, "to_class", [schema.classes[c % k].name for c in codes])
    write_vectors(frame, output, "gpkg", "change", opts.overwrite)


def _zones(aligned: AlignedMaps, opts: ChangeOptions) -> ZoneMasker | None:
    if opts.aoi is None:
        return None
    names, geoms = prepare_aoi(read_vectors(opts.aoi), aligned.crs, opts.aoi_field, opts.aoi)
    totals = TransitionSink(
        aligned.schema.ids,
        aligned.crs,
        aligned.transform,
        len(names),
        (aligned.height, aligned.width),
    )
    return ZoneMasker(geoms, names, aligned.transform, totals)


def _write_zone_table(
    zones: ZoneMasker, aligned: AlignedMaps, path: Path, opts: ChangeOptions
) -> None:
    rows = []
    for zone, name in enumerate(zones.names):
        m = zones.totals.matrix(aligned.schema.names, zone)
        rows += [{"aoi": name, **r} for r in transition_rows(m)]
    write_csv_rows(path, rows, opts.overwrite)


def _write_tables(
    m: TransitionMatrix, aligned: AlignedMaps, paths: dict[str, Path], opts: ChangeOptions
) -> None:
    transitions = transition_rows(m)
    classes = class_change_rows(m)
    write_csv_rows(paths["transitions.csv"], transitions, opts.overwrite)
    write_csv_rows(paths["class_change.csv"], classes, opts.overwrite)
    doc = {
        "maps": list(aligned.paths), "dates": list(aligned.dates),
        "crs": aligned.crs.to_string(), "transform": list(aligned.transform)[:6],
        "shape": [aligned.height, aligned.width],
        "area_method": "ellipsoidal (WGS84) area of every pixel, geoseg.areas.pixel_area_m2",
        "consistency": opts.consistency, "classes": list(m.names),
        "transitions": transitions[:-1], "nodata": transitions[-1], "class_change": classes,
        "total_area_m2": m.total_area_m2,
    }  # fmt: skip
    write_json(paths["transitions.json"], doc, opts.overwrite)


def _write_images(
    m: TransitionMatrix,
    aligned: AlignedMaps,
    codes: ClassSchema,
    paths: dict[str, Path],
    opts: ChangeOptions,
) -> None:
    k = len(m.names)
    colours = {c.id: c.colour for c in codes.classes}
    bars = sorted(
        ((float(m.area_m2[i, j]) / HECTARE_M2, f"{m.names[i]} -> {m.names[j]}", i * k + j)
         for i in range(k) for j in range(k) if i != j and m.pixels[i, j] > 0),
        reverse=True,
    )[:20]  # fmt: skip
    image = render_transition_chart(
        [b[1] for b in bars], [b[0] for b in bars], [colours[b[2]] for b in bars]
    )
    with atomic_output(paths["transitions.png"], opts.overwrite) as tmp:
        image.save(tmp, format="PNG")
    # write_label_preview overwrites; the outputs were checked before anything was written
    write_label_preview(aligned.paths[0], paths["before.png"], opts.thumbnail_px)
    write_label_preview(aligned.paths[-1], paths["after.png"], opts.thumbnail_px)
    write_label_preview(paths["change.tif"], paths["change.png"], opts.thumbnail_px)


def _write_samples(
    m: TransitionMatrix,
    aligned: AlignedMaps,
    codes: ClassSchema,
    paths: dict[str, Path],
    opts: ChangeOptions,
) -> None:
    k = len(m.names)
    pixels = m.pixels.ravel()
    present = np.flatnonzero(pixels > 0)
    expected = np.where(present // k == present % k, 0.9, 0.7)
    sizes = sample_design(pixels[present], expected, opts.samples_se or 0.01)
    sizes = np.minimum(sizes, pixels[present])
    strata = open_scene(paths["change.tif"], chunk=opts.chunk).data.data[0]
    points = stratified_sample(strata, aligned.transform, dict(zip(present, sizes, strict=True)))
    names = {c.id: c.name for c in codes.classes}
    write_sample_points(points, paths["samples.gpkg"], aligned.crs, names, opts.overwrite)


def _reference_codes(values: Any, codes: ClassSchema, column: str, source: str) -> np.ndarray:
    by_name = {c.name: c.id for c in codes.classes}
    out = []
    for v in values:
        text = str(v).strip()
        code = int(text) if text.isdigit() else by_name.get(text)
        if code is None or code not in codes.ids:
            raise GeosegError(
                f"{source}: {column} value {text!r} is not a change code (0-{len(codes) - 1}) "
                "or a name like 'forest -> urban'; label every sample point"
            )
        out.append(code)
    return np.asarray(out, dtype=np.int64)


def _read_reference(source: str, codes: ClassSchema) -> np.ndarray:
    """``(K*K, K*K)`` sample counts (rows map code, cols reference code) from a labelled layer."""
    frame = read_vectors(source)
    for column in ("stratum", "reference"):
        if column not in frame.columns:
            raise GeosegError(f"{source}: no {column!r} column; use the samples.gpkg layout")
    return error_matrix(
        _reference_codes(frame["stratum"], codes, "stratum", source),
        _reference_codes(frame["reference"], codes, "reference", source),
        len(codes),
    )


def _write_accuracy(
    m: TransitionMatrix,
    codes: ClassSchema,
    n: np.ndarray,
    paths: dict[str, Path],
    opts: ChangeOptions,
) -> None:
    mapped_ha = m.area_m2.ravel() / HECTARE_M2
    short = [c.name for c, n_i, a in zip(codes.classes, n.sum(axis=1), mapped_ha, strict=True)
             if n_i < 2 and a > 0]  # fmt: skip
    if short:
        raise GeosegError(
            f"{opts.reference}: strata {', '.join(short)} are mapped but have fewer than 2 "
            "reference samples; sample every stratum (--samples-se) and label the points"
        )
    est = stratified_estimate(n, mapped_ha)
    rows = [
        {"stratum": c.name, "code": c.id, "samples": int(n[i].sum()),
         "mapped_area_ha": float(est.mapped_area[i]), "adjusted_area_ha": float(est.area[i]),
         "area_se_ha": float(est.area_se[i]), "ci95_ha": float(est.area_ci95[i]),
         "users_accuracy": float(est.users_accuracy[i]), "users_se": float(est.users_se[i]),
         "producers_accuracy": float(est.producers_accuracy[i]),
         "producers_se": float(est.producers_se[i])}
        for i, c in enumerate(codes.classes)
    ]  # fmt: skip
    write_csv_rows(paths["accuracy.csv"], rows, opts.overwrite)
    doc = {"method": "Olofsson et al. (2014) stratified estimator, strata = change codes",
           "overall_accuracy": est.overall_accuracy, "overall_se": est.overall_se,
           "error_matrix": n, "strata": rows}  # fmt: skip
    write_json(paths["accuracy.json"], doc, opts.overwrite)


def _units(aligned: AlignedMaps) -> str:
    if aligned.crs.is_geographic:
        return "degree"
    return str(aligned.crs.linear_units or "CRS units")


def _write_index(
    m: TransitionMatrix, aligned: AlignedMaps, paths: dict[str, Path], opts: ChangeOptions
) -> None:
    rows = [
        (r["from"], r["to"], r["area_ha"], r["area_acres"], r["area_km2"], r["pixels"])
        for r in transition_rows(m, nodata=False)
        if r["pixels"] > 0
    ]
    class_rows = [
        (r["class"], r["gain_ha"], r["loss_ha"], r["net_ha"]) for r in class_change_rows(m)
    ]
    facts = ReportFacts(
        maps=aligned.paths, dates=aligned.dates, crs=aligned.crs.to_string(),
        pixel_size=aligned.pixel_size, units=_units(aligned), shape=(aligned.height, aligned.width),
        resampled=[p for p, r in zip(aligned.paths, aligned.resampled, strict=True) if r],
        consistency=opts.consistency, class_names=m.names, table=rows,
        class_rows=[(c, float(g), float(lo), float(n)) for c, g, lo, n in class_rows],
        nodata=(m.nodata_area_m2 / HECTARE_M2, m.nodata_pixels),
        images=[("before.png", "first date"), ("after.png", "last date"),
                ("change.png", "change (grey = unchanged)"),
                ("transitions.png", "changed area by transition")],
        files=["transitions.csv", "class_change.csv", "transitions.json", "change.tif",
               *(["transitions_by_aoi.csv"] if opts.aoi else [])],
    )  # fmt: skip
    with atomic_output(paths["index.html"], opts.overwrite) as tmp:
        tmp.write_text(render_index(facts), encoding="utf-8")
