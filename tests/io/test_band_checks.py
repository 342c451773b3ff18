"""Bands without one valid value (geoseg.io.band_checks)."""

from __future__ import annotations

import dask.array as da
import numpy as np

from geoseg.io.band_checks import empty_band_text, empty_bands


def test_a_band_is_empty_when_no_value_is_finite_and_not_its_nodata() -> None:
    data = np.ones((5, 6, 7), np.float32)
    data[0] = np.nan
    data[1] = np.inf
    data[1, 5, 6] = 2.0  # one valid value is enough
    data[2] = 0.0  # all nodata (0) for its file
    data[3] = 0.0  # the same values, no nodata value: valid
    data[4, :3] = np.nan
    data[4, 3:] = -np.inf
    nodata = [None, None, 0.0, None, None]
    empty = empty_bands(da.from_array(data, chunks=(5, 4, 4)), nodata)
    assert empty.tolist() == [True, False, True, False, True]


def test_integer_bands_are_empty_only_when_all_nodata() -> None:
    data = np.zeros((2, 3, 3), np.uint16)
    data[1, 2, 2] = 7
    assert empty_bands(da.from_array(data), [0, 0]).tolist() == [True, False]
    assert empty_bands(da.from_array(data), [None, None]).tolist() == [False, False]


def test_the_text_names_each_band() -> None:
    assert empty_band_text(["B04"]) == (
        "band B04 holds no valid value (every value is NaN or infinite)"
    )
    assert empty_band_text(["B04", "B08"], 0) == (
        "bands B04, B08 hold no valid value (every value is NaN, infinite or the nodata value 0)"
    )
