"""A GeoPackage named ``.tif`` gets geoseg's one line, not GDAL's and pyogrio's notes first.

Before, ``predict`` printed three ``geoseg: WARNING: CPLE_AppDefined ... non conformant
file extension`` / pyogrio ``RuntimeWarning`` lines before its own error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import shapely

REPO = Path(__file__).resolve().parents[2]


def test_a_polygon_layer_named_tif_gets_one_line(tmp_path: Path) -> None:
    layer = gpd.GeoDataFrame({"name": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=32633)
    layer.to_file(tmp_path / "zones.gpkg")
    fake = tmp_path / "scene.tif"
    shutil.copy(tmp_path / "zones.gpkg", fake)
    out = tmp_path / "o.tif"
    done = subprocess.run(
        [sys.executable, "-m", "geoseg", "predict", str(fake), "-m", "spectral", "-o", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 2
    assert (done.stdout + done.stderr).splitlines() == [
        f"geoseg: error: {fake}: is a polygon layer, not a raster; give a raster here (a "
        "GeoTIFF: an image, or a label map of class ids); polygons can be rasterized onto an "
        "image's grid with gdal_rasterize"
    ]
    assert not out.exists()
