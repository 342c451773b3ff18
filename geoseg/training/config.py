"""Training options, settable from the command line or a YAML file."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError, GeosegError, InputNotFoundError
from geoseg.io.training_data import refuse_polygon_labels
from geoseg.io.yaml_files import read_yaml
from geoseg.models.registry import task_kind, training_tasks
from geoseg.types import ClassSchema, require_at_least, require_finite

__all__ = [
    "CLIP_PERCENTILES", "NORMALIZATIONS", "TrainConfig", "chip_pairs", "load_class_schema",
    "load_train_config", "refuse_duplicate_names",
]  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``geoseg train`` needs.

    Attributes:
        images, labels: training image and label rasters, paired by position.
        val_images, val_labels: held-out pairs scored each epoch (mIoU picks the
            best checkpoint); without them the last epoch is kept.
        classes: the class schema (label values -> names, colours).
        output: checkpoint to write (``.safetensors``).
        arch, encoder: architecture and encoder (see ``geoseg models``); ``maskrcnn``
            with a ResNet backbone (``resnet18`` ... ``resnet101``) for instances.
        options: extra builder arguments, e.g. ``{"encoder_depth": 3}``.
        bands: band selection by number or name (default: all bands).
        window: training window side in px; also the inference window stored.
        margin: inference margin stored in the checkpoint.
        epochs, steps_per_epoch, batch_size: schedule.
        lr, weight_decay: AdamW settings (one-cycle schedule peaking at ``lr``).
        dice_weight: weight of the Dice term added to cross-entropy.
        min_labelled: minimum labelled fraction of a sampled window.
        seed: makes a CPU run repeatable.
        device: ``auto``, ``cpu`` or ``cuda``.
        resume: continue from ``output`` if it exists.
        overwrite: replace an existing ``output``.
        provenance: extra notes stored in the checkpoint.
        task: ``"semantic"``, ``"change"`` for a change model (early fusion or
            Siamese, by ``arch``) trained on dates stacked with ``geoseg stack``
            (labels: change mask classes), or
            ``"instance"`` for a bottom-up instance model (labels: a ``uint32``
            instance id raster or a polygon layer; the schema has one background
            class and ``is_thing`` object classes; see :mod:`geoseg.training.instances`;
            ``arch="maskrcnn"`` trains a Mask R-CNN whose backbone is ``encoder``), or
            ``"panoptic"`` for a Panoptic-DeepLab on the smp ``arch`` (same labels; see
            :mod:`geoseg.training.panoptic`).
        class_field: instance and panoptic tasks: the polygon attribute holding each feature's
            class id or name (default: every polygon is the schema's one object class).
        labels_crs: polygon labels' CRS when their file declares none (or a wrong one);
            ``"raster"``: each image's CRS (see :mod:`geoseg.io.vectors_crs`).
        encoder_weights: a state dict (``.pth`` read with ``weights_only=True``,
            ``.safetensors``, or a geoseg checkpoint) to start the encoder from; see
            :mod:`geoseg.models.encoder_weights` for the key and band rules.
        encoder_bands: names of the bands ``encoder_weights`` was trained on, in its
            input order (default: what the file says, if anything).
        date_augment: ``--task change``: simulate date-to-date differences on date 2
            of each window (brightness, contrast, haze, colour, 1-2 px co-registration
            jitter; see :mod:`geoseg.training.date_shift` for the ranges and why it is
            off by default). Needs dates stacked by ``geoseg stack``.
        swap_dates: ``--task change``: exchange each window's two dates with probability 1/2
            (:func:`geoseg.training.date_shift.swap_dates`). Needs ``geoseg stack`` dates.
        ema: decay per optimizer step of an exponential moving average of the weights
            (and BatchNorm statistics); 0 = off, e.g. 0.99 averages over ~100 steps. When
            on, validation scores the averaged weights and the checkpoint holds them
            (Polyak averaging: a smoother model than the last step's).
        folds: train ``folds`` members on spatially separate blocks, score each on its
            held-out block and write one ensemble checkpoint (semantic and change
            tasks; see :mod:`geoseg.training.folds`, :mod:`geoseg.training.crossval`).
        normalization: ``"zscore"`` (per-band mean/std) or ``"percentile"`` (each band
            clipped to its :data:`CLIP_PERCENTILES` first, for heavy-tailed bands; the
            bounds are stored in the checkpoint and applied at predict).
        class_weights: semantic/change: cross-entropy weight per class name (or id);
            classes not named weigh 1. ``geoseg plan`` raises rare classes' weights.
    """

    images: tuple[str, ...]
    labels: tuple[str, ...]
    classes: ClassSchema
    output: str
    val_images: tuple[str, ...] = ()
    val_labels: tuple[str, ...] = ()
    arch: str = "unet"
    encoder: str = "resnet18"
    options: Mapping[str, Any] = field(default_factory=dict)
    bands: tuple[str, ...] | None = None
    window: int = 64
    margin: int = 8
    epochs: int = 30
    steps_per_epoch: int = 50
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    dice_weight: float = 0.5
    min_labelled: float = 0.1
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    provenance: Mapping[str, Any] = field(default_factory=dict)
    task: str = "semantic"
    class_field: str | None = None
    labels_crs: str | None = None
    encoder_weights: str | None = None
    encoder_bands: tuple[str, ...] | None = None
    date_augment: bool = False
    swap_dates: bool = False
    ema: float = 0.0
    folds: int | None = None
    normalization: str = "zscore"
    class_weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.task not in training_tasks():
            raise GeosegError(
                f"--task must be one of {', '.join(training_tasks())}, not {self.task!r}"
            )
        if not self.images or len(self.images) != len(self.labels):
            raise GeosegError("give one --labels raster for each --image (in the same order)")
        if len(self.val_images) != len(self.val_labels):
            raise GeosegError("give one --val-labels raster for each --val-image")
        if self.task not in ("instance", "panoptic"):
            pairs = zip(
                (*self.images, *self.val_images), (*self.labels, *self.val_labels), strict=True
            )
            for image, labels in pairs:
                refuse_polygon_labels(labels, f"--task {self.task} training", image)
        if self.labels_crs is not None and self.task not in ("instance", "panoptic"):
            raise GeosegError(
                "--labels-crs applies to polygon labels (--task instance or panoptic); "
                f"--task {self.task} labels are rasters, which carry their own CRS"
            )
        for name in ("date_augment", "swap_dates"):
            if getattr(self, name) and self.task != "change":
                raise ConfigError(
                    f"{name} alters the dates of a two-date stack: it needs --task change, "
                    f"not --task {self.task}; leave {name} out"
                )
        if self.folds is not None:
            _check_folds(self)
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"normalization must be one of {', '.join(NORMALIZATIONS)}, "
                f"not {self.normalization!r}"
            )
        if self.class_weights is not None:
            self.class_weight_vector()  # refuses unknown classes and bad weights now
        require_at_least(
            "TrainConfig", epochs=(self.epochs, 1), steps_per_epoch=(self.steps_per_epoch, 1),
            batch_size=(self.batch_size, 1), window=(self.window, 1), margin=(self.margin, 0),
            seed=(self.seed, 0),
        )  # fmt: skip
        require_finite(
            "TrainConfig", lr=(self.lr, 1e-12, math.inf),
            weight_decay=(self.weight_decay, 0, math.inf),
            dice_weight=(self.dice_weight, 0, math.inf), min_labelled=(self.min_labelled, 0, 1),
            ema=(self.ema, 0, 0.9999),
        )  # fmt: skip

    def class_weight_vector(self) -> tuple[float, ...] | None:
        """:attr:`class_weights` as one weight per schema class (schema order), or None.

        Raises:
            ConfigError: a key that names no class, a weight not finite and > 0, or a
                task other than semantic/change.
        """
        if self.class_weights is None:
            return None
        if not isinstance(self.class_weights, Mapping):
            raise ConfigError("class_weights must be a mapping of class name (or id): weight")
        if self.task not in ("semantic", "change"):
            raise ConfigError(
                f"class_weights weighs the cross-entropy of --task semantic or change, not "
                f"--task {self.task}; leave class_weights out"
            )
        keys = {c.name: k for k, c in enumerate(self.classes.classes)}
        keys |= {str(c.id): k for k, c in enumerate(self.classes.classes)}
        weights = [1.0] * len(self.classes)
        for name, w in self.class_weights.items():
            if str(name) not in keys:
                raise ConfigError(
                    f"class_weights names {name!r}, which is no class; classes: "
                    f"{', '.join(c.name for c in self.classes.classes)}"
                )
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w < math.inf:
                raise ConfigError(f"class_weights[{name!r}] must be a number > 0, not {w!r}")
            weights[keys[str(name)]] = float(w)
        return tuple(weights)


#: ``normalization`` schemes.
NORMALIZATIONS = ("zscore", "percentile")
#: Percentiles each band is clipped to with ``normalization: percentile`` (nnU-Net's CT rule).
CLIP_PERCENTILES = (0.5, 99.5)


def _check_folds(cfg: TrainConfig) -> None:
    """What ``--folds`` cannot be combined with, refused before any raster is read."""
    k = cfg.folds
    if k is None or k < 2:
        raise ConfigError(
            f"--folds {k}: cross-validation needs at least 2 folds; leave --folds out to "
            "train one model on all the data"
        )
    if cfg.resume:
        raise ConfigError(
            "--folds with --resume: a cross-validation run does not resume; run it again "
            "without --resume (with --overwrite)"
        )
    if task_kind(cfg.task).objects:
        raise ConfigError(
            f"--folds averages per-pixel class probabilities, which --task {cfg.task} models "
            "do not give; use it with --task semantic or change, or leave --folds out"
        )


def load_class_schema(path: str | os.PathLike[str]) -> ClassSchema:
    """Read ``classes.yaml``: a list (or ``classes:`` list) of ``{id, name, colour}``."""
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"{p}: no such class file; see README 'Training' for the format")
    data = read_yaml(p)
    items = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise GeosegError(f"{p}: expected a list of classes with id, name and colour")
    try:
        schema = ClassSchema.from_json(items)
    except GeosegError as exc:
        raise GeosegError(f"{p}: {exc}") from exc
    refuse_duplicate_names(schema, p)
    return schema


def refuse_duplicate_names(schema: ClassSchema, source: str | os.PathLike[str]) -> None:
    """Refuse two classes of one name (case-insensitive): labels, reports and label
    rasters read by name could not tell them apart.

    Raises:
        ConfigError: naming ``source``, the name and both ids.
    """
    seen: dict[str, int] = {}
    for c in schema.classes:
        first = seen.setdefault(c.name.casefold(), c.id)
        if first != c.id:
            raise ConfigError(
                f"{source}: class names must be unique, but ids {first} and {c.id} are both "
                f"{c.name!r}; give each class its own name"
            )


def check_instance_classes(schema: ClassSchema, source: str) -> None:
    """Refuse an instance schema without exactly one background class and an object class.

    Raises:
        ConfigError: naming ``source`` (the classes file) and the fix.
    """
    stuff = [c.name for c in schema.classes if not c.is_thing]
    things = [c.name for c in schema.classes if c.is_thing]
    if len(stuff) != 1 or not things:
        raise ConfigError(
            f"{source}: an instance model needs exactly one background class (is_thing: false) "
            f"and at least one object class (is_thing: true); it has {len(stuff)} with "
            f"is_thing: false ({', '.join(stuff) or 'none'}) and {len(things)} with is_thing: "
            "true: mark each object class `is_thing: true`, the background `is_thing: false`"
        )


_PATH_LISTS = ("images", "labels", "val_images", "val_labels")
_RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")


def chip_pairs(folder: str | os.PathLike[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Image and label paths of a chip folder: ``images/NAME.tif`` with ``labels/NAME.tif``."""
    root = Path(folder)
    images = sorted(p for p in (root / "images").glob("*") if p.suffix.lower() in _RASTER_SUFFIXES)
    if not images:
        raise InputNotFoundError(
            f"{root}: no chips found; expected {root}/images/NAME.tif and {root}/labels/NAME.tif"
        )
    labels = [root / "labels" / p.name for p in images]
    missing = [str(p) for p in labels if not p.is_file()]
    if missing:
        raise InputNotFoundError(f"{root}: label chips missing for {missing[:3]}")
    return tuple(map(str, images)), tuple(map(str, labels))


def load_train_config(path: str | os.PathLike[str] | None, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file, with ``overrides`` (CLI flags) on top.

    Relative paths in the YAML file are taken relative to the file's folder;
    ``classes`` may be a path to a class file or an inline list; ``chips`` and
    ``val_chips`` name chip folders (see :func:`chip_pairs`) adding image/label pairs.
    """
    values, raw = _read_config_file(path) if path is not None else ({}, {})
    from_file = dict(values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    _add_chip_pairs(values)
    named = _resolve_classes(values, path)
    for key in _PATH_LISTS:
        values[key] = tuple(values.get(key, ()))
    for key in ("bands", "encoder_bands"):
        names = values.get(key)
        if isinstance(names, str):  # "B02,B03" in YAML, as on the command line
            names = names.split(",")
        if names is not None:
            values[key] = tuple(str(b).strip() for b in names)
    if "output" not in values:
        raise GeosegError("no output: pass -o model.safetensors")
    if path is not None:
        _check_plan(path, raw, from_file, values, overrides.get("classes") is None)
    cfg = _make_config(path, raw, values, overrides)
    if cfg.task == "instance":  # here the message can name the classes file
        check_instance_classes(cfg.classes, str(named))
    return cfg


def _read_config_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options of a YAML config file, its relative paths made relative to its folder;
    and the file's mapping as read."""
    values: dict[str, Any] = {}
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"{p}: no such config file")
    base = p.parent
    raw = read_yaml(p) or {}
    if not isinstance(raw, dict):
        raise GeosegError(f"{p}: expected a mapping of option: value")
    valid = {f.name for f in dataclasses.fields(TrainConfig)} | {"chips", "val_chips"}
    unknown = set(raw) - valid
    if unknown:
        raise GeosegError(f"{p}: unknown keys {sorted(unknown)}; valid keys: {sorted(valid)}")
    values.update(raw)
    for key in _PATH_LISTS:
        if key in raw:
            values[key] = tuple(str(base / v) for v in raw[key])
    if isinstance(raw.get("classes"), str):
        values["classes"] = str(base / raw["classes"])
    for key in ("output", "encoder_weights"):
        if isinstance(raw.get(key), str):
            values[key] = str(base / raw[key])
    for key in ("chips", "val_chips"):
        if isinstance(raw.get(key), str):
            values[key] = str(base / raw[key])
    return values, raw


def _add_chip_pairs(values: dict[str, Any]) -> None:
    """Replace ``chips``/``val_chips`` in ``values`` by the image/label pairs of the folders."""
    for key, pair in (("chips", ("images", "labels")), ("val_chips", ("val_images", "val_labels"))):
        folder = values.pop(key, None)
        if folder is not None:
            imgs, labs = chip_pairs(folder)
            values[pair[0]] = (*values.get(pair[0], ()), *imgs)
            values[pair[1]] = (*values.get(pair[1], ()), *labs)


def _resolve_classes(
    values: dict[str, Any], path: str | os.PathLike[str] | None
) -> str | os.PathLike[str]:
    """Turn ``values["classes"]`` (a schema, an inline list or a class file) into a
    :class:`ClassSchema`; returns what to name as the classes' source in messages."""
    classes = values.get("classes")
    if classes is None:
        raise GeosegError(
            "no class schema: pass --classes classes.yaml (or `classes:` in --config)"
        )
    values["classes"] = (
        classes if isinstance(classes, ClassSchema)
        else ClassSchema.from_json(classes) if isinstance(classes, list)
        else load_class_schema(classes)
    )  # fmt: skip
    if isinstance(classes, list):
        refuse_duplicate_names(values["classes"], path or "classes")
    return classes if isinstance(classes, str | os.PathLike) else path or "classes"


def _make_config(
    path: str | os.PathLike[str] | None,
    raw: Mapping[str, Any],
    values: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> TrainConfig:
    """``TrainConfig(**values)``; a refused value the file set names the file."""
    try:
        return TrainConfig(**values)  # its own checks first: they name the option to change
    except GeosegError as exc:  # a value the file set (a plan's class_weights): name the file
        text = str(exc).removeprefix("TrainConfig: ")  # the range checks' prefix
        if path is None or not any(
            re.match(rf"{re.escape(k)}\b", text) for k in raw if overrides.get(k) is None
        ):
            raise
        redo = ", or re-run `geoseg plan` with these options" if "provenance" in raw else ""
        raise type(exc)(f"{path}: {text} (set in this file: edit it there{redo})") from exc


def _check_plan(path: str | os.PathLike[str], raw: Mapping[str, Any],
                from_file: Mapping[str, Any], values: Mapping[str, Any],
                plan_classes: bool) -> None:  # fmt: skip
    """A plan's fingerprint against data given in its place (``train --plan P --image X``);
    ``plan_classes``: the classes are the plan's (not given anew), so label values are checked."""
    from geoseg.training.plan_check import check_plan_data

    def listed(v: Any) -> tuple[str, ...]:
        return tuple(str(x).strip() for x in (v.split(",") if isinstance(v, str) else v or ()))

    prov = raw.get("provenance")
    fp = prov.get("plan") if isinstance(prov, Mapping) else None
    if not isinstance(fp, Mapping) or all(
        listed(from_file.get(k)) == listed(values.get(k)) for k in ("images", "labels", "bands")
    ):
        return
    pixels = values.get("task", "semantic") in ("semantic", "change")
    ids = list(values["classes"].ids) if plan_classes and pixels else None
    check_plan_data(path, fp, values["images"], values["labels"], values.get("bands"), ids)
