"""Per-AOI transition tables (geoseg.change.zones): zones that meet no valid pixel are named."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import shapely
from affine import Affine

from geoseg.change.transitions import TransitionSink
from geoseg.change.zones import ZoneMasker

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
