"""``geoseg run workflow.yaml``: predict every date, compare the maps, report.

A workflow file (YAML) composes the public pipelines; its schema is
:class:`Workflow`. Paths are relative to the run folder (the current folder, or
``--root``), and may not leave it: a workflow file from elsewhere cannot read or
write outside the folder it is run in.

    version: 1
    name: deforestation
    scenes:                       # first date first
      - sample_data/scene_before.tif
      - sample_data/scene_after.tif
    model: sample_data/models/landcover_s2.safetensors   # or: spectral
    output: workflow_out/deforestation
    focus:                        # the transitions the summary adds up
      name: deforestation
      from: [forest]
      to: [cultivated land, grassland, shrubland, artificial surface]
    aoi: sample_data/districts.gpkg   # optional polygon layer: tables per feature
    aoi_field: name               # its attribute naming each feature (default: number)
    aoi_crs: EPSG:32633           # the AOI's CRS if its file declares none ("raster": the maps')
    predict: {chunk: 1024}        # any PredictOptions field
    change: {mmu_ha: 0.5}         # any ChangeOptions field; {rule: posterior} makes the
                                  # predict step write each map's class probabilities
    mask_clouds: clouds.safetensors   # optional cloud model: clouds become nodata
    normalize_dates: irmad        # optional: dates 2..n mapped onto date 1's radiometry

With ``change: {rule: posterior}``, predict writes each map's class probabilities
beside it (``map_1_<scene>_probs.tif``) and the change step uses the posterior rule
(:mod:`geoseg.change.posterior`); ``summary.json`` then gives the focus area by that
rule, the uncertain area and, under ``map_difference``, the focus area map
differencing gives with the same filters.

``normalize_dates: irmad`` maps each later scene onto the first one's radiometry
before predicting it (``predict --normalize-to``, :mod:`geoseg.change.normalize_to`).

With ``aoi``, the report adds ``transitions_by_aoi.csv`` (the transition table
of every AOI feature) and ``summary.json`` adds the focus area of each feature
under ``by_aoi``.

Everything is checked before anything is written: :func:`load_workflow`
(:mod:`geoseg.pipelines.workflow_file`) reads the file with a loader that refuses
aliases expanding past a small bound, checks each key and type against
:mod:`geoseg.pipelines.workflow_schema`, that every input exists and that the
focus classes are the model's; :func:`run_workflow` checks every destination
before it makes the output folder.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import RasterioIOError

from geoseg.areas import ACRE_M2, HECTARE_M2
from geoseg.errors import ConfigError, GeosegError, GsdMismatchError, OutputExistsError
from geoseg.io.lock import journal_path
from geoseg.io.outputs import output_run
from geoseg.io.reports import write_json
from geoseg.pipelines.change import OUTPUT_FILES, ChangeOptions, ChangeResult, change_report
from geoseg.pipelines.change_accuracy import SAMPLES, refuse_labelled_samples
from geoseg.pipelines.predict import PredictOptions, predict_scene
from geoseg.pipelines.time_order import scenes_in_time_order
from geoseg.pipelines.workflow_checks import check_scene_bands, check_scenes_overlap
from geoseg.pipelines.workflow_file import Focus, Workflow, load_workflow
from geoseg.tiling.execute import Progress

__all__ = [
    "Focus", "Workflow", "WorkflowResult", "check_destinations", "load_workflow", "run_workflow",
]  # fmt: skip


#: How a workflow gives its AOI's CRS, as messages name it.
WORKFLOW_AOI_CRS = "the workflow key aoi_crs:"
#: The names of the maps (and probability files) a run writes: ``map_<n>_<scene stem>``.
_MAP_NAME = re.compile(r"map_\d+_.+\.tif")


@dataclass(frozen=True)
class WorkflowResult:
    """The maps, the report files (the maps' probability files first, with the posterior
    rule), the focus summary of a run and, with ``normalize_dates``, one line per
    normalised date (its fit: invariant share, gain/offset per band)."""

    maps: tuple[Path, ...]
    report: tuple[Path, ...]
    summary: dict[str, Any]
    normalized: tuple[str, ...] = ()


def _focus_cells(wf: Workflow, names: Sequence[str]) -> list[tuple[int, int]]:
    """``(from, to)`` class indices of the focus transitions (never ``from == to``)."""
    if wf.focus is None:
        return []
    missing = sorted(set(wf.focus.from_classes + wf.focus.to_classes) - set(names))
    if missing:
        raise ConfigError(
            f"{wf.path}: focus names classes {missing} the model does not have: {list(names)}"
        )
    rows = [names.index(n) for n in wf.focus.from_classes]
    cols = [names.index(n) for n in wf.focus.to_classes]
    return [(r, c) for r in rows for c in cols if r != c]


def _areas(m2: float) -> dict[str, float]:
    return {
        "area_m2": m2, "area_ha": m2 / HECTARE_M2, "area_acres": m2 / ACRE_M2,
        "area_km2": m2 / 1e6,
    }  # fmt: skip


def _by_aoi(table: Path, names: Sequence[str], cells: Sequence[tuple[int, int]]) -> list[Any]:
    """Focus area of each AOI feature, in feature order, from ``transitions_by_aoi.csv``,
    with the feature's own area (``aoi_area_ha``) and ``aoi_covered_percent``.

    Each feature's block of rows ends with its ``nodata`` row, so features that
    share a name stay apart.
    """
    wanted = {(names[r], names[c]) for r, c in cells}
    out, m2 = [], 0.0
    with table.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if (row["from"], row["to"]) in wanted:
                m2 += float(row["area_m2"])
            if row["from"] == "nodata":
                own = {k: float(row[k]) for k in ("aoi_area_ha", "aoi_covered_percent")}
                out.append({"aoi": row["aoi"], **_areas(m2), **own})
                m2 = 0.0
    return out


def _summary(wf: Workflow, result: ChangeResult, aoi_table: Path | None) -> dict[str, Any]:
    """The focus area over the whole scene and, with an AOI table, per AOI feature;
    with the posterior rule also the uncertain area and map differencing's focus area."""
    if wf.focus is None:
        return {}
    m = result.matrix
    names = list(m.names)
    cells = _focus_cells(wf, names)
    out = {
        "workflow": wf.name, "focus": wf.focus.name, "from": list(wf.focus.from_classes),
        "to": list(wf.focus.to_classes), **_areas(float(sum(m.area_m2[r, c] for r, c in cells))),
        "rule": wf.change.get("rule", "map"), "normalize_dates": wf.normalize_dates,
    }  # fmt: skip
    if result.map_difference is not None:
        versus = result.map_difference.area_m2
        out["uncertain"] = _areas(m.uncertain_area_m2 or 0.0)
        out["map_difference"] = _areas(float(sum(versus[r, c] for r, c in cells)))
    if aoi_table is not None:
        out["by_aoi"] = _by_aoi(aoi_table, names, cells)
    return out


def _map_paths(wf: Workflow) -> list[Path]:
    return [wf.output / f"map_{i + 1}_{scene.stem}.tif" for i, scene in enumerate(wf.scenes)]


def _probability_paths(wf: Workflow) -> list[Path]:
    """The maps' probability files, written with ``change: {rule: posterior}``."""
    if wf.change.get("rule") != "posterior":
        return []
    return [m.with_name(f"{m.stem}_probs.tif") for m in _map_paths(wf)]


def _destinations(wf: Workflow) -> list[Path]:
    """Every file and folder a run of ``wf`` writes, the maps first."""
    maps = [*_map_paths(wf), *_probability_paths(wf)]
    names = (
        OUTPUT_FILES
        + (("transitions_by_aoi.csv",) if wf.aoi else ())
        + (("samples.gpkg",) if wf.change.get("samples_se") else ())
    )
    summary = [wf.output / "summary.json"] if wf.focus else []
    return [*maps, *(wf.output / "report" / n for n in names), *summary]


def check_destinations(wf: Workflow, overwrite: bool = False) -> None:
    """Refuse a run whose outputs exist (unless ``overwrite``) or cannot be written.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is False.
        GeosegError: the output or report folder is a file, or a folder it would be
            written in is not writable.
    """
    report = wf.output / "report"
    for folder in (wf.output, report):
        if folder.exists() and not folder.is_dir():
            raise GeosegError(f"{wf.path}: output {folder} is a file; give a folder")
    base = wf.output
    while not base.exists():
        base = base.parent
    for folder in {base, *(f for f in (wf.output, report) if f.is_dir())}:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise GeosegError(
                f"{wf.path}: output folder {folder} is not writable; choose another output"
            )
    taken = [p for p in _destinations(wf) if p.exists()]
    if taken and not overwrite:
        raise OutputExistsError(
            f"{wf.path}: output {taken[0]} exists; pass --overwrite to replace it"
        )
    if wf.change.get("samples_se"):  # labels are the user's work: not for --overwrite
        refuse_labelled_samples(report / SAMPLES, " to geoseg change")


def run_workflow(
    wf: Workflow, overwrite: bool = False, progress: Progress | None = None
) -> WorkflowResult:
    """Predict each scene, compare the maps, write the report and the focus summary.

    Destinations are checked (:func:`check_destinations`) before any work. The
    run's outputs are one transaction (:mod:`geoseg.io.outputs`): if a step fails,
    the maps and reports written before it are removed again, and so is the output
    folder if this run made it (unless it still holds pieces kept for --resume).
    """
    with _warnings_heard() as heard:  # e.g. a DATE tag that cannot be read
        check_scene_order(wf)
    check_scene_bands(wf)
    check_scenes_overlap(wf)
    order = [{"rule": "scenes", "message": m} for m in heard]
    try:
        check_destinations(wf, overwrite)
        again = False
    except OutputExistsError:  # perhaps a killed run's, which its journal removes
        if not journal_path(wf.output).exists():
            raise
        again = True
    with output_run(overwrite) as run:
        # taking over a killed run's lock puts back what it replaced (io.lock)
        run.add_folder(wf.output, ["summary.json"], parents=True)
        if again:
            check_destinations(wf, overwrite)
        if overwrite:  # an earlier run's maps and summary that this run does not write
            keep = set(_destinations(wf))
            run.retire(p for p in _earlier_outputs(wf.output) if p not in keep)
        run.make_folder(wf.output)
        return _run(wf, overwrite, progress, order)


def check_scene_order(wf: Workflow) -> None:
    """Refuse scenes that are dated (as ``geoseg predict`` reads their tags, and writes
    into the maps' ``DATE``) but not listed oldest first, or whose first and last dates
    are the same.

    Raises:
        DateOrderError: naming the workflow, both scenes and their dates.
    """
    try:
        scenes_in_time_order(wf.scenes)
    except GeosegError as exc:
        raise type(exc)(f"{wf.path}: scenes: {exc}") from None


def _earlier_outputs(folder: Path) -> list[Path]:
    """The maps and probability files an earlier run wrote (named :data:`_MAP_NAME` and
    tagged by geoseg), and its ``summary.json``."""
    found = [folder / "summary.json"]
    for path in sorted(folder.glob("map_*_*.tif")) if folder.is_dir() else ():
        with contextlib.suppress(RasterioIOError), rasterio.open(path) as src:
            if _MAP_NAME.fullmatch(path.name) and any(k.startswith("GEOSEG_") for k in src.tags()):
                found.append(path)
    return found


class _Heard(logging.Handler):
    """Keeps the warnings geoseg logs while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("geoseg.io.lock"):  # run bookkeeping, not the data
            self.lines.append(record.getMessage())


@contextlib.contextmanager
def _warnings_heard() -> Iterator[list[str]]:
    """The warnings geoseg logs inside the block (they are still shown as usual)."""
    heard, logger = _Heard(), logging.getLogger("geoseg")
    logger.addHandler(heard)
    try:
        yield heard.lines
    finally:
        logger.removeHandler(heard)


@contextlib.contextmanager
def _gsd_advice(wf: Workflow) -> Iterator[None]:
    """A pixel-size refusal inside a workflow names the workflow key, not the CLI flag
    (``geoseg run`` has no ``--ignore-gsd``)."""
    try:
        yield
    except GsdMismatchError as exc:
        text = str(exc).replace(
            "or pass --ignore-gsd", f"or set predict: {{ignore_gsd: true}} in {wf.path}"
        )
        raise GsdMismatchError(text) from None


def _run(
    wf: Workflow, overwrite: bool, progress: Progress | None, order: list[dict[str, str]]
) -> WorkflowResult:
    """The steps of :func:`run_workflow`; ``order``: the warnings of its scene-order check."""
    clouds = {"mask_clouds": str(wf.mask_clouds)} if wf.mask_clouds else {}
    popts = PredictOptions(**{**dict(wf.predict), **clouds, "overwrite": overwrite})
    maps, normalized, notes = [], [], []
    probs: list[Path | None] = [*_probability_paths(wf)] or [None] * len(wf.scenes)
    for i, (scene, out, prob) in enumerate(zip(wf.scenes, _map_paths(wf), probs, strict=True)):
        opts = popts if prob is None else dataclasses.replace(popts, probabilities=prob)
        if wf.normalize_dates and i:  # later dates in the first date's radiometry
            opts = dataclasses.replace(opts, normalize_to=str(wf.scenes[0]))
        with _warnings_heard() as heard, _gsd_advice(wf):
            done = predict_scene(scene, wf.model, out, opts, progress)
        notes += [{"rule": "predict", "scene": str(scene), "message": m} for m in heard]
        maps.append(done.output)
        normalized += [f"date {i + 1} ({scene}): {done.normalized}"] if done.normalized else []
    aoi = {"aoi": str(wf.aoi), "aoi_field": wf.aoi_field, "aoi_crs": wf.aoi_crs,
           "aoi_crs_option": WORKFLOW_AOI_CRS} if wf.aoi else {}  # fmt: skip
    copts = ChangeOptions(**{**dict(wf.change), **aoi, "overwrite": overwrite})
    said = [f"scenes: {n['message']}" for n in order]
    said += [f"predict {n['scene']}: {n['message']}" for n in notes]
    result = change_report(maps, wf.output / "report", copts, progress, wf.focus, said)
    table = wf.output / "report" / "transitions_by_aoi.csv" if wf.aoi else None
    summary = _summary(wf, result, table)
    files = result.files
    if summary:  # the report's implausibility warnings, as its transitions.json has them
        report = json.loads((wf.output / "report" / "transitions.json").read_text("utf-8"))
        summary["warnings"] = [*report["warnings"], *order, *notes]
        summary["normalization"] = report["normalization"]
        files = (*files, write_json(wf.output / "summary.json", summary, overwrite))
    return WorkflowResult(tuple(maps), (*_probability_paths(wf), *files), summary, (*normalized,))
