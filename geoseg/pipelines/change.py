"""``change_report``: two or more label maps -> transition tables, change raster, HTML report.

Steps: align the maps onto the first map's grid (geoseg.change.align); compute
each pixel's change code by differencing the maps or, with ``rule="posterior"``,
from the first and last date's class probabilities (geoseg.change.posterior,
geoseg.change.probability_maps: confident change, confident no change, or
uncertain, which is counted apart); optionally keep only changes that persist over
the last ``consistency`` dates (geoseg.change.temporal) and drop change patches
under a minimum mapping unit (geoseg.change.mmu; see
geoseg.pipelines.change_codes); stream transition codes block by block into one sink that
writes ``change.tif``, sums the exact transition areas (geoseg.change.transitions)
and, with an AOI layer, the areas per feature (geoseg.change.zones); then write
the tables (CSV/JSON), the PNG chart and thumbnails, and ``index.html``
(geoseg.pipelines.change_outputs, geoseg.report); optionally a stratified sample
to label, or error-adjusted areas from a labelled one
(geoseg.pipelines.change_accuracy, geoseg.change.accuracy, Olofsson et al. 2014).
Every input and output path is checked before anything is written; each output
is written atomically.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import dask.array as da
import numpy as np

from geoseg.areas import AreaMethod, area_method
from geoseg.change.align import AlignedMaps, align_label_maps, no_common_data_error
from geoseg.change.probability_maps import align_probabilities, probability_paths
from geoseg.change.transitions import TransitionMatrix, TransitionSink
from geoseg.change.unknown import UnknownValues, find_unknown_values, warn_unknown_values
from geoseg.change.zones import ZoneMasker, prepare_aoi
from geoseg.errors import AllNodataError, GeosegError
from geoseg.io.cog import cog_grid, stored_chunks, tile_store
from geoseg.io.labels import LabelMeta, change_raster_tags, label_cog_from_chunks, label_cog_writer
from geoseg.io.outputs import OutputRun, output_run
from geoseg.io.parts import parts_folder
from geoseg.io.vectors_crs import read_input_layer
from geoseg.pipelines.change_accuracy import (
    keep_old_samples,
    read_reference,
    write_accuracy,
    write_samples,
)  # fmt: skip
from geoseg.pipelines.change_codes import (
    RULES,
    change_codes,
    change_schema,
    file_codes,
    map_difference_matrix,
)
from geoseg.pipelines.change_outputs import (
    report_warnings,
    write_change_polygons,
    write_images,
    write_index,
    write_tables,
    write_zone_table,
)
from geoseg.pipelines.time_order import maps_in_time_order
from geoseg.report.focus import FocusLike, focus_cells
from geoseg.tiling.execute import Progress, Sink, store_blocks
from geoseg.types import ClassSchema, require_at_least, require_finite

__all__ = [
    "DEFAULT_MIN_CHANGE_PROB",
    "OUTPUT_FILES",
    "REPORT_FILES",
    "ChangeOptions",
    "ChangeResult",
    "change_report",
    "change_schema",
]

log = logging.getLogger(__name__)

#: The posterior rule's ``t`` when none is given.
DEFAULT_MIN_CHANGE_PROB = 0.7

#: Files a change report writes into its folder.
OUTPUT_FILES = (
    "transitions.csv", "class_change.csv", "transitions.json", "change.tif", "change.gpkg",
    "transitions.png", "before.png", "after.png", "change.png", "index.html",
)  # fmt: skip
#: The files a change report may write that, with ``--overwrite``, are removed once it
#: has succeeded when it does not write them (not ``samples.gpkg``: the user labels it).
REPORT_FILES = (*OUTPUT_FILES, "transitions_by_aoi.csv", "accuracy.csv", "accuracy.json")


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
        aoi_crs: the AOI's CRS, when the file declares none or the wrong one
            (``"raster"``: the maps' CRS); see :mod:`geoseg.io.vectors_crs`.
        aoi_crs_option: how the user gives ``aoi_crs``, named in messages (the CLI's
            option, or a workflow's key).
        samples_se: write ``samples.gpkg``, a stratified random sample of change.tif's
            codes sized for this standard error of overall accuracy (Olofsson et al.
            2014, eq. 13; expected user's accuracy 0.9 for unchanged, 0.7 for change
            strata; at least 50 points per stratum, or all its pixels).
        reference: labelled sample points (``stratum`` and ``reference`` columns,
            change codes or names as in change.tif); adds ``accuracy.csv`` and
            ``accuracy.json`` with error-adjusted areas and 95 % CIs.
        rule: ``map`` (differencing the label maps) or ``posterior`` (the class
            probabilities of the first and last date, :mod:`geoseg.change.posterior`:
            confident change, confident no change, and uncertain area reported apart).
        min_change_prob: the posterior rule's ``t`` in [0.5, 1]: change where
            P(change) >= t, no change where P(change) <= 1 - t, uncertain between
            (None: :data:`DEFAULT_MIN_CHANGE_PROB`); posterior rule only.
        probabilities_of: the maps' probability files in date order (default: the
            files the maps' ``GEOSEG_PROBABILITIES`` tags name); posterior rule only.
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
    aoi_crs: str | None = None
    aoi_crs_option: str = "--aoi-crs"
    samples_se: float | None = None
    reference: str | None = None
    rule: str = "map"
    min_change_prob: float | None = None
    probabilities_of: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        require_at_least(
            "ChangeOptions", consistency=(self.consistency, 1), chunk=(self.chunk, 1),
            workers=(self.workers, 1), thumbnail_px=(self.thumbnail_px, 16),
        )  # fmt: skip
        require_finite(
            "ChangeOptions", mmu_ha=(self.mmu_ha, 0.0, math.inf),
            samples_se=(self.samples_se, 0.0, 1.0),
            min_change_prob=(self.min_change_prob, 0.5, 1.0),
        )  # fmt: skip
        if self.rule not in RULES:
            raise GeosegError(f"unknown change rule {self.rule!r}; use one of {', '.join(RULES)}")
        if self.probabilities_of is not None and self.rule != "posterior":
            raise GeosegError("--probabilities-of is read by --rule posterior only; add it")
        if self.min_change_prob is not None and self.rule != "posterior":
            # `geoseg change` refuses the flag; a workflow switched to the map rule may
            # keep its threshold for the next posterior run, so it is only told
            log.warning(
                "min_change_prob %g is read by the posterior rule only; the %s rule ignores it",
                self.min_change_prob, self.rule,
            )  # fmt: skip

    @property
    def threshold(self) -> float:
        """The posterior rule's ``t``: ``min_change_prob`` or its default."""
        return DEFAULT_MIN_CHANGE_PROB if self.min_change_prob is None else self.min_change_prob


@dataclass(frozen=True)
class ChangeResult:
    """What :func:`change_report` computed and wrote.

    Attributes:
        matrix: the transition areas.
        files: every file written.
        area_method: how areas were measured (planar in a CRS without a datum).
        unknown_values: maps holding values outside the class schema (counted as nodata).
        map_difference: with the posterior rule, the matrix map differencing gives
            with the same filters (for comparison); None with the map rule.
        dated: every map has an acquisition date (False: the order given was taken
            as time order).
        warnings: the report's plausibility flags (:mod:`geoseg.report.checks`), as text.
    """

    matrix: TransitionMatrix
    files: tuple[Path, ...] = field(default_factory=tuple)
    area_method: AreaMethod = field(default_factory=lambda: AreaMethod(planar=False))
    unknown_values: tuple[UnknownValues, ...] = ()
    map_difference: TransitionMatrix | None = None
    dated: bool = True
    warnings: tuple[str, ...] = ()


class _ChangeSink:
    """Writes ``(1, h, w)`` code blocks to change.tif and adds them to the transition sums."""

    def __init__(
        self, raster: Sink, totals: TransitionSink, k: int, zones: ZoneMasker | None
    ) -> None:
        self._raster, self._totals, self._k, self._zones = raster, totals, k, zones

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        codes = np.asarray(block[0], dtype=np.int64)
        self._totals.add_codes(key[-2], key[-1], codes)
        if self._zones is not None:
            self._zones.add_codes(key[-2], key[-1], codes)
        self._raster[key] = file_codes(codes, self._k)[None]


def _write_change_raster(
    codes: da.Array, aligned: AlignedMaps, schema: ClassSchema,
    sink: Callable[[Sink], _ChangeSink], path: Path, opts: ChangeOptions,
    progress: Progress | None,
) -> None:  # fmt: skip
    """change.tif from the lazy ``(1, H, W)`` codes, filling the sums of ``sink`` on the way.

    Each block's COG tiles and overviews are compressed as it arrives
    (:mod:`geoseg.io.cog`; kept in a hidden parts folder until the file is laid
    out): in the chunk's thread on the threads scheduler, on the client on a
    cluster (the sums need the codes there anyway). When no tile side divides the
    chunk, GDAL's COG driver writes the file at the end instead.
    """
    meta = LabelMeta(
        aligned.crs, aligned.transform, schema, ["change code (from_index * K + to_index)"],
        change_raster_tags(aligned.paths[0], aligned.paths[-1]),
        f"{aligned.paths[0]} / {aligned.paths[-1]}",
    )  # fmt: skip
    grid = cog_grid(codes.shape, codes.chunks, opts.chunk)
    if grid is None:
        h, w = aligned.height, aligned.width
        with label_cog_writer(path, meta, height=h, width=w, overwrite=opts.overwrite) as raster:
            store_blocks(codes, sink(raster), opts.scheduler, opts.workers, progress)
        return
    parts = tile_store(parts_folder(path), {}, False, grid)
    try:
        store_blocks(codes, sink(parts), opts.scheduler, opts.workers, progress)
        label_cog_from_chunks(path, meta, grid, stored_chunks(parts, grid), opts.overwrite)
    finally:
        parts.remove()


def change_report(
    maps: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: ChangeOptions | None = None,
    progress: Progress | None = None,
    focus: FocusLike | None = None,
    notes: Sequence[str] = (),
) -> ChangeResult:
    """Compare label maps (first date first) and write a change report into ``out_dir``.

    ``out_dir`` is created if missing (its parent must exist), after the inputs
    have been validated, so a refused input leaves nothing behind.

    Writes ``transitions.csv`` (one row per from/to pair, with the posterior rule an
    ``uncertain`` row, then a nodata row),
    ``class_change.csv`` (gross gain/loss and net change per class),
    ``transitions.json`` (both, and the grid), ``change.tif`` (COG of codes
    ``from_index * K + to_index``, ``K*K`` uncertain, 255 nodata), ``transitions.png``,
    ``before.png``/``after.png``/``change.png`` thumbnails and ``index.html``,
    headed by the ``focus`` figure (e.g. a workflow's deforestation) or, without
    one, the largest transitions; ``notes`` (e.g. the warnings of the predict steps
    that made the maps) are listed with the report's own warnings. With ``overwrite``,
    report files of an earlier run that this one does not write are removed once it
    has succeeded (:data:`REPORT_FILES`; never an input).

    Areas are ellipsoidal, or planar in a CRS without a datum (``area_method`` in
    ``transitions.json``); values of a map outside the class schema count as nodata,
    with a warning and an ``unknown_values`` entry in ``transitions.json``.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is False (nothing written).
        UnsupportedCRSError: areas cannot be measured in the maps' CRS (nothing written).
        InvalidRasterError / GeosegError: see :func:`geoseg.change.align_label_maps`.
        DateOrderError: every map is dated and they are not listed oldest first, or
            the first and last share a date.
        InputNotFoundError / InvalidRasterError: with the posterior rule, a map's
            probability file is missing, or not of its classes or grid.
    """
    opts = options or ChangeOptions()
    out = Path(out_dir)
    extra = (*(opts.probabilities_of or ()), *(p for p in (opts.aoi, opts.reference) if p))
    inputs = [Path(m) for m in (*maps, *extra)]
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
    with output_run(opts.overwrite, inputs) as run:
        paths = dict(zip(names, run.add_folder(out, names), strict=True))
        if opts.overwrite:
            run.retire([out / n for n in REPORT_FILES if n not in names])
            keep_old_samples(out, names, inputs)
        return _report(run, maps, out, paths, opts, progress, (focus, tuple(notes)))


def _report(
    run: OutputRun, maps: Sequence[str | os.PathLike[str]], out: Path, paths: dict[str, Path],
    opts: ChangeOptions, progress: Progress | None,
    context: tuple[FocusLike | None, tuple[str, ...]],
) -> ChangeResult:  # fmt: skip
    """:func:`change_report` once its outputs are registered and locked; ``context``:
    its focus and notes."""
    focus, notes = context
    aligned = align_label_maps(maps, opts.chunk)
    dated = maps_in_time_order(aligned.paths, aligned.dates)
    method = area_method(aligned.crs, aligned.paths[0])  # refused before anything is written
    posterior = opts.rule == "posterior"
    probs = None
    if posterior:
        found = probability_paths(aligned.paths, opts.probabilities_of)
        probs = align_probabilities(aligned, found, opts.chunk)
        # the report names the files it used, wherever they came from (given or tags)
        opts = replace(opts, probabilities_of=tuple(str(p.resolve()) for p in found))
        _warn_middle_dates(aligned, opts)
    codes_schema = change_schema(aligned.schema, uncertain=posterior)
    zones = _zones(aligned, opts)
    samples = read_reference(opts.reference, codes_schema) if opts.reference else None
    if focus is not None:
        focus_cells(focus, aligned.schema.names)  # a misspelled class fails before any output
    run.make_folder(out)  # only once every input is known to be usable
    k = len(aligned.schema)
    totals = TransitionSink(
        aligned.schema.ids, aligned.crs, aligned.transform, shape=(aligned.height, aligned.width),
        uncertain=posterior,
    )  # fmt: skip
    sink = functools.partial(_ChangeSink, totals=totals, k=k, zones=zones)
    codes = change_codes(
        aligned, opts.consistency, opts.mmu_ha, opts.scheduler, opts.workers, probs,
        opts.threshold,
    )  # fmt: skip
    try:
        _write_change_raster(
            codes, aligned, codes_schema, sink, paths["change.tif"], opts, progress
        )
    except AllNodataError:
        raise no_common_data_error(aligned) from None
    matrix = totals.matrix(aligned.schema.names)
    versus = (
        map_difference_matrix(aligned, opts.consistency, opts.mmu_ha, opts.scheduler, opts.workers)
        if posterior
        else None
    )
    unknown = tuple(find_unknown_values(aligned, opts.scheduler, opts.workers))
    warn_unknown_values(unknown, aligned.schema.ids)
    if zones is not None:
        cover = zones.coverage(aligned.crs, (aligned.height, aligned.width))
        zones.warn_empty(opts.aoi or "", opts.aoi_crs_option)
        zones.warn_partly_covered(opts.aoi or "", cover)
        write_zone_table(zones, cover, aligned, paths["transitions_by_aoi.csv"], opts)
    write_change_polygons(paths["change.tif"], paths["change.gpkg"], aligned.schema, opts)
    flags = tuple(w.text for w in report_warnings(matrix, aligned, focus, opts.consistency))
    for text in flags:  # on the terminal too, not only in the report
        log.warning("%s", text)
    write_tables(matrix, aligned, paths, opts, unknown, focus, versus, dated)
    write_images(matrix, aligned, codes_schema, paths, opts)
    if opts.samples_se:
        write_samples(matrix, aligned, codes_schema, paths, opts)
    if samples is not None:
        write_accuracy(matrix, codes_schema, samples, paths, opts)
    write_index(matrix, aligned, codes_schema, paths, opts, focus, samples, versus, notes)
    files = tuple(paths.values())
    return ChangeResult(matrix, files, method, unknown, versus, dated, flags)


def _warn_middle_dates(aligned: AlignedMaps, opts: ChangeOptions) -> None:
    """The posterior rule compares the first and last date: say so when others were given."""
    if len(aligned.paths) > 2 and opts.consistency == 1:
        log.warning(
            "posterior rule between the first and last date (%s, %s); the middle dates "
            "(%s) are used only by --consistency N (a change must persist over the last N "
            "dates)",
            aligned.paths[0], aligned.paths[-1], ", ".join(aligned.paths[1:-1]),
        )  # fmt: skip


def _zones(aligned: AlignedMaps, opts: ChangeOptions) -> ZoneMasker | None:
    if opts.aoi is None:
        return None
    layer = read_input_layer(opts.aoi, opts.aoi_crs, aligned.crs, opts.aoi_crs_option)
    names, geoms = prepare_aoi(layer, aligned.crs, opts.aoi_field, opts.aoi, aligned.paths[0],
                               aligned.bounds, opts.aoi_crs_option)  # fmt: skip
    totals = TransitionSink(
        aligned.schema.ids, aligned.crs, aligned.transform, len(names),
        (aligned.height, aligned.width), uncertain=opts.rule == "posterior",
    )  # fmt: skip
    return ZoneMasker(geoms, names, aligned.transform, totals)
