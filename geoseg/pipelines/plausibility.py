"""Warnings for results that run cleanly but are probably wrong.

Two inputs give a confident map with no error: a scene whose band order is a guess
(:func:`geoseg.models.bands.band_order_is_guess`) and is in fact another, and a
scene far from the data a checkpoint was trained on. Both are checked on a small
sample of the scene (:func:`geoseg.io.raster_stats.sample_valid_pixels`, never a pass
over it) and, for the band order, on the finished map's smallest overview. They
warn through ``logging``; the CLI prints each warning as one line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.io.band_scaling import declared_scaling, scaling_warning
from geoseg.io.raster import Scene
from geoseg.io.raster_stats import sample_valid_pixels
from geoseg.models.bands import (
    BandRoles,
    band_order_doubt,
    band_order_is_guess,
    swapped_red_blue,
)
from geoseg.pipelines.band_hints import band_names_guessed, band_order_fix
from geoseg.types import NODATA_LABEL, ClassSchema, ModelMeta

__all__ = [
    "DOMINANT_SHARE",
    "OUTSIDE_TRAINING_SIGMAS",
    "BandGuess",
    "guessed_band_order",
    "predicted_shares",
    "warn_if_declared_scaling",
    "warn_if_dominated",
    "warn_if_one_class",
    "warn_if_outside_training",
]

log = logging.getLogger(__name__)

#: One class over this share of a map's valid pixels makes a guessed band order suspect.
DOMINANT_SHARE = 0.95
#: A band whose median lies this many of the training standard deviations from the
#: training mean is outside what the model saw. Clear scenes of the shipped models
#: lie within 3.5; fully clouded ones 11 to 35.
OUTSIDE_TRAINING_SIGMAS = 8.0
#: Fewest sampled pixels a statistic is drawn from.
_MIN_PIXELS = 256


@dataclass(frozen=True)
class BandGuess:
    """A scene whose red/green/blue order was assumed, not read from the file.

    Attributes:
        order: how it was read, e.g. ``"red, green, blue"``.
        fix: the ``--bands`` option with red and blue exchanged.
        warned: the scene's colours already contradicted the guess (and said so).
    """

    order: str
    fix: str
    warned: bool


def guessed_band_order(
    scene: Scene, roles: object, overrides: Mapping[str, int] | None, sensor: str | None
) -> BandGuess | None:
    """None when the file or the user says which band is which; else check the guess.

    ``roles`` is the model's :attr:`~geoseg.models.cache.ModelSpec.roles`: a model
    that does not read bands by role (a checkpoint) has no guess to check. Warns at
    once when the colours of a sample of the scene contradict the guess.
    """
    if not isinstance(roles, BandRoles):
        return None
    if not band_order_is_guess(scene.band_names, scene.colorinterp, overrides, sensor):
        return None
    index = [roles.get(r) for r in ("red", "green", "blue")]
    order = ", ".join(r for r, _ in sorted(roles.pairs, key=lambda p: p[1]))
    guess = BandGuess(order, swapped_red_blue(roles), warned=False)
    if None in index:
        return guess
    sample = sample_valid_pixels(scene.path, [i for i in index if i is not None])
    doubt = band_order_doubt(*sample) if sample.shape[1] >= _MIN_PIXELS else None
    if doubt is None:
        return guess
    log.warning(
        "%s: the file does not name its bands, so they are read as %s, but %s; if it is "
        "stored blue, green, red, rerun with %s", scene.path, order, doubt, guess.fix,
    )  # fmt: skip
    return BandGuess(order, guess.fix, warned=True)


def _class_shares(path: os.PathLike[str] | str, max_side: int = 512) -> np.ndarray | None:
    """Share of each class id (0-254) among the valid pixels of a label map's overview."""
    labels = sample_valid_pixels(path, [0], max_side)[0].astype(np.int64)
    counts = np.bincount(labels[labels != NODATA_LABEL], minlength=256)[:NODATA_LABEL]
    return None if counts.sum() < _MIN_PIXELS else counts / counts.sum()


def predicted_shares(counts: np.ndarray, ids: Sequence[int]) -> np.ndarray | None:
    """``(256,)`` share of each class id among ``counts`` predicted pixels of classes ``ids``.

    None when fewer than the pixels a share is drawn from were predicted.
    """
    total = np.zeros(256)
    np.add.at(total, np.asarray(ids, np.int64), np.asarray(counts, np.float64))
    return None if total.sum() < _MIN_PIXELS else total / total.sum()


def warn_if_dominated(
    output: os.PathLike[str] | str, scene_path: str, schema: ClassSchema, guess: BandGuess
) -> None:
    """Warn when one class fills the map made from a scene whose band order was guessed."""
    if not guess.warned:
        warn_if_one_class(_class_shares(output), output, scene_path, schema, guess)


def warn_if_one_class(
    shares: np.ndarray | None, output: object, scene_path: str, schema: ClassSchema,
    guess: BandGuess | None,
) -> None:  # fmt: skip
    """Warn when one class has :data:`DOMINANT_SHARE` of a guessed-band-order prediction.

    Args:
        shares: ``(256,)`` or shorter share of each class id among the predicted pixels
            (None: too few pixels to tell).
        output: what the shares are of (a map, or ``evaluate``'s predictions), named first.
        scene_path, schema, guess: the scene, the classes, the band-order guess (None or
            already warned about: no warning).
    """
    if guess is None or guess.warned or shares is None or shares.max() < DOMINANT_SHARE:
        return
    class_id = int(shares.argmax())
    name = dict(zip(schema.ids, schema.names, strict=True)).get(class_id, str(class_id))
    log.warning(
        "%s: %.1f %% of the valid pixels are %s, and the bands of %s are not named, so "
        "they were read as %s; if it is stored in another order (blue, green, red), rerun "
        "with %s", output, 100 * shares.max(), name, scene_path, guess.order, guess.fix,
    )  # fmt: skip


def warn_if_outside_training(
    path: str, index: Sequence[int], scale: float, model: str, meta: ModelMeta,
    bands_given: bool = False,
) -> None:  # fmt: skip
    """Warn when a band of the scene lies far outside the checkpoint's normalisation.

    Args:
        path: the scene.
        index: 0-based scene bands feeding the model's inputs, in the model's order.
        scale: stored value -> the model's units (reflectance).
        model: the checkpoint, named in the warning.
        meta: its metadata (normalisation mean and std per input band).
        bands_given: ``index`` is the user's ``--bands``, not assumed in file order.
    """
    warn_if_declared_scaling(path, index)
    sample = sample_valid_pixels(path, index)
    if sample.shape[1] < _MIN_PIXELS:
        return
    median = np.median(sample, axis=1) * scale
    mean, std = np.asarray(meta.normalization.mean), np.asarray(meta.normalization.std)
    sigmas = (median - mean) / std
    k = int(np.argmax(np.abs(sigmas)))
    if abs(sigmas[k]) < OUTSIDE_TRAINING_SIGMAS:
        return
    log.warning(
        "%s: band %s has a median of %.4g here, %.1f standard deviations from the %.4g +- "
        "%.2g that %s was trained on: the model is applied outside what it was trained on "
        "(%s) and its map may be wrong",
        path, meta.bands[k], median[k], sigmas[k], mean[k], std[k], model,
        _outside_causes(path, index, median, mean, std, meta.bands, bands_given),
    )  # fmt: skip


def warn_if_declared_scaling(path: str | os.PathLike[str], index: Sequence[int]) -> None:
    """Warn when bands of ``index`` declare a GDAL scale/offset geoseg does not apply
    (:mod:`geoseg.io.band_scaling`)."""
    found = declared_scaling(path, index)
    if found:
        log.warning("%s", scaling_warning(path, found))


def _outside_causes(
    path: str, index: Sequence[int], median: np.ndarray, mean: np.ndarray, std: np.ndarray,
    model_bands: Sequence[str], bands_given: bool = False,
) -> str:  # fmt: skip
    """The likely causes, band order first when the file does not name its bands as the
    model's (and the ``--bands`` to try when the bands read in reverse would fit)."""
    causes = "another sensor, processing level, cloud or scaling?"
    if not band_names_guessed(path, index, model_bands):
        return causes
    reverse = np.abs((median[::-1] - mean) / std).max() < OUTSIDE_TRAINING_SIGMAS
    order = ", ".join(model_bands)
    if bands_given:  # the user chose the bands: nothing was assumed
        numbers = ",".join(str(i + 1) for i in index)
        head = f"--bands {numbers} read the file's bands as {order}"
        check = f"check that --bands gives the file's band numbers in the order {order}"
    else:
        head = f"the file does not name its bands, so {order} were assumed in file order"
        check = f"give --bands with the file's band numbers in the order {order}"
    try_ = f"the bands read in reverse fit: try {band_order_fix(index)}" if reverse else check
    return f"band order? {head}; {try_}; or {causes}"
