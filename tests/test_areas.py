"""True ground areas and perimeters, checked against pyproj.Geod (an independent geodesic code)."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import rasterio.crs
import shapely
from affine import Affine

from geoseg.areas import (
    ACRE_M2,
    HECTARE_M2,
    crs_units_per_metre,
    pixel_area_m2,
    polygon_area_m2,
    polygon_area_perimeter_m,
    polygon_perimeter_m,
)

GEOD = pyproj.Geod(ellps="WGS84")

#: name -> (CRS, north-up transform of a raster there)
GRIDS = {
    "utm33": ("EPSG:32633", Affine(10.0, 0, 300_000.0, 0, -10.0, 6_650_000.0)),
    "wgs84": ("EPSG:4326", Affine(0.01, 0, 14.0, 0, -0.01, 60.0)),
    "webmercator_60n": ("EPSG:3857", Affine(100.0, 0, 1.5e6, 0, -100.0, 8_399_737.89)),
    "ease2_equal_area": ("EPSG:6933", Affine(1000.0, 0, 1e6, 0, -1000.0, 5e6)),
    "laea_europe": ("EPSG:3035", Affine(100.0, 0, 4e6, 0, -100.0, 3e6)),
}


def _geod_pixel(crs: str, t: Affine, row: int, col: int) -> tuple[float, float]:
    """Area and perimeter of the pixel's corner polygon with pyproj.Geod."""
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    xs = [t.c + t.a * c for c in (col, col + 1, col + 1, col)]
    ys = [t.f + t.e * r for r in (row, row, row + 1, row + 1)]
    lon, lat = to_lonlat.transform(xs, ys)
    area, perim = GEOD.polygon_area_perimeter(lon, lat)
    return abs(area), perim


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_pixel_area_agrees_with_geod_on_the_corner_polygon(name: str) -> None:
    crs, t = GRIDS[name]
    rows, cols = np.array([0, 7, 250]), np.array([0, 3, 400])
    areas = pixel_area_m2(crs, t, rows, cols)
    assert areas.shape == (3, 3)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            expected, _ = _geod_pixel(crs, t, int(r), int(c))
            assert areas[i, j] == pytest.approx(expected, rel=1e-3)
            assert areas[i, j] == pytest.approx(expected, rel=1e-7)  # in fact far better


def test_pixel_area_known_values() -> None:
    # Equal-area CRSs: the planar pixel area is the true area.
    crs, t = GRIDS["ease2_equal_area"]
    np.testing.assert_allclose(pixel_area_m2(crs, t, [0, 100], [5]), 1e6, rtol=1e-8)
    # Web Mercator exaggerates areas by 1 / cos(lat)^2: a 100 m pixel at 60 N is ~2 500 m2.
    crs, t = GRIDS["webmercator_60n"]
    assert pixel_area_m2(crs, t, [0], [0])[0, 0] == pytest.approx(100 * 100 * 0.25, rel=5e-3)
    # Every row of a geographic raster has one area per row, shrinking towards the pole.
    crs, t = GRIDS["wgs84"]
    a = pixel_area_m2(crs, t, [0, 1, 2], [0, 50, 99])
    assert np.ptp(a, axis=1).max() < 1e-6 * a.max()
    assert a[0, 0] < a[1, 0] < a[2, 0]


def test_one_degree_cells_add_up_to_the_ellipsoid() -> None:
    t = Affine(1.0, 0, -180.0, 0, -1.0, 90.0)
    total = pixel_area_m2("EPSG:4326", t, np.arange(180), np.arange(360)).sum()
    assert total == pytest.approx(510_065_621_724_089, rel=1e-9)  # WGS84 surface, m2


def test_pixel_area_accepts_rasterio_crs_and_epsg_codes() -> None:
    t = GRIDS["utm33"][1]
    expected = pixel_area_m2("EPSG:32633", t, [3], [4])
    np.testing.assert_array_equal(pixel_area_m2(32633, t, [3], [4]), expected)
    np.testing.assert_array_equal(
        pixel_area_m2(rasterio.crs.CRS.from_epsg(32633), t, [3], [4]), expected
    )


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_polygon_area_equals_the_sum_of_its_pixels(name: str) -> None:
    crs, t = GRIDS[name]
    rows, cols = np.arange(10, 60), np.arange(20, 90)
    pixels = pixel_area_m2(crs, t, rows, cols).sum()
    box = shapely.box(t.c + t.a * 20, t.f + t.e * 60, t.c + t.a * 90, t.f + t.e * 10)
    assert polygon_area_m2([box], crs)[0] == pytest.approx(pixels, rel=1e-7)


def test_polygon_area_and_perimeter_agree_with_geod() -> None:
    # A 2 km x 3 km rectangle in UTM 33N, and a small lon/lat polygon with a hole.
    rect = shapely.box(400_000, 5_000_000, 402_000, 5_003_000)
    to_lonlat = pyproj.Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    dense = shapely.segmentize(rect, 10.0)
    lonlat = shapely.transform(dense, lambda xy: np.column_stack(to_lonlat.transform(*xy.T)))
    g_area, g_perim = GEOD.geometry_area_perimeter(lonlat)
    area, perim = polygon_area_perimeter_m([rect], "EPSG:32633")
    assert area[0] == pytest.approx(abs(g_area), rel=1e-7)
    assert perim[0] == pytest.approx(g_perim, rel=1e-6)
    donut = shapely.Polygon(
        [(14.0, 46.0), (14.01, 46.0), (14.01, 46.01), (14.0, 46.01)],
        [[(14.004, 46.004), (14.006, 46.004), (14.006, 46.006), (14.004, 46.006)]],
    )
    # Geod signs each ring by its orientation: orient the hole clockwise first.
    g_area, _ = GEOD.geometry_area_perimeter(shapely.geometry.polygon.orient(donut))
    g_perim = sum(GEOD.geometry_length(r) for r in shapely.get_rings(donut))  # holes included
    assert polygon_area_m2([donut], "EPSG:4326")[0] == pytest.approx(abs(g_area), rel=1e-6)
    assert polygon_perimeter_m([donut], 4326)[0] == pytest.approx(g_perim, rel=1e-6)


def test_multipolygons_empty_and_none() -> None:
    a, b = shapely.box(0, 0, 1000, 1000), shapely.box(5000, 0, 6000, 2000)
    both = polygon_area_m2([shapely.MultiPolygon([a, b]), a, b], "EPSG:32633")
    assert both[0] == pytest.approx(both[1] + both[2], rel=1e-12)
    np.testing.assert_array_equal(
        polygon_area_m2([shapely.Polygon(), None, a], "EPSG:32633")[:2], [0.0, 0.0]
    )
    assert polygon_area_m2([], "EPSG:32633").shape == (0,)


def test_units() -> None:
    assert HECTARE_M2 == 10_000
    assert pytest.approx(4046.8564224) == ACRE_M2
    assert crs_units_per_metre("EPSG:32633") == 1.0
    assert crs_units_per_metre("EPSG:2263") == pytest.approx(1 / 0.3048006096)  # US survey ft
    assert crs_units_per_metre("EPSG:4326") == pytest.approx(1 / 111_319.49, rel=1e-6)
