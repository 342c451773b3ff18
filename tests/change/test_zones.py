"""Per-AOI transition tables (geoseg.change.zones): zones that meet no valid pixel are named."""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

from geoseg.change.transitions import TransitionSink
from geoseg.change.zones import ZoneMasker, prepare_aoi
from geoseg.errors import GeosegError

GRID = Affine(10, 0, 500_000, 0, -10, 5_100_000)


def _masker(geoms: list[shapely.Geometry], names: list[str]) -> ZoneMasker:
    sink = TransitionSink([1, 9], "EPSG:32633", GRID, len(geoms), (10, 10))
    return ZoneMasker(np.array(geoms, dtype=object), names, GRID, sink)


def test_zones_outside_or_over_nodata_are_empty(caplog: pytest.LogCaptureFixture) -> None:
    codes = np.full((10, 10), 1, np.uint8)  # code 0 * K + 1: forest -> urban (K = 2)
    codes[:, :5] = 4  # code K * K: no data in the west half
    zones = _masker(
        [
            shapely.box(500_000, 5_099_900, 500_050, 5_100_000),  # west: nodata only
            shapely.box(500_050, 5_099_900, 500_100, 5_100_000),  # east: 50 valid px
            shapely.box(600_000, 5_000_000, 600_100, 5_000_100),  # far away
        ],
        ["west", "east", "far"],
    )
    zones.add_codes(slice(0, 10), slice(0, 10), codes)
    assert zones.empty_zones() == ["west", "far"]
    assert zones.totals.matrix(["forest", "urban"], 1).pixels[0, 1] == 50
    with caplog.at_level(logging.WARNING):
        zones.warn_empty("aoi.gpkg")
    assert "aoi.gpkg: 2 of 3 AOI features overlap no valid pixel" in caplog.text
    assert "0 ha: west, far;" in caplog.text


#: The 10 x 10 grid's bounds (EPSG:32633) and lon/lat boxes: one around it, one 82
#: degrees west of UTM 33N's central meridian, where its coordinates become infinite.
BOUNDS = (500_000.0, 5_099_900.0, 500_100.0, 5_100_000.0)
NEAR = tuple(gpd.GeoSeries([shapely.box(*BOUNDS)], crs=32633).to_crs(4326).total_bounds)
UNPROJECTABLE = (-67.0, 2.0, -66.5, 2.5)
FAR = (100.0, 10.0, 101.0, 11.0)  # finite in UTM 33N, but nowhere near the grid


def _lonlat_aoi(boxes: dict[str, tuple[float, ...]]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"name": list(boxes)}, geometry=[shapely.box(*b) for b in boxes.values()], crs=4326
    )


def test_aoi_features_that_cannot_be_projected_are_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frame = _lonlat_aoi({"far side": UNPROJECTABLE, "near": NEAR})
    assert not np.isfinite(shapely.get_coordinates(frame.to_crs(32633).geometry[0])).all()
    with caplog.at_level(logging.WARNING):
        names, geoms = prepare_aoi(frame, "EPSG:32633", "name", "aoi.geojson", "a.tif", BOUNDS)
    assert "aoi.geojson: 1 of 2 features cannot be put in the CRS of a.tif" in caplog.text
    assert names == ["near"]
    expected = gpd.GeoSeries([shapely.box(*NEAR)], crs=4326).to_crs(32633)[0]
    assert shapely.equals_exact(geoms[0], expected, tolerance=1e-6)


@pytest.mark.parametrize(
    ("boxes", "why"),
    [
        ({"far side": UNPROJECTABLE}, "none of its features can be put in the maps' CRS"),
        ({"far side": UNPROJECTABLE, "far": FAR}, "AOI bounds 1.4"),
    ],
)
def test_aoi_that_misses_the_maps_is_refused(boxes: dict[str, tuple[float, ...]], why: str) -> None:
    with pytest.raises(GeosegError, match=r"aoi\.geojson: the AOI does not overlap the maps") as e:
        prepare_aoi(_lonlat_aoi(boxes), "EPSG:32633", "name", "aoi.geojson", "a.tif", BOUNDS)
    assert why in str(e.value) and "--aoi-crs" in str(e.value)
