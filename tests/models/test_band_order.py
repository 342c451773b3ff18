"""geoseg.models.bands: is the band order a guess, and does the scene contradict it?"""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.models.bands import (
    BandRoles,
    band_order_doubt,
    band_order_is_guess,
    swapped_red_blue,
)

UNNAMED = (None, None, None)


@pytest.mark.parametrize(
    ("descriptions", "colorinterp", "overrides", "sensor", "guess"),
    [
        (UNNAMED, ("gray", "undefined", "undefined"), None, None, True),
        (UNNAMED, ("red", "green", "blue"), None, None, True),  # GDAL's 8-bit default
        (UNNAMED, ("red", "green", "blue", "alpha"), None, None, True),
        (UNNAMED, ("blue", "green", "red"), None, None, False),  # set on purpose
        (("blue", "green", "red"), ("gray", "undefined", "undefined"), None, None, False),
        (("B02", "B03", "B04", "B08"), ("gray",) * 4, None, None, False),
        (UNNAMED, ("gray", "undefined", "undefined"), {"red": 3, "blue": 1}, None, False),
        (UNNAMED, ("red", "green", "blue", "undefined"), {"nir": 4}, None, True),
        (UNNAMED, ("gray", "undefined", "undefined"), None, "rgb", False),
        ((None,) * 4, ("gray",) + ("undefined",) * 3, None, None, False),  # no guess made
    ],
)
def test_band_order_is_guess(
    descriptions: tuple[str | None, ...],
    colorinterp: tuple[str, ...],
    overrides: dict[str, int] | None,
    sensor: str | None,
    guess: bool,
) -> None:
    assert band_order_is_guess(descriptions, colorinterp, overrides, sensor) is guess


def _pixels(dark: tuple[float, float, float], bright: tuple[float, float, float]) -> np.ndarray:
    """``(3, 1000)``: 300 dark pixels, 700 bright ones, each a little brighter or darker."""
    rng = np.random.default_rng(0)
    values = np.concatenate([np.tile(dark, (300, 1)), np.tile(bright, (700, 1))]).T
    return values * rng.uniform(0.95, 1.05, size=(1, values.shape[1]))


@pytest.mark.parametrize(
    ("dark", "doubt"),
    [
        ((0.02, 0.04, 0.07), False),  # water, blue > red: as a satellite sees it
        ((0.07, 0.04, 0.02), True),  # the same stored B, G, R
        ((0.06, 0.05, 0.055), False),  # a little redder than blue: too close to call
    ],
)
def test_band_order_doubt_needs_clearly_red_dark_pixels(
    dark: tuple[float, float, float], doubt: bool
) -> None:
    r, g, b = _pixels(dark, (0.2, 0.16, 0.11))
    reason = band_order_doubt(r, g, b)
    assert (reason is not None) is doubt
    if doubt:
        assert reason is not None and "= +0.56 in the median" in reason  # (7 - 2) / (7 + 2)
        assert "red > blue in 100% of them" in reason


def test_band_order_doubt_says_nothing_about_a_handful_of_pixels() -> None:
    r, g, b = _pixels((0.07, 0.04, 0.02), (0.2, 0.16, 0.11))[:, :99]
    assert band_order_doubt(r, g, b) is None


@pytest.mark.parametrize(
    ("mapping", "option"),
    [
        ({"red": 0, "green": 1, "blue": 2}, "--bands red=3,green=2,blue=1"),
        ({"red": 0, "green": 1, "blue": 2, "nir": 3}, "--bands red=3,green=2,blue=1,nir=4"),
        ({"red": 0, "green": 1, "nir": 2}, "--bands red=1,green=2,nir=3"),
    ],
)
def test_swapped_red_blue(mapping: dict[str, int], option: str) -> None:
    assert swapped_red_blue(BandRoles.from_mapping(mapping)) == option
