"""Training augmentation for change models: simulated date-to-date differences.

Two dates of one place differ without any change on the ground: sun and view
angles, atmosphere and sensor calibration shift brightness, contrast and colour;
haze veils one date; co-registration is off by a pixel or two. A change model that
never saw such differences calls them change (radiometric differences dominate
false change). :func:`shift_date2` draws them onto **date 2** of each training
window: date 1 is the reference and is never touched, so the labels stay on its
grid (the same convention as normalising each date to the first).

Per window, in this order, on date 2's bands (values as stored, before the
model's normalization):

1. colour: each band times its own gain ``U(1 - colour, 1 + colour)``;
2. brightness: all bands times one gain ``U(1 - brightness, 1 + brightness)``;
3. contrast: ``m + c (x - m)``, ``c ~ U(1 - contrast, 1 + contrast)``, ``m`` the band's
   window mean;
4. haze (Koschmieder's model): ``t x + (1 - t) A``, transmission ``t ~ U(1 - haze, 1)``,
   airlight ``A`` the band's 99th percentile in the window;
5. co-registration jitter: date 2 moved by ``(dy, dx)``, each drawn from
   ``-shift_px .. shift_px`` px, edge pixels repeated into the gap.

``geoseg train`` applies it to change tasks when asked (``date_augment: true`` in
``--config``; see :func:`dates_to_shift`). It is off by default: on the LEVIR-CD
sample pairs (one sensor, co-registered) it cost 0.10 validation mIoU and 0.10
held-out change F1 (early fusion, 12 epochs, seed 0); it is meant for models that
must carry over to pairs whose dates differ more than their training pairs did.

:func:`swap_dates` is the other change augmentation (``swap_dates: true``): a change
label says that something differs between the dates, not in which order, so each
window's two dates are exchanged with probability 1/2 (free extra pairs for models
that are not symmetric in the dates, early fusion and ``siam-conc``; ``siam-diff``'s
``|f1 - f2|`` is unchanged by it). Swapping comes before the shift, so the shift
still falls on whatever date 2 then is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.models.siamese import date_split
from geoseg.training.sampling import Batch

__all__ = ["DateShift", "dates_to_shift", "shift_date2", "shift_window", "swap_dates"]


@dataclass(frozen=True)
class DateShift:
    """The ranges of the simulated differences (module docstring); 0 switches one off."""

    colour: float = 0.1
    brightness: float = 0.2
    contrast: float = 0.2
    haze: float = 0.3
    shift_px: int = 2


def dates_to_shift(task: str, date_augment: bool, bands: Sequence[str]) -> int | None:
    """Bands per date to shift date 2 of (or swap), or None for no date augmentation.

    Args:
        task: the training task.
        date_augment: ``TrainConfig.date_augment`` (or ``swap_dates``).
        bands: the training rasters' band names.

    Raises:
        BandMismatchError: on, but the bands do not name two dates (``geoseg stack``).
    """
    if task != "change" or not date_augment:
        return None  # TrainConfig refuses date_augment for other tasks
    return date_split(bands)


def _shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``(C, H, W)`` moved by ``(dy, dx)`` px, edge pixels repeated into the gap."""
    h, w = x.shape[-2:]
    pad = np.pad(x, ((0, 0), (abs(dy),) * 2, (abs(dx),) * 2), mode="edge")
    return pad[:, abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


def shift_window(x: np.ndarray, rng: np.random.Generator, ranges: DateShift) -> np.ndarray:
    """One date's ``(C, H, W) float32`` window with simulated differences (a copy)."""
    c = x.shape[0]
    colour = rng.uniform(1 - ranges.colour, 1 + ranges.colour, size=(c, 1, 1))
    bright = rng.uniform(1 - ranges.brightness, 1 + ranges.brightness)
    contrast = rng.uniform(1 - ranges.contrast, 1 + ranges.contrast)
    transmission = rng.uniform(1 - ranges.haze, 1)
    dy, dx = (int(v) for v in rng.integers(-ranges.shift_px, ranges.shift_px + 1, size=2))
    y = x.astype(np.float64) * colour * bright
    mean = y.mean(axis=(1, 2), keepdims=True)
    y = mean + contrast * (y - mean)
    airlight = np.percentile(y, 99, axis=(1, 2), keepdims=True)
    y = transmission * y + (1 - transmission) * airlight
    return _shifted(y, dy, dx).astype(np.float32)


def shift_date2(
    batch: Batch, rng: np.random.Generator, per_date: int, ranges: DateShift = DateShift()
) -> Batch:
    """The batch with date 2 of every window shifted (:func:`shift_window`); date 1,
    the valid mask, targets and ids unchanged.

    Args:
        batch: ``image (B, 2 * per_date, W, W)``: date 1's bands, then date 2's.
        rng: the run's seeded generator (same seed, same shifts).
        per_date: bands per date.
        ranges: the ranges of the differences.
    """
    image = batch.image.copy()
    for k in range(image.shape[0]):
        image[k, per_date:] = shift_window(image[k, per_date:], rng, ranges)
    return dataclasses.replace(batch, image=image)


def swap_dates(batch: Batch, rng: np.random.Generator, per_date: int) -> Batch:
    """The batch with each window's two dates exchanged with probability 1/2 (a copy);
    the valid mask, targets and ids unchanged (a change label is symmetric in the dates).

    Args:
        batch: ``image (B, 2 * per_date, W, W)``: date 1's bands, then date 2's.
        rng: the run's seeded generator (one draw of ``B`` uniforms).
        per_date: bands per date.
    """
    image = batch.image.copy()
    swap = rng.random(image.shape[0]) < 0.5
    image[swap] = np.concatenate([image[swap, per_date:], image[swap, :per_date]], axis=1)
    return dataclasses.replace(batch, image=image)
