"""Areas on the report page are rounded to about one pixel's area."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.change.matrix import TransitionMatrix
from geoseg.report.numbers import AreaFormat, area_decimals


@pytest.mark.parametrize(
    ("pixel_m2", "unit_m2", "decimals"),
    [
        (100.0, 1e4, 2),  # 10 m pixels: 0.01 ha
        (900.0, 1e4, 1),  # 30 m (Landsat): 0.09 ha -> tenths
        (62_500.0, 1e4, -1),  # 250 m (MODIS): 6.25 ha -> tens of hectares
        (20_000.0, 1e4, 0),  # 2 ha -> whole hectares
        (1e6, 1e4, -2),  # 1 km: 100 ha -> hundreds
        (100.0, 1e6, 4),  # 10 m pixels in km²
        (0.25, 1e4, 5),  # 0.5 m aerial: 0.000025 ha
        (0.0, 1e4, 2),  # unknown: a fixed default
        (float("nan"), 1e4, 2),
    ],
)
def test_decimals_follow_the_pixel_area(pixel_m2: float, unit_m2: float, decimals: int) -> None:
    assert area_decimals(pixel_m2, unit_m2) == decimals


def test_area_text_rounds_to_the_pixel() -> None:
    ten_m, thirty_m, km = AreaFormat(100.0), AreaFormat(900.0), AreaFormat(1e6)
    assert ten_m.text(4_185_444.207) == "418.54 ha"
    assert ten_m.number(4_185_444.207, "km²") == "4.1854"
    assert thirty_m.text(4_185_444.207) == "418.5 ha"
    assert km.text(4_185_444.207) == "400 ha"
    assert ten_m.number(-0.4) == "0.00"  # no "-0.00"
    assert ten_m.signed(3_697_456.69) == "+369.75"
    assert ten_m.signed(-3_131_604.64) == "-313.16"
    assert ten_m.signed(0.0) == "0.00"


def test_pixel_area_of_a_matrix_counts_nodata_pixels_too() -> None:
    m = TransitionMatrix(
        (1, 2), ("a", "b"), np.array([[300.0, 100.0], [0.0, 0.0]]), np.array([[3, 1], [0, 0]]),
        nodata_area_m2=100.0, nodata_pixels=1,
    )  # fmt: skip
    assert AreaFormat.of(m).pixel_m2 == 100.0
