"""Read and check a workflow file (:func:`load_workflow`) before anything is written.

The file's format is described in :mod:`geoseg.pipelines.workflow`, which runs it.
:func:`load_workflow` reads it with a loader that refuses aliases expanding past a
small bound, checks each key and type against
:mod:`geoseg.pipelines.workflow_schema`, that every input exists inside the run
folder and that the focus classes are the model's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.change.radiometric import NORMALIZE_METHODS
from geoseg.errors import ConfigError, GeosegError, InputNotFoundError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.io.yaml_files import read_yaml
from geoseg.models.registry import weights_free_family
from geoseg.pipelines.workflow_schema import (
    CHANGE_OPTIONS,
    FOCUS,
    PREDICT_OPTIONS,
    Check,
    check_mapping,
    text,
    texts,
)

__all__ = ["Focus", "Workflow", "load_workflow"]


@dataclass(frozen=True)
class Focus:
    """Transitions summed up in ``summary.json`` (e.g. forest -> anything else)."""

    name: str
    from_classes: tuple[str, ...]
    to_classes: tuple[str, ...]


@dataclass(frozen=True)
class Workflow:
    """A parsed, validated workflow file (its format: :mod:`geoseg.pipelines.workflow`)."""

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
    if path.is_dir():
        raise InputNotFoundError(f"{key} {value!r}: {path} is a folder; give a file in it")
    if not path.is_file():
        raise InputNotFoundError(
            f"{key} {value!r}: no such file {path} (paths are relative to the run folder "
            f"{root}; --root changes it)"
        )
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
