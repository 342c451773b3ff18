"""Relative radiometric normalisation: IR-MAD invariant pixels and orthogonal fits."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from geoseg.change.radiometric import (
    MIN_BAND_CORRELATION,
    MIN_INVARIANT_PIXELS,
    date_band_groups,
    fit_dates,
    normalize_scene,
    normalized,
    orthogonal_fit,
)
from geoseg.errors import BandMismatchError, GeosegError
from geoseg.io.raster import open_scene
from tests.conftest import textured_scene

GAINS = np.array([0.8, 1.1, 0.9, 1.25])  # date 1 = gain * date 2 + offset
OFFSETS = np.array([120.0, -60.0, 40.0, 200.0])
GROUPS = [[0, 1, 2, 3], [4, 5, 6, 7]]
CHANGED = (slice(50, 150), slice(40, 140))  # 100 x 100 px of the 300 x 240 scene, 14 %


def _pair(noise: float = 10.0) -> np.ndarray:
    """``(8, 300, 240) float32``: a textured date, then the same date under another
    radiometry (inverse of GAINS/OFFSETS) plus noise, with a block of other land."""
    a = textured_scene(300, 240, bands=4, seed=1).astype(np.float64)
    b = (a - OFFSETS[:, None, None]) / GAINS[:, None, None]
    b += np.random.default_rng(5).normal(0.0, noise, a.shape)
    b[:, CHANGED[0], CHANGED[1]] = textured_scene(300, 240, bands=4, seed=9)[:, *CHANGED]
    return np.concatenate([a, b]).astype(np.float32)


def _fit(stack: np.ndarray, chunk: int = 64) -> list:
    data = da.from_array(stack, chunks=(8, chunk, chunk))
    usable = da.ones(stack.shape[1:], dtype=bool, chunks=chunk)
    return fit_dates(data, usable, GROUPS, "pair.tif")


def test_a_known_gain_and_offset_are_recovered_despite_a_changed_block() -> None:
    stack = _pair()
    (fit,) = _fit(stack)
    # Tolerance: 10 DN noise on bands spanning 300-4000 DN gives a slope standard error
    # near 4e-4 on thousands of invariant pixels; 0.5 % (gain) and 10 DN (offset) are
    # over ten standard errors, and far inside the bias the changed block causes when it
    # is not excluded (asserted below).
    np.testing.assert_allclose(fit.gains, GAINS, rtol=0.005)
    np.testing.assert_allclose(fit.offsets, OFFSETS, atol=10.0)
    assert fit.invariant >= MIN_INVARIANT_PIXELS and 0.02 < fit.invariant_share < 0.86
    x, y = stack[:4].reshape(4, -1).astype(float), stack[4:].reshape(4, -1).astype(float)
    naive = np.array([orthogonal_fit(x[i], y[i]) for i in range(4)])
    assert np.max(np.abs(naive[:, 0] / GAINS - 1)) > 0.03  # all pixels: biased past 3 %
    assert np.max(np.abs(naive[:, 1] - OFFSETS)) > 100


def test_no_changed_pixel_is_taken_as_invariant() -> None:
    from geoseg.change.radiometric import invariant_pixels

    stack = _pair()
    x, y = stack[:4].reshape(4, -1).T.astype(float), stack[4:].reshape(4, -1).T.astype(float)
    inside = np.zeros(stack.shape[1:], bool)
    inside[CHANGED] = True
    chosen = invariant_pixels(x, y)
    assert chosen.sum() > 1000 and not chosen[inside.ravel()].any()


def test_identical_dates_are_left_as_they_are() -> None:
    a = textured_scene(120, 100, bands=4, seed=2).astype(np.float32)
    stack = np.concatenate([a, a])
    (fit,) = _fit(stack, 50)
    assert fit.gains == (1.0,) * 4 and fit.offsets == (0.0,) * 4
    assert fit.invariant == fit.sampled == 120 * 100
    out = normalized(da.from_array(stack, chunks=(8, 50, 50)), GROUPS, [fit]).compute()
    np.testing.assert_array_equal(out, stack)


def test_the_fit_is_deterministic_and_chunk_size_invariant() -> None:
    stack = _pair()
    fits = [_fit(stack, c) for c in (64, 64, 97)]
    assert all(f == fits[0] for f in fits)
    outs = [
        normalized(da.from_array(stack, chunks=c), GROUPS, fits[0], nodata=0).compute()
        for c in ((3, 37, 53), (8, 64, 64), (8, 300, 240))
    ]
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])
    assert outs[0].dtype == np.float32
    np.testing.assert_array_equal(outs[0][:4], stack[:4])  # date 1 is the reference
    inside = np.zeros(stack.shape[1:], bool)
    inside[CHANGED] = True
    # unchanged pixels of date 2 now match date 1 to the noise (10 DN x gain)
    assert np.abs(outs[0][4:] - stack[:4])[:, ~inside].mean() < 12


def test_orthogonal_fit_by_hand() -> None:
    t = np.array([1.0, 2.0, 3.0, 4.0])
    assert orthogonal_fit(2.0 * t + 3.0, t) == pytest.approx((2.0, 3.0))
    # reference 0,2,2,4 against target 0,0,2,2 (hand: sxx=2, syy=1, sxy=1):
    # gain = (2 - 1 + sqrt(1 + 4)) / 2 = 1.618..., offset = 2 - gain * 1
    gain, offset = orthogonal_fit(np.array([0.0, 2, 2, 4]), np.array([0.0, 0, 2, 2]))
    assert gain == pytest.approx((1 + 5**0.5) / 2) and offset == pytest.approx(2 - gain)


def test_date_band_groups_follow_the_stack_names() -> None:
    names = ["t1_B02", "t1_B08", "t2_B02", "t2_B08", "t3_B02", "t3_B08"]
    assert date_band_groups(names, "s.tif") == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["t1_B02", "t1_B08", "t2_B02", "t2_B04"], "date 2 has bands"),
        (["B02", "B08"], "not named t<date>_<band>"),
        (["t1_B02", "t1_B08"], "one date only"),
    ],
)
def test_dates_whose_bands_differ_are_refused(names: list[str], message: str) -> None:
    with pytest.raises(BandMismatchError, match=message):
        date_band_groups(names, "s.tif")


def test_too_few_invariant_pixels_are_refused() -> None:
    stack = _pair()
    data = da.from_array(stack, chunks=(8, 64, 64))
    usable = da.ones(stack.shape[1:], dtype=bool, chunks=64)
    with pytest.raises(GeosegError, match=r"date 2: \d+ invariant pixels of 120 sampled"):
        fit_dates(data, usable, GROUPS, "pair.tif", max_pixels=120)


def test_unrelated_dates_are_refused() -> None:
    a = textured_scene(200, 200, bands=4, seed=3).astype(np.float32)
    b = textured_scene(200, 200, bands=4, seed=4).astype(np.float32)  # a cloud deck, say
    data = da.from_array(np.concatenate([a, b]), chunks=(8, 100, 100))
    usable = da.ones((200, 200), dtype=bool, chunks=100)
    with pytest.raises(GeosegError, match="most bands hardly correlate with date 1"):
        fit_dates(data, usable, GROUPS, "pair.tif")


def test_a_band_without_ground_signal_keeps_its_values() -> None:
    stack = _pair().astype(np.float64)
    stack[7] = np.random.default_rng(1).normal(1000, 50, stack.shape[1:])  # date 2, band 4
    (fit,) = _fit(stack.astype(np.float32))
    assert fit.correlations[3] < MIN_BAND_CORRELATION
    assert (fit.gains[3], fit.offsets[3]) == (1.0, 0.0)
    np.testing.assert_allclose(fit.gains[:3], GAINS[:3], rtol=0.005)


def test_slovenia_clear_dates(shared_data: Path, tmp_path: Path) -> None:
    """July 11 -> August 30 and September 9 2015 (13 bands): the fit halves the mean
    date-to-date difference; a date under clouds (July 31) is refused."""
    from geoseg.io.stack import stack_dates

    folder = shared_data / "eolearn_slovenia_lulc" / "geotiff"
    first = folder / "s2_l1c_2015-07-11.tif"
    for date, share in (("2015-08-30", 0.243), ("2015-09-09", 0.257), ("2015-07-31", None)):
        scene = open_scene(stack_dates([first, folder / f"s2_l1c_{date}.tif"], tmp_path / date))
        if share is None:
            with pytest.raises(GeosegError, match="hardly correlate with date 1"):
                normalize_scene(scene, scene.band_names)
            continue
        out, (fit,) = normalize_scene(scene, scene.band_names)
        assert fit.sampled == 10_100 and fit.invariant_share == pytest.approx(share, abs=0.01)
        assert fit.correlations[10] < MIN_BAND_CORRELATION and fit.gains[10] == 1.0  # B10
        raw, values = scene.data.values.astype(float), out.data.values.astype(float)
        keep = [b for b in range(13) if b != 10]
        before = np.abs(raw[13:] - raw[:13])[keep].mean()
        after = np.abs(values[13:] - raw[:13])[keep].mean()
        assert after < 0.6 * before  # measured: 0.0233 -> 0.0102, 0.0243 -> 0.0132
