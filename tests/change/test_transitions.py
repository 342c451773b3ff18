from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from affine import Affine
from pyproj import Geod

from geoseg.areas import ACRE_M2
from geoseg.change.transitions import transition_codes, transition_matrix
from geoseg.errors import GeosegError

IDS = (1, 4, 9)
NAMES = ("forest", "water", "urban")
BEFORE = np.array([[1, 1, 4, 9], [1, 255, 4, 9], [9, 9, 4, 1]], np.uint8)
AFTER = np.array([[1, 9, 4, 9], [4, 1, 255, 9], [9, 9, 1, 7]], np.uint8)  # 7 is not a class
# hand-counted pixels (rows from, cols to: forest, water, urban)
EXPECTED_PIXELS = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 4]])
EXPECTED_NODATA = 3  # 255 before, 255 after, 7 after


def _matrix(before, after, crs, transform, chunk=2, **kw):
    return transition_matrix(
        da.from_array(before, chunks=chunk), da.from_array(after, chunks=chunk), crs, transform,
        IDS, NAMES, **kw,
    )  # fmt: skip


def test_codes_mark_nodata_and_unknown_classes() -> None:
    codes = transition_codes(BEFORE, AFTER, IDS)
    assert codes[0].tolist() == [0, 2, 4, 8]
    assert codes[1, 1] == codes[1, 2] == codes[2, 3] == 9


def test_equal_area_grid_gives_a_times_e_per_pixel() -> None:
    # EPSG:6933 is equal-area on the WGS84 ellipsoid: a pixel's true area is |a·e|
    transform = Affine(30, 0, 1_000_000, 0, -20, 4_000_000)
    m = _matrix(BEFORE, AFTER, "EPSG:6933", transform)
    np.testing.assert_array_equal(m.pixels, EXPECTED_PIXELS)
    assert m.nodata_pixels == EXPECTED_NODATA
    np.testing.assert_allclose(m.area_m2, EXPECTED_PIXELS * 600.0, rtol=1e-9, atol=0)
    assert m.nodata_area_m2 == pytest.approx(3 * 600.0, rel=1e-9)
    np.testing.assert_allclose(m.area("ha"), EXPECTED_PIXELS * 0.06, rtol=1e-9)
    np.testing.assert_allclose(m.area("acres"), EXPECTED_PIXELS * 600 / ACRE_M2, rtol=1e-9)
    np.testing.assert_allclose(m.area("km2"), EXPECTED_PIXELS * 6e-4, rtol=1e-9)


def test_geographic_pixels_match_geod_polygon_areas() -> None:
    transform = Affine(0.001, 0, 10.0, 0, -0.001, 60.0)
    m = _matrix(BEFORE, AFTER, "EPSG:4326", transform)
    geod = Geod(ellps="WGS84")
    expected = np.zeros((3, 3))
    index = {c: i for i, c in enumerate(IDS)}
    for r in range(3):
        # densified along parallels: Geod joins vertices by geodesics, pixels follow parallels
        lons = list(np.linspace(10.0, 10.001, 50))
        top, bottom = 60.0 - 0.001 * r, 60.0 - 0.001 * (r + 1)
        for c in range(4):
            if BEFORE[r, c] not in index or AFTER[r, c] not in index:
                continue
            x = [v + 0.001 * c for v in lons]
            area, _ = geod.polygon_area_perimeter(x + x[::-1], [top] * len(x) + [bottom] * len(x))
            expected[index[BEFORE[r, c]], index[AFTER[r, c]]] += abs(area)
    np.testing.assert_allclose(m.area_m2, expected, rtol=1e-7)


def test_cells_plus_nodata_equal_total_area() -> None:
    transform = Affine(10, 0, 500_000, 0, -10, 5_100_000)
    m = _matrix(BEFORE, AFTER, "EPSG:32633", transform)
    from geoseg.areas import pixel_area_m2

    total = pixel_area_m2("EPSG:32633", transform, np.arange(3), np.arange(4)).sum()
    assert m.total_area_m2 == pytest.approx(total, rel=1e-12)
    assert int(m.pixels.sum()) + m.nodata_pixels == BEFORE.size


def test_net_and_gross_change() -> None:
    m = _matrix(BEFORE, AFTER, "EPSG:6933", Affine(10, 0, 0, 0, -10, 0))
    np.testing.assert_array_equal(m.gross_gain_pixels(), [1, 1, 1])
    np.testing.assert_array_equal(m.gross_loss_pixels(), [2, 1, 0])
    np.testing.assert_allclose(m.net_change_m2(), [-100, 0, 100], rtol=1e-8)
    np.testing.assert_allclose(m.net_change_m2(), m.area_m2.sum(0) - m.area_m2.sum(1), atol=1e-9)


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:4326", "EPSG:3857"])
def test_every_number_is_the_same_for_any_chunk_size(crs: str) -> None:
    rng = np.random.default_rng(3)
    before = rng.choice(np.array([1, 4, 9, 255], np.uint8), size=(97, 83))
    after = rng.choice(np.array([1, 4, 9, 255], np.uint8), size=(97, 83))
    step = 0.0003 if crs == "EPSG:4326" else 10
    transform = Affine(step, 0, 15.0 if crs == "EPSG:4326" else 500_000, 0, -step, 5_100_000
                       if crs != "EPSG:4326" else 46.0)  # fmt: skip
    ref = _matrix(before, after, crs, transform, chunk=1000)
    for chunk, scheduler in [(7, "threads"), (16, "sync"), ((40, 13), "threads")]:
        m = _matrix(before, after, crs, transform, chunk=chunk, scheduler=scheduler)
        np.testing.assert_array_equal(m.area_m2, ref.area_m2)  # bit for bit
        np.testing.assert_array_equal(m.pixels, ref.pixels)
        assert m.nodata_area_m2 == ref.nodata_area_m2


def test_unknown_unit_is_refused() -> None:
    m = _matrix(BEFORE, AFTER, "EPSG:6933", Affine(10, 0, 0, 0, -10, 0))
    with pytest.raises(GeosegError, match="unknown area unit"):
        m.area("hectares")
