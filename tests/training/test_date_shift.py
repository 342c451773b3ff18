"""Simulated date-to-date differences for change training (geoseg/training/date_shift.py)."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import BandMismatchError, ConfigError
from geoseg.training.config import TrainConfig
from geoseg.training.date_shift import (
    DateShift,
    dates_to_shift,
    shift_date2,
    shift_window,
    swap_dates,
)
from geoseg.training.sampling import Batch
from geoseg.types import ClassInfo, ClassSchema

PAIR = ("t1_red", "t1_green", "t1_blue", "t2_red", "t2_green", "t2_blue")
OFF = DateShift(colour=0, brightness=0, contrast=0, haze=0, shift_px=0)


def _batch(seed: int = 0, n: int = 4, w: int = 16) -> Batch:
    rng = np.random.default_rng(seed)
    image = rng.uniform(10, 250, size=(n, 6, w, w)).astype(np.float32)
    target = rng.integers(0, 2, size=(n, w, w)).astype(np.int64)
    return Batch(image, np.ones((n, w, w), bool), target, target * 7)


def test_date_1_labels_valid_and_ids_are_untouched() -> None:
    batch = _batch()
    out = shift_date2(batch, np.random.default_rng(1), 3)
    assert np.array_equal(out.image[:, :3], batch.image[:, :3])
    assert not np.allclose(out.image[:, 3:], batch.image[:, 3:])
    assert out.target is batch.target and out.valid is batch.valid and out.ids is batch.ids
    assert out.image.dtype == np.float32 and out.image.shape == batch.image.shape


def test_same_seed_same_shifts_other_seed_others() -> None:
    batch = _batch()
    a = shift_date2(batch, np.random.default_rng(5), 3).image
    b = shift_date2(batch, np.random.default_rng(5), 3).image
    c = shift_date2(batch, np.random.default_rng(6), 3).image
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_all_ranges_off_is_the_identity() -> None:
    batch = _batch()
    assert np.array_equal(shift_date2(batch, np.random.default_rng(0), 3, OFF).image, batch.image)


def _ratio(ranges: DateShift, seed: int) -> np.ndarray:
    x = _batch(seed).image[0, 3:]
    return shift_window(x, np.random.default_rng(seed), ranges) / x


@pytest.mark.parametrize("seed", range(6))
def test_brightness_is_one_gain_for_all_bands_within_its_range(seed: int) -> None:
    ratio = _ratio(DateShift(0, 0.2, 0, 0, 0), seed)
    assert np.allclose(ratio, ratio.flat[0], rtol=1e-5)
    assert 0.8 <= ratio.flat[0] <= 1.2


@pytest.mark.parametrize("seed", range(6))
def test_colour_is_one_gain_per_band_within_its_range(seed: int) -> None:
    ratio = _ratio(DateShift(0.1, 0, 0, 0, 0), seed)
    gains = ratio.reshape(3, -1)
    assert np.allclose(gains, gains[:, :1], rtol=1e-5)
    assert ((gains >= 0.9) & (gains <= 1.1)).all()


@pytest.mark.parametrize("seed", range(6))
def test_contrast_keeps_band_means_and_scales_spread_within_its_range(seed: int) -> None:
    x = _batch(seed).image[0, 3:].astype(np.float64)
    y = shift_window(x.astype(np.float32), np.random.default_rng(seed), DateShift(0, 0, 0.2, 0, 0))
    assert np.allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=1e-5)
    spread = y.std(axis=(1, 2)) / x.std(axis=(1, 2))
    assert np.allclose(spread, spread[0], rtol=1e-4) and 0.8 <= spread[0] <= 1.2


@pytest.mark.parametrize("seed", range(6))
def test_haze_pulls_every_pixel_towards_the_airlight(seed: int) -> None:
    x = _batch(seed).image[0, 3:].astype(np.float64)
    y = shift_window(x.astype(np.float32), np.random.default_rng(seed), DateShift(0, 0, 0, 0.3, 0))
    airlight = np.percentile(x, 99, axis=(1, 2), keepdims=True)
    t = (y - airlight) / (x - airlight)  # the one transmission of the window
    assert np.allclose(t, t.flat[0], rtol=1e-3) and 0.7 <= t.flat[0] <= 1.0


@pytest.mark.parametrize("seed", range(8))
def test_jitter_moves_date_2_by_at_most_2_px_edges_repeated(seed: int) -> None:
    x = _batch(seed).image[0, 3:]
    y = shift_window(x, np.random.default_rng(seed), DateShift(0, 0, 0, 0, 2))
    found = [
        (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
        if np.array_equal(y[:, 2:-2, 2:-2], x[:, 2 - dy : 14 - dy, 2 - dx : 14 - dx])
    ]  # fmt: skip
    assert len(found) == 1
    assert set(np.unique(y)) <= set(np.unique(x))  # the gap holds repeated edge pixels


def test_jitter_draws_every_offset_up_to_2_px_and_no_more() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(36, dtype=np.float32).reshape(1, 6, 6)
    seen = set()
    for _ in range(300):
        v = int(shift_window(x, rng, DateShift(0, 0, 0, 0, 2))[0, 3, 3])
        seen.add((3 - v // 6, 3 - v % 6))  # y[3, 3] = x[3 - dy, 3 - dx]
    assert seen == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}


def _config(task: str, date_augment: bool, swap: bool = False) -> TrainConfig:
    schema = ClassSchema((ClassInfo(0, "same", (0, 0, 0)), ClassInfo(1, "changed", (9, 9, 9))))
    return TrainConfig(("a.tif",), ("b.tif",), schema, "m.safetensors", task=task,
                       date_augment=date_augment, swap_dates=swap)  # fmt: skip


@pytest.mark.parametrize(
    ("task", "date_augment", "bands", "per_date"),
    [
        ("change", False, PAIR, None),  # off by default
        ("change", False, ("r", "g", "b", "r", "g", "b"), None),
        ("change", True, PAIR, 3),
        ("semantic", False, PAIR, None),
    ],
)
def test_dates_to_shift(
    task: str, date_augment: bool, bands: tuple[str, ...], per_date: int | None
) -> None:
    assert dates_to_shift(task, date_augment, bands) == per_date


def test_asking_for_it_without_two_named_dates_or_for_another_task_is_an_error() -> None:
    with pytest.raises(BandMismatchError, match="geoseg stack"):
        dates_to_shift("change", True, ("r", "g", "b", "r", "g", "b"))
    with pytest.raises(ConfigError, match="needs --task change, not --task semantic"):
        _config("semantic", True)
    assert _config("change", True).date_augment is True


def test_swap_dates_exchanges_whole_dates_of_about_half_the_windows() -> None:
    batch = _batch(n=200, w=4)
    out = swap_dates(batch, np.random.default_rng(3), 3)
    kept = [np.array_equal(o, x) for o, x in zip(out.image, batch.image, strict=True)]
    swapped = [
        np.array_equal(o[:3], x[3:]) and np.array_equal(o[3:], x[:3])
        for o, x in zip(out.image, batch.image, strict=True)
    ]
    assert all(k != s for k, s in zip(kept, swapped, strict=True))  # one or the other, never both
    assert 70 <= sum(swapped) <= 130  # Binomial(200, 1/2): mean 100, sd 7.1; 4.2 sd either side
    assert out.target is batch.target and out.valid is batch.valid and out.ids is batch.ids
    assert np.array_equal(swap_dates(out, np.random.default_rng(3), 3).image, batch.image)


def test_swap_dates_needs_the_change_task() -> None:
    with pytest.raises(ConfigError, match=r"swap_dates alters the dates .* not --task semantic"):
        _config("semantic", False, swap=True)
    assert _config("change", False, swap=True).swap_dates is True
