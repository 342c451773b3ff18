"""``geoseg plan``: fingerprint the data and device, apply the rules, write a commented plan.

The plan is a training config (:func:`geoseg.training.config.load_train_config` reads
it, as ``geoseg train --plan`` / ``--config``), with a comment above every key that
says why its value was chosen; edit any value and pass the file back.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rasterio.errors import RasterioIOError

from geoseg import __version__
from geoseg.errors import ConfigError, GeosegError
from geoseg.io.atomic import atomic_output
from geoseg.io.labels import read_class_schema
from geoseg.models.runtime import resolve_device
from geoseg.training.config import load_class_schema
from geoseg.training.fingerprint import DataFingerprint, data_fingerprint, device_fingerprint
from geoseg.training.plan import (
    Choice,
    choose_batch,
    choose_class_weights,
    choose_normalization,
    choose_schedule,
    choose_window,
    schedule_warning,
)
from geoseg.training.plan_measure import activation_bytes_per_px, build_for_plan, step_seconds
from geoseg.types import ClassInfo, ClassSchema

__all__ = [
    "PlanRequest", "key_lines", "make_plan", "parse_duration", "plan_text", "write_plan",
]  # fmt: skip

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600}
#: Tasks whose labels are objects (id rasters or polygons).
_OBJECTS = ("instance", "panoptic")


def parse_duration(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"1.5h"`` -> seconds.

    Raises:
        ConfigError: no number with a unit (s, m, h), or not > 0.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)\s*", str(text))
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(
            f"--time-budget {text!r}: give a positive number with a unit, e.g. 90s, 30m or 2h"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class PlanRequest:
    """What ``geoseg plan`` (or ``train --auto``) was asked: data, family, budget.

    Attributes:
        images, labels: training pairs.
        output: the checkpoint the plan trains (written as the plan's ``output``).
        classes: a class file, or None: one class per label value found.
        task, arch, encoder, bands, class_field, labels_crs: as for ``geoseg train``.
        budget_s: wall-clock budget for training, seconds.
        device: ``auto``, ``cpu`` or ``cuda``.
        validated: the run has validation data (``train --auto --val-image``).
    """

    images: tuple[str, ...]
    labels: tuple[str, ...]
    output: str
    classes: str | None = None
    task: str = "semantic"
    arch: str = "unet"
    encoder: str = "resnet18"
    bands: tuple[str, ...] | None = None
    class_field: str | None = None
    labels_crs: str | None = None
    budget_s: float = 1800.0
    device: str = "auto"
    validated: bool = False


def _given_schema(req: PlanRequest) -> ClassSchema | None:
    """The class file's schema; for instance tasks without one, background + one object."""
    if req.classes is not None:
        return load_class_schema(req.classes)
    if req.task in _OBJECTS:
        return ClassSchema((ClassInfo(0, "background", (0, 0, 0)),
                            ClassInfo(1, "object", (230, 25, 75), is_thing=True)))  # fmt: skip
    return None


def _found_schema(fp: DataFingerprint, labels: Sequence[str] = ()) -> ClassSchema:
    """One class per label value found: named and coloured as the first label raster's
    ``GEOSEG_CLASSES`` tag says where it has one (training reads tagged labels by class
    name), else ``class_<value>`` (rename them in the plan)."""
    palette = ((0, 120, 0), (0, 0, 200), (200, 0, 0), (200, 200, 0), (120, 0, 120), (0, 160, 160))
    tagged = _tagged_classes(labels[0]) if labels else {}
    return ClassSchema(tuple(
        tagged.get(c) or ClassInfo(c, f"class_{c}", palette[k % len(palette)])
        for k, c in enumerate(fp.class_px)
    ))  # fmt: skip


def _tagged_classes(path: str) -> dict[int, ClassInfo]:
    """The classes of a label raster's ``GEOSEG_CLASSES`` tag by id; none for polygons,
    untagged or unreadable files."""
    try:
        schema = read_class_schema(path)
    except (GeosegError, RasterioIOError, ValueError):  # a polygon layer, a bad tag
        return {}
    return {} if schema is None else {c.id: c for c in schema.classes}


def make_plan(req: PlanRequest) -> tuple[list[tuple[str, Choice]], list[str]]:
    """The plan's ``(key, Choice)`` entries in file order and its header lines."""
    given = _given_schema(req)
    fp = data_fingerprint(req.images, req.labels, req.bands, given, req.task, req.class_field,
                          req.labels_crs)  # fmt: skip
    schema = given if given is not None else _found_schema(fp, req.labels)
    device = resolve_device(req.device)
    dev = device_fingerprint(device.type)
    window, margin, options = choose_window(fp, dev, req.arch, {})
    bands = len(fp.bands)
    model = build_for_plan(req.task, req.arch, req.encoder, bands, schema, options.value, 64)
    batch = choose_batch(window.value, dev, activation_bytes_per_px(model, bands))
    step_s = step_seconds(model, bands, window.value, batch.value, device.type)
    epochs, steps = choose_schedule(step_s, req.budget_s, req.validated)
    short = schedule_warning(step_s, epochs.value, steps.value)
    if short:
        log.warning("plan: %s", short)
    weights = (choose_class_weights(fp, schema) if req.task in ("semantic", "change")
               else Choice(None, f"--task {req.task}: no class weighting"))  # fmt: skip
    entries = [
        *_data_entries(req, schema),
        ("arch", Choice(req.arch, "as asked (--arch)")),
        ("encoder", Choice(req.encoder, "as asked (--encoder)")),
        ("options", options), ("window", window), ("margin", margin), ("batch_size", batch),
        ("normalization", choose_normalization(fp)), ("class_weights", weights),
        ("epochs", epochs), ("steps_per_epoch", steps),
        ("device", Choice(device.type, "the device the steps were timed on")),
        ("provenance", Choice({"plan": _summary(fp, dev, step_s)},
                              "the fingerprint, stored in the checkpoint")),
    ]  # fmt: skip
    return [(k, c) for k, c in entries if c.value is not None], _header(fp, dev)


def _data_entries(req: PlanRequest, schema: ClassSchema) -> list[tuple[str, Choice]]:
    """Task, data and output keys (absolute paths: the plan may move)."""
    classes: Any = (str(Path(req.classes).resolve()) if req.classes
                    else schema.to_json())  # fmt: skip
    found = ("the class file given" if req.classes
             else "no --classes: background and one object class" if req.task in _OBJECTS
             else "no --classes: one class per label value found (rename them)")  # fmt: skip
    out: list[tuple[str, Choice]] = [
        ("task", Choice(req.task, "as asked (--task)")),
        ("images", Choice([str(Path(p).resolve()) for p in req.images], "the training images")),
        ("labels", Choice([str(Path(p).resolve()) for p in req.labels], "their labels")),
        ("classes", Choice(classes, found)),
        ("output", Choice(str(Path(req.output).resolve()), "the checkpoint to write")),
    ]
    for key in ("bands", "class_field", "labels_crs"):
        value = getattr(req, key)
        out.append((key, Choice(list(value) if key == "bands" and value else value, "as asked")))
    return out


def _summary(fp: DataFingerprint, dev: Any, step_s: float) -> dict[str, Any]:
    """The fingerprint in JSON types (the checkpoint's provenance)."""
    return {
        "gsd_m": round(fp.gsd_m, 4), "dtype": fp.dtype, "scale": fp.scale,
        "band_tail_ratio": {b.name: round(b.tail_ratio, 2) for b in fp.bands},
        "class_share": {str(c): round(s, 5) for c, s in fp.class_share.items()},
        "large_object_px": {str(c): round(o.large_diameter_px**2) for c, o in fp.objects.items()},
        "scenes_px": [list(s) for s in fp.scene_shapes], "nodata_share": round(fp.nodata_share, 4),
        "sampled_px": fp.sampled_px, "cpu_cores": dev.cpu_cores, "ram_gb": round(dev.ram_gb, 1),
        "gpu_memory_gb": None if dev.gpu_memory_gb is None else round(dev.gpu_memory_gb, 1),
        "step_s": round(step_s, 4),
    }  # fmt: skip


def _header(fp: DataFingerprint, dev: Any) -> list[str]:
    gpu = f"GPU {dev.gpu_name} {dev.gpu_memory_gb:.0f} GB" if dev.gpu_memory_gb else "no GPU"
    shares = ", ".join(f"{c}: {s:.1%}" for c, s in fp.class_share.items())
    return [
        f"geoseg training plan, written by `geoseg plan` (geoseg {__version__}, "
        f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}).",
        f"Data: {_scenes(fp.scene_shapes)}, GSD {fp.gsd_m:.3g} m, "
        f"{len(fp.bands)} band(s) {fp.dtype}, nodata {fp.nodata_share:.1%}, "
        f"{fp.sampled_px:,} px sampled.",
        f"Classes (share of labelled px): {shares}.",
        f"Device: {dev.cpu_cores} CPU cores, {dev.ram_gb:.0f} GB RAM, {gpu}.",
        "Edit any value; train with `geoseg train --plan THIS.yaml` (command-line options win).",
    ]


def _scenes(shapes: Sequence[tuple[int, int]]) -> str:
    """``1 scene of 101 x 100 px`` / ``3 scenes of 512 x 512 px`` / ``2 scenes (H x W, ...) px``."""
    sizes = [f"{h} x {w}" for h, w in shapes]
    n = f"{len(sizes)} scene{'s' if len(sizes) > 1 else ''}"
    return f"{n} of {sizes[0]} px" if len(set(sizes)) == 1 else f"{n} ({', '.join(sizes)} px)"


def _readable(value: Any) -> str:
    """A plan value as a person writes it: ``class_1 5.7``, ``128, 64, 32``."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_readable(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_readable(v) for v in value) + "]"
    return str(value)


def plan_text(entries: Sequence[tuple[str, Choice]], header: Sequence[str]) -> str:
    """The YAML plan: the header, then each top-level key below a ``# why`` comment.

    The mapping is dumped once (lists and maps of plain values in flow style, one
    line each) and each comment is put above the line that starts its key.
    """
    why = {key: choice.why for key, choice in entries}
    body = yaml.safe_dump({k: c.value for k, c in entries}, default_flow_style=None,
                          sort_keys=False, width=10_000, allow_unicode=True)  # fmt: skip
    lines = [f"# {h}" for h in header] + [""]
    for line in body.splitlines():
        key = line.split(":", 1)[0]
        if not line[:1].isspace() and not line.startswith("-") and key in why:
            lines.append(f"# {why.pop(key)}")
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_plan(path: str | os.PathLike[str], req: PlanRequest, overwrite: bool = False) -> str:
    """Plan ``req`` and write the plan file (whole, or not at all); returns its text."""
    entries, header = make_plan(req)
    text = plan_text(entries, header)
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return text


def key_lines(text: str) -> list[str]:
    """The plan's main choices, one line each (what ``train --auto`` prints)."""
    raw = yaml.safe_load(text)
    keys = ("window", "margin", "batch_size", "normalization", "class_weights", "epochs",
            "steps_per_epoch", "options")  # fmt: skip
    return [f"  {k}: {_readable(raw[k])}" for k in keys if k in raw]
