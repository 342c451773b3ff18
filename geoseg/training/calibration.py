"""Post-hoc probability calibration by temperature scaling (Guo et al. 2017).

"On Calibration of Modern Neural Networks" (ICML 2017): one scalar ``T > 0``
divides the logits, ``softmax(z / T)``, and is fitted by minimising the negative
log-likelihood of held-out labelled pixels; the argmax, so the label map, does not
move. Small-data models are typically overconfident (``T > 1`` softens them).

The NLL of ``softmax(b z)`` is convex in ``b = 1 / T`` (a log-sum-exp of functions
linear in ``b`` minus a linear term), with derivative ``mean(E_p[z] - z_y)``, which
rises with ``b``; :func:`fit_temperature` finds its root by bisection on ``log b``,
so the fit needs no optimiser and always converges. Reliability is reported as the
expected calibration error over 15 equal-width confidence bins (Guo et al.; Naeini
et al. 2015). The fit reads log-probabilities, which for a softmax model differ from
the logits by a constant per pixel (see :mod:`geoseg.models.temperature`).

Where the pixels come from matters: :func:`calibrate_checkpoint` fits on a training
run's own validation rasters (``geoseg train --val-images``), ``geoseg calibrate``
on a labelled raster the user names; never on the scenes a result is measured on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from geoseg.errors import CheckpointError, GeosegError
from geoseg.io.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from geoseg.io.training_data import LABEL_NODATA, LabelledRaster
from geoseg.models.cache import ModelSpec
from geoseg.models.ensemble import ENSEMBLE, load_ensemble
from geoseg.models.runtime import TorchPredictor, load_torch_predictor
from geoseg.tiling.confusion import remap_values
from geoseg.tiling.log_probabilities import LabelledPixels, labelled_log_probabilities
from geoseg.training.objectives import InMemoryLoader
from geoseg.types import NODATA_LABEL, ModelMeta, TileSpec

__all__ = [
    "ECE_BINS",
    "CalibrationFit",
    "calibrate_checkpoint",
    "calibrated_meta",
    "check_label_classes",
    "check_non_finite",
    "expected_calibration_error",
    "fit_calibration",
    "fit_temperature",
    "negative_log_likelihood",
    "warn_unknown_ids",
    "warn_unknown_val_ids",
]

log = logging.getLogger(__name__)

#: Confidence bins of the expected calibration error (Guo et al. 2017).
ECE_BINS = 15
#: Range of the fitted temperature; a fit at a bound says the data pin it no closer.
T_RANGE = (1e-2, 1e2)
#: Fewest labelled pixels a fit is made from.
MIN_PIXELS = 10
#: Share of the labelled pixels with data that the model may give NaN/inf before a
#: warning (fp16 overflow in a few windows), and before the fit is refused.
NON_FINITE_WARN, NON_FINITE_REFUSE = 1e-3, 0.5

#: Share of labelled pixels the model must agree with before a warning that the labels
#: may not describe the image: below it the fitted T mostly measures the mismatch.
AGREEMENT_WARN = 0.5

#: Share of labelled pixels with ids the model lacks past which a temperature fit warns
#: (they are left out of the fit, so the rest may not be the sample the user meant).
UNKNOWN_IDS_WARN = 0.01


@dataclass(frozen=True)
class CalibrationFit:
    """A fitted temperature and what it did on the fit pixels.

    Attributes:
        temperature: ``T`` relative to the scores it was fitted on.
        ece_before, ece_after: expected calibration error (15 bins), 0..1.
        nll_before, nll_after: mean negative log-likelihood, nats per pixel.
        pixels: labelled pixels the fit read.
    """

    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    pixels: int

    def to_json(self, temperature: float, **source: Any) -> dict[str, Any]:
        """The checkpoint record: the stored ``temperature`` (the product with an earlier
        one), the figures rounded to 4 digits and where the pixels came from."""
        return {
            "temperature": round(temperature, 4), "ece_bins": ECE_BINS,
            "ece_before": round(self.ece_before, 4), "ece_after": round(self.ece_after, 4),
            "nll_before": round(self.nll_before, 4), "nll_after": round(self.nll_after, 4),
            "pixels": self.pixels, **source,
        }  # fmt: skip


def _softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax of ``(N, K) float64``."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(scores: np.ndarray, target: np.ndarray, temperature: float) -> float:
    """Mean ``-log softmax(scores / T)[target]`` (nats) of ``(N, K)`` scores, ``(N,)`` classes."""
    z = scores.astype(np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(z)), target]))


def _slope(z: np.ndarray, zy: np.ndarray, b: float) -> float:
    """d NLL / d b of ``softmax(b z)``: ``mean(E_p[z] - z_y)`` (increasing in ``b``)."""
    return float(np.mean((_softmax(b * z) * z).sum(axis=1) - zy))


def fit_temperature(scores: np.ndarray, target: np.ndarray, iterations: int = 60) -> float:
    """The ``T`` in :data:`T_RANGE` minimising the NLL of ``softmax(scores / T)``.

    Args:
        scores: ``(N, K)`` logits or log-probabilities.
        target: ``(N,)`` class index ``0..K-1`` of each row.
        iterations: bisection steps on ``log(1 / T)`` (60 narrow the range to ~1e-16).

    Raises:
        GeosegError: fewer than :data:`MIN_PIXELS` rows, or scores that are not finite.
    """
    if len(target) < MIN_PIXELS:
        raise GeosegError(
            f"a temperature fit needs at least {MIN_PIXELS} labelled pixels of the model's "
            f"classes, got {len(target)}; give labels that cover more of the image"
        )
    z = scores.astype(np.float64)
    if not np.isfinite(z).all():
        raise GeosegError("the model gave non-finite scores; the checkpoint is damaged")
    zy = z[np.arange(len(z)), target]
    lo, hi = np.log(1 / T_RANGE[1]), np.log(1 / T_RANGE[0])  # log b, b = 1 / T
    if _slope(z, zy, np.exp(lo)) >= 0:
        return T_RANGE[1]
    if _slope(z, zy, np.exp(hi)) <= 0:
        return T_RANGE[0]
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _slope(z, zy, np.exp(mid)) < 0 else (lo, mid)
    return float(1 / np.exp(0.5 * (lo + hi)))


def expected_calibration_error(prob: np.ndarray, target: np.ndarray, bins: int = ECE_BINS) -> float:
    """``sum_b n_b / N |accuracy_b - confidence_b|`` over equal-width confidence bins.

    Args:
        prob: ``(N, K)`` class probabilities.
        target: ``(N,)`` class index of each row.
        bins: bins of the winning probability over ``(0, 1]``.
    """
    if len(target) == 0:
        return float("nan")
    conf = prob.max(axis=1)
    right = prob.argmax(axis=1) == target
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    n = np.bincount(which, minlength=bins)
    gap = np.bincount(which, weights=right - conf, minlength=bins)
    return float(np.abs(gap).sum() / len(target)) if n.sum() else float("nan")


def fit_calibration(scores: np.ndarray, target: np.ndarray) -> CalibrationFit:
    """Fit ``T`` on ``(N, K)`` scores and ``(N,)`` classes; ECE and NLL before and after.

    Raises:
        GeosegError: as :func:`fit_temperature`, or a fit that ran to a bound of
            :data:`T_RANGE`: pixels the model never gets wrong (e.g. one class only) or
            gets no better than chance pin no temperature, and ``T = 0.01`` (every
            probability 1) or ``T = 100`` (uniform) would be written as a calibration.
    """
    t = fit_temperature(scores, target)
    if t in T_RANGE:
        right = float(np.mean(scores.argmax(axis=1) == target))
        why = "never wrong there" if t == T_RANGE[0] else "no better than chance there"
        raise GeosegError(
            f"the labelled pixels pin no temperature: the fit ran to the bound T = {t:g} (the "
            f"model is right on {right:.1%} of them, {len(np.unique(target))} class(es) "
            f"labelled: {why}); give held-out labels of several classes that the model gets "
            "mostly, not always, right"
        )
    z = scores.astype(np.float64)
    return CalibrationFit(
        temperature=t,
        ece_before=expected_calibration_error(_softmax(z), target),
        ece_after=expected_calibration_error(_softmax(z / t), target),
        nll_before=negative_log_likelihood(z, target, 1.0),
        nll_after=negative_log_likelihood(z, target, t),
        pixels=len(target),
    )


def calibrated_meta(meta: ModelMeta, fit: CalibrationFit, **source: Any) -> ModelMeta:
    """``meta`` with ``T`` multiplied by the fit's (the scores carried the old one) and
    the fit recorded under ``metrics["calibration"]``."""
    t = meta.temperature * fit.temperature
    metrics = {**meta.metrics, "calibration": fit.to_json(t, **source)}
    return dataclasses.replace(meta, temperature=t, metrics=metrics)


def check_non_finite(pixels: LabelledPixels, model: str | os.PathLike[str]) -> None:
    """Warn when the model gave NaN/inf at more than :data:`NON_FINITE_WARN` of the
    labelled pixels with data (they are left out of the fit), refuse past half.

    Raises:
        CheckpointError: more than :data:`NON_FINITE_REFUSE` of them are NaN/inf.
    """
    if pixels.labelled == 0 or pixels.non_finite <= NON_FINITE_WARN * pixels.labelled:
        return
    share = pixels.non_finite / pixels.labelled
    what = (
        f"gave NaN or inf at {pixels.non_finite:,} of {pixels.labelled:,} labelled px ({share:.2%})"
    )
    if share > NON_FINITE_REFUSE:
        raise CheckpointError(
            f"{model}: {what}; the rest cannot speak for it (damaged weights, or scores past "
            "float16 on a GPU): check it with `geoseg predict`, or fit with --precision fp32"
        )
    log.warning(
        "%s: %s, left out of the temperature fit (scores past float16? fit with --precision "
        "fp32 to keep them)", model, what,
    )  # fmt: skip


def check_label_classes(
    scores: np.ndarray, target: np.ndarray, ids: Sequence[int], labels: str
) -> None:
    """Refuse labels of one class; warn when the model agrees with under
    :data:`AGREEMENT_WARN` of them.

    Args:
        scores: ``(N, K)`` log-probabilities of the labelled pixels (N > 0).
        target: ``(N,)`` their class indices ``0..K-1``.
        ids: the model's class ids, by index (named in the message).
        labels: the labels file(s), named in the message.

    Raises:
        GeosegError: every labelled pixel is of one class: the likelihood then only
            rewards being sure of that class, so ``T`` says nothing about how sure
            the model should be between classes.
    """
    present = np.unique(target)
    if present.size == 1:
        raise GeosegError(
            f"{labels}: every one of the {len(target):,} labelled px is class "
            f"{ids[int(present[0])]}; a temperature needs pixels of several classes (it "
            "scales how sure the model is between them): give held-out labels of two or more "
            f"of the model's classes ({', '.join(map(str, ids))})"
        )
    agree = float(np.mean(scores.argmax(axis=1) == target))
    if agree < AGREEMENT_WARN:
        log.warning(
            "%s: the model agrees with the labels on only %.1f%% of %s labelled px; check "
            "the labels describe this image (same scene, same class ids): the fitted T is "
            "then mostly about the mismatch", labels, 100 * agree, f"{len(target):,}",
        )  # fmt: skip


def warn_unknown_ids(
    labels: str, ref: da.Array, unknown: da.Array, labelled: da.Array, ids: Sequence[int]
) -> None:
    """Warn when over :data:`UNKNOWN_IDS_WARN` of the labelled pixels (``(H, W) bool``
    each) carry ids the model lacks: they are dropped from the fit unseen otherwise.

    Args:
        labels: the labels file, named in the message.
        ref: ``(H, W)`` label values as read.
        unknown: ``(H, W) bool``, labelled pixels whose value is not in ``ids``.
        labelled: ``(H, W) bool``, pixels that are not label nodata.
        ids: the model's class ids (named in the message).
    """
    n_unknown, n_labelled = (
        int(v) for v in da.compute(unknown.sum(), labelled.sum(), scheduler="sync")
    )
    if n_labelled == 0 or n_unknown <= UNKNOWN_IDS_WARN * n_labelled:
        return
    values = np.unique(ref[unknown].compute(scheduler="sync"))
    shown = ", ".join(str(int(v)) for v in values[:10]) + (", ..." if values.size > 10 else "")
    log.warning(
        "%s: %s of %s labelled px (%.1f%%) carry ids the model lacks (%s; the model's: %s), "
        "left out of the temperature fit; check the labels use the model's class ids",
        labels, f"{n_unknown:,}", f"{n_labelled:,}", 100 * n_unknown / n_labelled, shown,
        ", ".join(map(str, ids)),
    )  # fmt: skip


def warn_unknown_val_ids(r: LabelledRaster, labels: str, ids: Sequence[int]) -> None:
    """:func:`warn_unknown_ids` for a training run's validation raster, read before its
    labels are remapped (which turns the unknown ids into nodata): ``train`` and
    ``train --folds`` fit their temperature on these pixels as ``calibrate`` does."""
    ref = da.from_array(np.asarray(r.labels))
    nodata = (ref == LABEL_NODATA) | ((ref == NODATA_LABEL) & (NODATA_LABEL not in ids))
    labelled = ~nodata & da.from_array(np.asarray(r.valid))
    warn_unknown_ids(labels, ref, labelled & ~da.isin(ref, list(ids)), labelled, ids)


def _raster_scores(
    r: LabelledRaster, loader: InMemoryLoader, meta: ModelMeta, tile: TileSpec
) -> LabelledPixels:
    """Log-probabilities and class indices of the labelled pixels of one raster."""
    chunks = (r.image.shape[0], tile.chunk, tile.chunk)
    index = remap_values(r.labels, {c: k for k, c in enumerate(meta.schema.ids)})
    return labelled_log_probabilities(
        da.from_array(r.image, chunks=chunks), da.from_array(r.valid, chunks=chunks[1:]),
        da.from_array(index, chunks=chunks[1:]), loader, tile, len(meta.schema),
        scheduler="sync",
    )  # fmt: skip


def calibrate_checkpoint(
    path: str | os.PathLike[str], val: Sequence[LabelledRaster], device: str = "cpu"
) -> CalibrationFit | None:
    """Fit the temperature of a trained per-pixel checkpoint (an ensemble's: of its mean
    probabilities) on its validation rasters and store it in the file (weights
    unchanged); None when they hold too few labelled pixels or the model gives NaN/inf
    at most of them (the checkpoint is left uncalibrated, T = 1, and a warning says so)."""
    predictor = _trained_predictor(path, device)
    meta = predictor.meta
    tile = TileSpec(window=meta.window, margin=meta.margin, chunk_windows=4, batch_size=8)
    loader = InMemoryLoader(predictor)
    parts = [_raster_scores(r, loader, meta, tile) for r in val]
    scores = np.concatenate([p.scores for p in parts])
    target = np.concatenate([p.target for p in parts])
    pixels = LabelledPixels(scores, target, sum(p.labelled for p in parts),
                            sum(p.non_finite for p in parts))  # fmt: skip
    try:
        check_non_finite(pixels, path)
        if len(target):
            where = f"the labels of {', '.join(r.path for r in val)}"
            check_label_classes(scores, target, meta.schema.ids, where)
        fit = fit_calibration(scores, target)
    except GeosegError as exc:
        log.warning("%s: not calibrated (T = 1): %s", path, exc)
        return None
    tensors, stored = load_checkpoint(path)
    source = {"fitted_on": "validation rasters", "images": [r.path for r in val]}
    save_checkpoint(path, tensors, calibrated_meta(stored, fit, **source), overwrite=True)
    return fit


def _trained_predictor(path: str | os.PathLike[str], device: str) -> TorchPredictor:
    """The predictor ``predict`` runs for the checkpoint: an ensemble's averages its
    members' probabilities (a plain one would take a softmax of those)."""
    if read_checkpoint_meta(path).arch == ENSEMBLE:
        return load_ensemble(ModelSpec(os.fspath(path), device), None)
    return load_torch_predictor(path, device)
