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
    predict: {chunk: 1024}        # any PredictOptions field
    change: {mmu_ha: 0.5}         # any ChangeOptions field

With ``aoi``, the report adds ``transitions_by_aoi.csv`` (the transition table
of every AOI feature) and ``summary.json`` adds the focus area of each feature
under ``by_aoi``. A missing AOI file is refused on load, before any prediction.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geoseg.areas import ACRE_M2, HECTARE_M2
from geoseg.errors import GeosegError, InputNotFoundError
from geoseg.io.reports import write_json
from geoseg.pipelines.change import ChangeOptions, change_report
from geoseg.pipelines.predict import PredictOptions, predict_scene
from geoseg.tiling.execute import Progress

__all__ = ["Focus", "Workflow", "WorkflowResult", "load_workflow", "run_workflow"]


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
    predict: Mapping[str, Any] = field(default_factory=dict)
    change: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowResult:
    """The maps, the report files and the focus summary of a run."""

    maps: tuple[Path, ...]
    report: tuple[Path, ...]
    summary: dict[str, Any]


_KEYS = {
    "version", "name", "scenes", "model", "output", "focus", "aoi", "aoi_field", "predict",
    "change",
}  # fmt: skip


def _fail(path: Path, what: str) -> GeosegError:
    return GeosegError(f"{path}: {what}")


def _inside(path: Path, root: Path, value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise _fail(path, f"{key} must be a path (text), got {value!r}")
    p = Path(value)
    resolved = (root / p).resolve()
    if p.is_absolute() or not resolved.is_relative_to(root.resolve()):
        raise _fail(
            path, f"{key} {value!r} leaves the run folder {root}; use a relative path inside it"
        )
    return resolved


def _options(path: Path, raw: Any, cls: type, key: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(path, f"{key} must be a mapping of option: value")
    valid = {f.name for f in dataclasses.fields(cls)} - {"overwrite", "aoi", "reference", "preview"}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise _fail(path, f"unknown {key} option(s) {unknown}; valid: {sorted(valid)}")
    return dict(raw)


def _focus(path: Path, raw: Any) -> Focus | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or set(raw) - {"name", "from", "to"}
        or not {"from", "to"} <= set(raw)
    ):
        raise _fail(
            path, "focus needs 'from' and 'to' lists of class names (and an optional 'name')"
        )
    return Focus(
        str(raw.get("name", "focus")), tuple(map(str, raw["from"])), tuple(map(str, raw["to"]))
    )


def _aoi(path: Path, root: Path, raw: dict[str, Any]) -> tuple[Path | None, str | None]:
    """The AOI layer (inside the run folder, existing) and its name field, or Nones."""
    value, name = raw.get("aoi"), raw.get("aoi_field")
    if name is not None and (not isinstance(name, str) or not name):
        raise _fail(path, f"aoi_field must be the name of an attribute (text), got {name!r}")
    if value is None:
        if name is not None:
            raise _fail(path, "aoi_field is given without aoi; add the AOI polygon layer")
        return None, None
    aoi = _inside(path, root, value, "aoi")
    if not aoi.is_file():
        raise InputNotFoundError(f"{path}: aoi {value!r}: no such file {aoi}")
    return aoi, name


def load_workflow(path: str | os.PathLike[str], root: str | os.PathLike[str] = ".") -> Workflow:
    """Parse and validate a workflow file; errors name the file and the bad key."""
    p, base = Path(path), Path(root)
    if not p.is_file():
        raise InputNotFoundError(f"{p}: no such workflow file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise _fail(p, f"not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise _fail(p, "expected a mapping with scenes, model and output")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise _fail(p, f"unknown key(s) {unknown}; valid keys: {sorted(_KEYS)}")
    if raw.get("version", 1) != 1:
        raise _fail(p, f"version {raw['version']!r} is not supported (this geoseg reads 1)")
    scenes = raw.get("scenes")
    if not isinstance(scenes, list) or len(scenes) < 2:
        raise _fail(p, "scenes must list at least two scene files, first date first")
    model = raw.get("model")
    if model is None:
        raise _fail(p, "model is missing ('spectral' or a .safetensors file)")
    aoi, aoi_field = _aoi(p, base, raw)
    return Workflow(
        path=p,
        name=str(raw.get("name", p.stem)),
        scenes=tuple(_inside(p, base, s, "scenes") for s in scenes),
        model=model if model == "spectral" else str(_inside(p, base, model, "model")),
        output=_inside(p, base, raw.get("output"), "output"),
        focus=_focus(p, raw.get("focus")),
        aoi=aoi,
        aoi_field=aoi_field,
        predict=_options(p, raw.get("predict"), PredictOptions, "predict"),
        change=_options(p, raw.get("change"), ChangeOptions, "change"),
    )


def _focus_cells(wf: Workflow, names: Sequence[str]) -> list[tuple[int, int]]:
    """``(from, to)`` class indices of the focus transitions (never ``from == to``)."""
    if wf.focus is None:
        return []
    missing = sorted(set(wf.focus.from_classes + wf.focus.to_classes) - set(names))
    if missing:
        raise _fail(
            wf.path, f"focus names classes {missing} the model does not have: {list(names)}"
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
    """Focus area of each AOI feature, in feature order, from ``transitions_by_aoi.csv``.

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
                out.append({"aoi": row["aoi"], **_areas(m2)})
                m2 = 0.0
    return out


def _summary(
    wf: Workflow, names: Sequence[str], area_m2: Any, aoi_table: Path | None
) -> dict[str, Any]:
    """The focus area over the whole scene and, with an AOI table, per AOI feature."""
    if wf.focus is None:
        return {}
    cells = _focus_cells(wf, names)
    out = {
        "workflow": wf.name, "focus": wf.focus.name, "from": list(wf.focus.from_classes),
        "to": list(wf.focus.to_classes), **_areas(float(sum(area_m2[r, c] for r, c in cells))),
    }  # fmt: skip
    if aoi_table is not None:
        out["by_aoi"] = _by_aoi(aoi_table, names, cells)
    return out


def run_workflow(
    wf: Workflow, overwrite: bool = False, progress: Progress | None = None
) -> WorkflowResult:
    """Predict each scene, compare the maps, write the report and the focus summary."""
    wf.output.mkdir(parents=True, exist_ok=True)
    popts = PredictOptions(**{**dict(wf.predict), "overwrite": overwrite})
    maps = []
    for i, scene in enumerate(wf.scenes):
        out = wf.output / f"map_{i + 1}_{scene.stem}.tif"
        maps.append(predict_scene(scene, wf.model, out, popts, progress).output)
    aoi = {"aoi": str(wf.aoi), "aoi_field": wf.aoi_field} if wf.aoi else {}
    copts = ChangeOptions(**{**dict(wf.change), **aoi, "overwrite": overwrite})
    result = change_report(maps, wf.output / "report", copts, progress)
    table = wf.output / "report" / "transitions_by_aoi.csv" if wf.aoi else None
    summary = _summary(wf, list(result.matrix.names), result.matrix.area_m2, table)
    files = result.files
    if summary:
        files = (*files, write_json(wf.output / "summary.json", summary, overwrite))
    return WorkflowResult(tuple(maps), files, summary)
