"""CRS names, extents and scale bars of the report's maps."""

from __future__ import annotations

import pytest
from affine import Affine
from rasterio.crs import CRS

from geoseg.report.maps import Grid, crs_name, extent_lines, ground_width_m, scale_bar

LOCAL = (
    'LOCAL_CS["site grid",LOCAL_DATUM["site",0],UNIT["metre",1],'
    'AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)
UTM = Grid(CRS.from_epsg(32633), Affine(10, 0, 500_000, 0, -10, 5_100_000), 768, 1024)


@pytest.mark.parametrize(
    ("crs", "name"),
    [(CRS.from_epsg(32633), "WGS 84 / UTM zone 33N (EPSG:32633)"),
     (CRS.from_epsg(4326), "WGS 84 (EPSG:4326)"), (CRS.from_wkt(LOCAL), "site grid")],
)  # fmt: skip
def test_crs_by_name_never_the_wkt(crs: CRS, name: str) -> None:
    assert crs_name(crs) == name


def test_extent_in_crs_units_and_lonlat() -> None:
    assert extent_lines(UTM) == [
        "x 500,000.00 to 510,240.00, y 5,092,320.00 to 5,100,000.00 (metre)",
        "longitude 15.00000° to 15.13237°, latitude 45.98438° to 46.05357° (WGS 84)",
    ]


@pytest.mark.parametrize(
    ("grid", "metres", "rel"),
    [
        # UTM scale factor near the central meridian is 0.9996: ground is longer than grid
        (UTM, 10_240 / 0.9996, 1e-3),
        # one degree of longitude at 60° N on WGS84: 55.80 km
        (Grid(CRS.from_epsg(4326), Affine(0.01, 0, 10, 0, -0.01, 60.005), 1, 100), 55_800, 1e-3),
        # no datum: the CRS's own metres
        (Grid(CRS.from_wkt(LOCAL), Affine(0.5, 0, 0, 0, -0.5, 100), 200, 400), 200.0, 1e-12),
    ],
)
def test_ground_width_of_the_middle_row(grid: Grid, metres: float, rel: float) -> None:
    assert ground_width_m(grid) == pytest.approx(metres, rel=rel)


@pytest.mark.parametrize(
    ("width_m", "px", "bar"),
    [(10_240.0, 300, (146, "5 km")), (10_240.0, 768, (150, "2 km")),
     (200.0, 300, (150, "100 m")), (3.0, 300, (100, "1 m")), (None, 300, None)],
)  # fmt: skip
def test_scale_bar_is_a_round_length(width_m: float | None, px: int, bar: object) -> None:
    assert scale_bar(width_m, px) == bar
