"""The trainable model families, read from the registry, and a tiny training run of each.

Benchmarks that measure "every family the same way" iterate over
:func:`family_runs`, so a family added to ``geoseg.models.registry.FAMILY_MODULES``
appears in them without an edit here. Each family trains its first ``--arch``
name with a small encoder (``resnet18`` where the family takes it, else the first
encoder its record lists) on a generated scene:

- semantic: the synthetic sample scene (6 bands, 10 m) and its land-cover truth;
- change: the two dates stacked (12 bands) and where their truth differs;
- instance, panoptic: the same scene, objects = the connected cropland fields of
  the truth (one thing class, ``field``; everything else ``background``).
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from scipy import ndimage

from geoseg.io.stack import stack_dates
from geoseg.models.family import Family
from geoseg.models.registry import families, training_tasks, window_multiple
from geoseg.synthetic import TRUTH_SCHEMA, write_sample_data
from geoseg.training import TrainResult, load_train_config, train_model
from geoseg.training.timing import StepTimes
from geoseg.types import ClassInfo, ClassSchema

__all__ = [
    "OBJECT_SCHEMA",
    "FamilyRun",
    "add_family_flags",
    "family_runs",
    "fitting_window",
    "sample_scene",
    "selected_runs",
    "task_data",
    "train_tiny",
]

#: Classes of the instance/panoptic runs: cropland fields are the objects.
OBJECT_SCHEMA = ClassSchema(
    (ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "field", (230, 200, 40), is_thing=True))
)
_CHANGE_SCHEMA = [
    {"id": 0, "name": "same", "colour": [9, 9, 9]},
    {"id": 1, "name": "changed", "colour": [200, 0, 0]},
]


@dataclass(frozen=True)
class FamilyRun:
    """One row of a family benchmark: a family, the task it trains and how."""

    family: Family
    task: str
    arch: str
    encoder: str | None

    @property
    def label(self) -> str:
        return f"{self.family.name} ({self.task}, {self.arch})"


def _encoder(family: Family) -> str | None:
    """``resnet18`` where the family's encoder list takes it (or defers to smp), else its first."""
    text = family.encoders
    if not text or "resnet18" in text or "smp" in text:
        return "resnet18" if text else None
    return text.split(",")[0].split()[0]


def family_runs(tasks: list[str] | None = None, names: list[str] | None = None) -> list[FamilyRun]:
    """Every trainable (family, task) of the registry, in registry order, optionally filtered."""
    runs = [
        FamilyRun(f, t, f.archs[0], _encoder(f))
        for f in families()
        if f.training
        for t in f.tasks
        if t in training_tasks() and (tasks is None or t in tasks)
    ]
    return [r for r in runs if names is None or r.family.name in names]


def add_family_flags(parser: argparse.ArgumentParser, tasks: tuple[str, ...]) -> None:
    """``--tasks`` and ``--families`` (comma lists; default: all of ``tasks``, all families)."""
    parser.add_argument("--tasks", default=",".join(tasks), help="comma list of tasks")
    parser.add_argument("--families", default=None, help="comma list of family names")


def selected_runs(args: argparse.Namespace) -> list[FamilyRun]:
    """The runs the ``--tasks``/``--families`` flags of :func:`add_family_flags` select."""
    names = args.families.split(",") if args.families else None
    return family_runs(args.tasks.split(","), names)


def _write_like(src: Path, path: Path, data: np.ndarray, nodata: int | None) -> Path:
    with rasterio.open(src) as ref:
        profile = ref.profile | {"count": 1, "dtype": data.dtype.name, "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[None])
    return path


def sample_scene(folder: Path, size: int = 384, seed: int = 0) -> dict[str, Path]:
    """The synthetic sample pair in ``folder`` (written on the first call): ``before``, ``after``,
    ``truth_before``, ``truth_after``."""
    return _written(Path(folder), size, seed)


@functools.cache
def _written(folder: Path, size: int, seed: int) -> dict[str, Path]:
    return write_sample_data(folder, height=size, width=size, seed=seed)


def task_data(task: str, folder: Path, size: int = 384, seed: int = 0) -> dict[str, Any]:
    """``images``, ``labels`` (lists of paths) and ``classes`` of a ``task`` run, in ``folder``.

    ``folder`` keeps one sample scene pair; calls for other tasks reuse it.
    """
    sample = sample_scene(folder, size, seed)
    with rasterio.open(sample["truth_before"]) as src:
        truth = src.read(1)
    if task == "semantic":
        return {"images": [sample["before"]], "labels": [sample["truth_before"]],
                "classes": TRUTH_SCHEMA.to_json()}  # fmt: skip
    if task == "change":
        stacked = folder / "stacked.tif"
        if not stacked.exists():
            stack_dates([sample["before"], sample["after"]], stacked)
        with rasterio.open(sample["truth_after"]) as src:
            after = src.read(1)
        mask = np.where((truth == 255) | (after == 255), 255, truth != after).astype(np.uint8)
        labels = _write_like(sample["truth_before"], folder / "change.tif", mask, 255)
        return {"images": [stacked], "labels": [labels], "classes": _CHANGE_SCHEMA}
    cropland = TRUTH_SCHEMA.names.index("cropland")
    ids, _ = ndimage.label(truth == TRUTH_SCHEMA.ids[cropland])
    labels = _write_like(sample["truth_before"], folder / "fields.tif", ids.astype(np.uint32), None)
    return {"images": [sample["before"]], "labels": [labels], "classes": OBJECT_SCHEMA.to_json()}


def fitting_window(arch: str, window: int) -> int:
    """``window`` rounded up to the architecture's window multiple."""
    multiple = window_multiple(arch)
    return int(math.ceil(window / multiple) * multiple)


def train_tiny(
    run: FamilyRun, data: dict[str, Any], output: Path, timing: StepTimes | None = None, **kw: Any
) -> TrainResult:
    """Train ``run`` on ``data`` (:func:`task_data`) into ``output``; ``kw`` go to the config."""
    settings: dict[str, Any] = {"window": 64, "epochs": 2, "steps_per_epoch": 4,
                                "batch_size": 8, "device": "cpu", "margin": 8} | kw  # fmt: skip
    settings["window"] = fitting_window(run.arch, settings["window"])
    if run.encoder is not None:
        settings.setdefault("encoder", run.encoder)
    cfg = load_train_config(
        None, task=run.task, arch=run.arch,
        images=[str(p) for p in data["images"]], labels=[str(p) for p in data["labels"]],
        classes=data["classes"], output=str(output), overwrite=True, **settings,
    )  # fmt: skip
    return train_model(cfg, timing=timing)
