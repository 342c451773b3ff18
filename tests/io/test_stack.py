"""Stacking dates for early-fusion change models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.errors import GeosegError
from geoseg.io.stack import stack_dates
from tests.conftest import textured_scene, write_raster


def test_bands_of_each_date_follow_in_order(tmp_path: Path) -> None:
    a, b = textured_scene(300, 270, bands=2, seed=1), textured_scene(300, 270, bands=2, seed=2)
    pa = write_raster(tmp_path / "a.tif", a, nodata=0, descriptions=("red", "nir"))
    pb = write_raster(tmp_path / "b.tif", b, nodata=0, descriptions=("red", "nir"))
    out = stack_dates([pa, pb], tmp_path / "ab.tif")
    with rasterio.open(out) as src:
        assert src.descriptions == ("t1_red", "t1_nir", "t2_red", "t2_nir")
        assert src.nodata == 0 and src.crs.to_epsg() == 32633
        np.testing.assert_array_equal(src.read(), np.concatenate([a, b]))


def test_dates_on_different_grids_are_refused(tmp_path: Path) -> None:
    pa = write_raster(tmp_path / "a.tif", textured_scene(20, 20, bands=1))
    pb = write_raster(
        tmp_path / "b.tif", textured_scene(20, 20, bands=1), transform=Affine(20, 0, 0, 0, -20, 0)
    )
    with pytest.raises(GeosegError, match="not on the grid"):
        stack_dates([pa, pb], tmp_path / "ab.tif")
    assert not (tmp_path / "ab.tif").exists()
