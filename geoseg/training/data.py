"""Training data: labelled rasters, their class-index targets, band statistics, metadata."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from geoseg import __version__
from geoseg.change.unknown import warn_values_outside_schema
from geoseg.errors import BandMismatchError, InvalidRasterError
from geoseg.io.label_classes import label_ids_by_name, mapping_note
from geoseg.io.labels import read_class_schema
from geoseg.io.training_data import LABEL_NODATA, LabelledRaster, read_labelled_raster
from geoseg.models.bands import reflectance_scale
from geoseg.tiling.confusion import remap_values
from geoseg.training.config import CLIP_PERCENTILES, TrainConfig
from geoseg.types import NODATA_LABEL, ClassSchema, ModelMeta, Normalization, bands_count

__all__ = [
    "band_normalization", "check_something_to_learn", "check_val_bands", "class_targets",
    "load_rasters", "model_meta",
    "train_normalization",
    "warn_stray_labels",
]  # fmt: skip

log = logging.getLogger(__name__)


def class_targets(r: LabelledRaster, schema: ClassSchema) -> np.ndarray:
    """Label values -> class index 0..K-1, 255 where unlabelled or not in the schema."""
    index = remap_values(r.labels, {cid: k for k, cid in enumerate(schema.ids)})
    return np.where(r.valid, index, NODATA_LABEL).astype(np.uint8)


def band_normalization(
    rasters: Sequence[LabelledRaster], scale: float,
    clip_percentiles: tuple[float, float] | None = None,
) -> Normalization:  # fmt: skip
    """Per-band mean and std of the scaled valid pixels of all training rasters.

    With ``clip_percentiles`` (e.g. ``(0.5, 99.5)``) each band is first clipped to
    those percentiles of its valid pixels; the bounds go into the normalization.
    """
    c = rasters[0].image.shape[0]
    total, sq, n = np.zeros(c), np.zeros(c), 0
    bounds = None
    if clip_percentiles is not None:
        pixels = np.concatenate([r.image[:, r.valid] for r in rasters], axis=1)
        bounds = np.percentile(pixels.astype(np.float64) * scale, clip_percentiles, axis=1)
    for r in rasters:
        x = r.image[:, r.valid].astype(np.float64) * scale
        if bounds is not None:
            x = np.clip(x, bounds[0][:, None], bounds[1][:, None])
        total += x.sum(axis=1)
        sq += (x**2).sum(axis=1)
        n += x.shape[1]
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean**2, 0.0))
    return Normalization(
        tuple(float(v) for v in mean), tuple(float(max(v, 1e-6)) for v in std), scale,
        None if bounds is None else tuple(float(v) for v in bounds[0]),
        None if bounds is None else tuple(float(v) for v in bounds[1]),
    )  # fmt: skip


def train_normalization(cfg: TrainConfig, rasters: Sequence[LabelledRaster]) -> Normalization:
    """The normalization ``cfg.normalization`` asks for, from the training rasters."""
    scale = reflectance_scale(rasters[0].dtype, rasters[0].path)
    clip = CLIP_PERCENTILES if cfg.normalization == "percentile" else None
    return band_normalization(rasters, scale, clip)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for part in iter(lambda: f.read(1 << 20), b""):
            h.update(part)
    return h.hexdigest()[:16]


def model_meta(
    cfg: TrainConfig, rasters: Sequence[LabelledRaster], norm: Normalization
) -> ModelMeta:
    """Checkpoint metadata of a run: bands, normalization, schema, window and provenance."""
    provenance = {
        "train": [{"image": r.path, "sha256": _sha256(r.path)} for r in rasters],
        "labels": list(cfg.labels),
        "val": list(cfg.val_images),
        "epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed,
        # the options that change the weights (older files lack them); date_augment and
        # swap_dates are added by the training loop, only when on (with their settings)
        "weight_decay": cfg.weight_decay, "dice_weight": cfg.dice_weight, "ema": cfg.ema,
        "class_weights": None if cfg.class_weights is None
        else {str(k): float(v) for k, v in cfg.class_weights.items()},
        "normalization": cfg.normalization,
        "geoseg": __version__, "torch": torch.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **dict(cfg.provenance),
    }  # fmt: skip
    return ModelMeta(
        task=cfg.task, arch=cfg.arch, encoder=cfg.encoder, bands=rasters[0].band_names,
        normalization=norm, schema=cfg.classes, window=cfg.window, margin=cfg.margin,
        gsd_m=rasters[0].gsd_m, provenance=provenance, options=dict(cfg.options),
    )  # fmt: skip


def warn_stray_labels(r: LabelledRaster, label_path: str, schema: ClassSchema) -> None:
    """Warn, as ``change`` does, of label values that are not classes (not trained on).

    :func:`class_targets` makes them nodata (255) and validation does not score them.
    """
    labelled = r.valid & (r.labels != LABEL_NODATA) & (r.labels != NODATA_LABEL)
    values, counts = np.unique(r.labels[labelled], return_counts=True)
    stray = ~np.isin(values, np.asarray(schema.ids))
    if stray.any():
        parts = [f"{v}: {n:,} px" for v, n in zip(values[stray], counts[stray], strict=True)]
        warn_values_outside_schema(
            label_path, schema.ids, parts,
            "check the labels were written with this class schema (--classes)",
        )  # fmt: skip


def _labels_by_name(r: LabelledRaster, label_path: str, schema: ClassSchema) -> None:
    """Rewrite ``r.labels`` in ``schema``'s ids where the label raster names its classes
    under other ids; values outside its own classes become unlabelled (after a warning)."""
    named = label_ids_by_name(label_path, schema, "the classes (--classes)")
    own = read_class_schema(label_path)
    if named is None or own is None:
        return
    warn_stray_labels(r, label_path, own)
    log.warning("%s", mapping_note(label_path, named, schema, "the classes (--classes)"))
    r.labels[:] = remap_values(r.labels, named)  # the rest: 255, unlabelled


def load_rasters(
    images: Sequence[str],
    labels: Sequence[str],
    cfg: TrainConfig,
    read: Callable[[str, str, Sequence[str] | None], LabelledRaster] = read_labelled_raster,
) -> list[LabelledRaster]:
    """``read`` each (image, labels) pair; every image must have the same number of bands.

    A semantic or change label raster that names its classes under other ids than
    ``cfg.classes`` is read by name (:func:`~geoseg.io.label_classes.label_ids_by_name`).

    Raises:
        BandMismatchError: two images differ in band count.
        InvalidRasterError: a label raster names a class ``cfg.classes`` does not have.
    """
    rasters = [read(i, lab, cfg.bands) for i, lab in zip(images, labels, strict=True)]
    for r, label_path in zip(rasters, labels, strict=True):
        if cfg.task in ("semantic", "change"):
            _labels_by_name(r, label_path, cfg.classes)
        warn_stray_labels(r, label_path, cfg.classes)
    for r in rasters[1:]:
        if r.image.shape[0] != rasters[0].image.shape[0]:
            raise BandMismatchError(
                f"{r.path}: {bands_count(r.image.shape[0])}, {rasters[0].path} has "
                f"{rasters[0].image.shape[0]}; select the same bands with --bands"
            )
    return rasters


def _named(names: Sequence[str]) -> bool:
    """Whether bands carry names (descriptions), not just their 1-based numbers."""
    return not all(n.isdigit() for n in names)


def check_val_bands(train: Sequence[LabelledRaster], val: Sequence[LabelledRaster]) -> None:
    """Refuse a validation image whose bands are not the training images' (before training).

    Raises:
        BandMismatchError: another band count, or other band names where both name them;
            the message names the file, its bands and the training bands.
    """
    ref = train[0]
    for r in val:
        named = _named(r.band_names) and _named(ref.band_names)
        if r.band_names == ref.band_names or (
            len(r.band_names) == len(ref.band_names) and not named
        ):
            continue
        raise BandMismatchError(
            f"{r.path}: --val-image has {bands_count(len(r.band_names))} "
            f"({', '.join(r.band_names)}), the training images {len(ref.band_names)} "
            f"({', '.join(ref.band_names)}); validate on images of the training bands "
            "(or select the same bands of both with --bands)"
        )


def check_something_to_learn(
    train: Sequence[LabelledRaster], labels: Sequence[str], schema: ClassSchema
) -> None:
    """Refuse training rasters without a labelled pixel of the schema on the images' valid
    area, or (instance rasters, with ``ids``) without a single object there.

    Labels that miss the image (another area, a wrong CRS) or an empty polygon layer
    would otherwise train a model on nothing but background and write it.

    Raises:
        InvalidRasterError: names the label files and what to fix.
    """
    images = ", ".join(r.path for r in train)
    objects = all(hasattr(r, "ids") for r in train)
    for r in train:
        labelled = class_targets(r, schema) != NODATA_LABEL
        found = labelled & (np.asarray(getattr(r, "ids")) > 0) if objects else labelled  # noqa: B009
        if found.any():
            return
    what = "object (polygon or instance id)" if objects else "pixel of a class in --classes"
    raise InvalidRasterError(
        f"{', '.join(labels)}: no labelled {what} on the training images ({images}); "
        "nothing to learn from. Check that the labels hold "
        f"{'polygons' if objects else 'class values'} over the images' area (same place; "
        "polygons in another CRS: --labels-crs), or pass labels that do"
    )
