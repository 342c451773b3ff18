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

Everything is checked before anything is written: :func:`load_workflow` reads
the file with a loader that refuses aliases expanding past a small bound, checks
each key and type against :mod:`geoseg.pipelines.workflow_schema`, that every
input exists and that the focus classes are the model's; :func:`run_workflow`
checks every destination before it makes the output folder.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.areas import ACRE_M2, HECTARE_M2
from geoseg.change.radiometric import NORMALIZE_METHODS
from geoseg.errors import ConfigError, GeosegError, InputNotFoundError, OutputExistsError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.io.outputs import output_run
from geoseg.io.reports import write_json
from geoseg.io.yaml_files import read_yaml
from geoseg.models.registry import weights_free_family
from geoseg.pipelines.change import OUTPUT_FILES, ChangeOptions, ChangeResult, change_report
from geoseg.pipelines.predict import PredictOptions, predict_scene
from geoseg.pipelines.workflow_schema import (
    CHANGE_OPTIONS,
    FOCUS,
    PREDICT_OPTIONS,
    Check,
    check_mapping,
    text,
    texts,
)
from geoseg.tiling.execute import Progress

__all__ = [
    "Focus", "Workflow", "WorkflowResult", "check_destinations", "load_workflow", "run_workflow",
]  # fmt: skip


#: How a workflow gives its AOI's CRS, as messages name it.
WORKFLOW_AOI_CRS = "the workflow key aoi_crs:"


@dataclass(frozen=True)
class Focus:
    """Transitions summed up in ``summary.json`` (e.g. forest -> anything else)."""

    name: str
    from_classes: tuple[str, ...]
    to_classes: tuple[str, ...]


@dataclass(frozen=True)
class Workflow:
    """A parsed, validated workflow file (see the module docstring)."""

    path: Path
    name: str
    scenes: tuple[Path, ...]
    model: str
    output: Path
    focus: Focus | None = None
    aoi: Path | None = None
    aoi_field: str | None = None
    aoi_crs: str | None = None
    predict: Mapping[str, Any] = field(default_factory=dict)
    change: Mapping[str, Any] = field(default_factory=dict)
    mask_clouds: Path | None = None
    normalize_dates: str | None = None


@dataclass(frozen=True)
class WorkflowResult:
    """The maps, the report files (the maps' probability files first, with the posterior
    rule), the focus summary of a run and, with ``normalize_dates``, one line per
    normalised date (its fit: invariant share, gain/offset per band)."""

    maps: tuple[Path, ...]
    report: tuple[Path, ...]
    summary: dict[str, Any]
    normalized: tuple[str, ...] = ()


def _options(schema: Mapping[str, Check]) -> Check:
    def check(value: Any, where: str) -> dict[str, Any]:
        return {} if value is None else check_mapping(value, schema, where)

    return check


def _focus(value: Any, where: str) -> dict[str, Any] | None:
    return None if value is None else check_mapping(value, FOCUS, where, ("from", "to"))


def _version(value: Any, where: str) -> int:
    if value != 1 or isinstance(value, bool):
        raise ConfigError(f"{where} {value!r} is not supported (this geoseg reads version 1)")
    return 1


_SCHEMA: dict[str, Check] = {
    "version": _version, "name": text(), "scenes": texts(2, "a path", "scene paths"),
    "model": text(), "output": text(), "focus": _focus, "aoi": text(), "aoi_field": text(),
    "aoi_crs": text(), "predict": _options(PREDICT_OPTIONS), "change": _options(CHANGE_OPTIONS),
    "mask_clouds": text(), "normalize_dates": text(NORMALIZE_METHODS),
}  # fmt: skip


def _inside(root: Path, value: str, key: str) -> Path:
    """``value`` resolved against the run folder, refused if it leaves it."""
    p = Path(value)
    resolved = (root / p).resolve()
    if p.is_absolute() or not resolved.is_relative_to(root.resolve()):
        raise ConfigError(
            f"{key} {value!r} leaves the run folder {root}; use a relative path inside it"
        )
    return resolved


def _input(root: Path, value: str, key: str) -> Path:
    """An input file inside the run folder that exists."""
    path = _inside(root, value, key)
    if not path.is_file():
        raise InputNotFoundError(f"{key} {value!r}: no such file {path}")
    return path


def _model_classes(model: str) -> tuple[str, ...]:
    """Class names of a weights-free model or of a checkpoint (its metadata, no weights)."""
    family = weights_free_family(model)
    if family is not None and family.schema is not None:
        return tuple(family.schema.names)
    try:
        return tuple(read_checkpoint_meta(model).schema.names)
    except GeosegError as exc:
        raise type(exc)(f"model: {exc}") from None


def _cloud_model(root: Path, value: str) -> Path:
    """The ``mask_clouds`` checkpoint: inside the run folder, with cloud or shadow classes."""
    from geoseg.pipelines.clouds import cloud_classes

    path = _input(root, value, "mask_clouds")
    try:
        cloud_classes(read_checkpoint_meta(path).schema, str(path))
    except GeosegError as exc:
        raise type(exc)(f"mask_clouds: {exc}") from None
    return path


def _check_focus(focus: Focus, names: Sequence[str], model: str) -> None:
    """Every focus class is one of the model's, and the focus holds a transition."""
    for key, classes in (("from", focus.from_classes), ("to", focus.to_classes)):
        for i, name in enumerate(classes):
            if name not in names:
                raise ConfigError(
                    f"focus.{key}[{i}]: {name!r} is not a class of {Path(model).name}; "
                    f"its classes: {', '.join(names)}"
                )
    if set(focus.to_classes) <= set(focus.from_classes) and len(set(focus.from_classes)) == 1:
        raise ConfigError("focus: from and to name the same class; no transition to add up")


def _parse(p: Path, root: Path, raw: Any) -> Workflow:
    """A :class:`Workflow` from the document ``raw``; errors do not name the file yet."""
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping with scenes, model and output, got {raw!r:.60}")
    v = check_mapping(raw, _SCHEMA, "", required=("scenes", "model", "output"))
    for key in ("aoi_field", "aoi_crs"):
        if v.get(key) is not None and v.get("aoi") is None:
            raise ConfigError(f"{key} is given without aoi; add the AOI polygon layer")
    scenes = tuple(_input(root, s, f"scenes[{i}]") for i, s in enumerate(v["scenes"]))
    model = (
        v["model"] if weights_free_family(v["model"]) else str(_input(root, v["model"], "model"))
    )
    classes = _model_classes(model)  # also refuses a model file that is no checkpoint
    if v.get("normalize_dates") is not None and weights_free_family(model):
        raise ConfigError(
            f"normalize_dates: applies to checkpoint models, not {model!r}; leave it out"
        )
    focus = None
    if v.get("focus") is not None:
        f = v["focus"]
        focus = Focus(f.get("name", "focus"), f["from"], f["to"])
        _check_focus(focus, classes, model)
    return Workflow(
        path=p, name=v.get("name", p.stem), scenes=scenes, model=model,
        output=_inside(root, v["output"], "output"), focus=focus,
        aoi=_input(root, v["aoi"], "aoi") if "aoi" in v else None,
        aoi_field=v.get("aoi_field"), aoi_crs=v.get("aoi_crs"), predict=v.get("predict", {}),
        change=v.get("change", {}),
        mask_clouds=_cloud_model(root, v["mask_clouds"]) if "mask_clouds" in v else None,
        normalize_dates=v.get("normalize_dates"),
    )  # fmt: skip


def load_workflow(path: str | os.PathLike[str], root: str | os.PathLike[str] = ".") -> Workflow:
    """Parse and check a workflow file, before anything is written.

    Checks every key and type against the schema (:mod:`.workflow_schema`), that
    every input exists inside the run folder, and that the focus classes are
    classes of the model (read from the checkpoint's metadata, not its weights).
    :func:`run_workflow` checks the destinations.

    Raises:
        InputNotFoundError: the workflow file or an input it names does not exist.
        ConfigError: not UTF-8/YAML, aliases that expand too far, an unknown key, a
            wrong type or value, a path outside the run folder, an unknown focus class.
        CheckpointError: the model file is not a geoseg checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"{p}: no such workflow file")
    raw = read_yaml(p)  # its errors name the file
    try:
        return _parse(p, Path(root), raw)
    except GeosegError as exc:
        raise type(exc)(f"{p}: {exc}") from None


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


def run_workflow(
    wf: Workflow, overwrite: bool = False, progress: Progress | None = None
) -> WorkflowResult:
    """Predict each scene, compare the maps, write the report and the focus summary.

    Destinations are checked (:func:`check_destinations`) before any work. The
    run's outputs are one transaction (:mod:`geoseg.io.outputs`): if a step fails,
    the maps and reports written before it are removed again, and so is the output
    folder if this run made it (unless it still holds pieces kept for --resume).
    """
    check_destinations(wf, overwrite)
    with output_run(overwrite) as run:
        run.add_folder(wf.output, ["summary.json"], parents=True)
        run.make_folder(wf.output)
        return _run(wf, overwrite, progress)


def _run(wf: Workflow, overwrite: bool, progress: Progress | None) -> WorkflowResult:
    clouds = {"mask_clouds": str(wf.mask_clouds)} if wf.mask_clouds else {}
    popts = PredictOptions(**{**dict(wf.predict), **clouds, "overwrite": overwrite})
    maps, normalized = [], []
    probs: list[Path | None] = [*_probability_paths(wf)] or [None] * len(wf.scenes)
    for i, (scene, out, prob) in enumerate(zip(wf.scenes, _map_paths(wf), probs, strict=True)):
        opts = popts if prob is None else dataclasses.replace(popts, probabilities=prob)
        if wf.normalize_dates and i:  # later dates in the first date's radiometry
            opts = dataclasses.replace(opts, normalize_to=str(wf.scenes[0]))
        done = predict_scene(scene, wf.model, out, opts, progress)
        maps.append(done.output)
        normalized += [f"date {i + 1} ({scene}): {done.normalized}"] if done.normalized else []
    aoi = {"aoi": str(wf.aoi), "aoi_field": wf.aoi_field, "aoi_crs": wf.aoi_crs,
           "aoi_crs_option": WORKFLOW_AOI_CRS} if wf.aoi else {}  # fmt: skip
    copts = ChangeOptions(**{**dict(wf.change), **aoi, "overwrite": overwrite})
    result = change_report(maps, wf.output / "report", copts, progress, wf.focus)
    table = wf.output / "report" / "transitions_by_aoi.csv" if wf.aoi else None
    summary = _summary(wf, result, table)
    files = result.files
    if summary:  # the report's implausibility warnings, as its transitions.json has them
        report = json.loads((wf.output / "report" / "transitions.json").read_text("utf-8"))
        summary["warnings"] = report["warnings"]
        summary["normalization"] = report["normalization"]
        files = (*files, write_json(wf.output / "summary.json", summary, overwrite))
    return WorkflowResult(tuple(maps), (*_probability_paths(wf), *files), summary, (*normalized,))
