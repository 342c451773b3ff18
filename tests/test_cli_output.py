"""What the CLI prints and writes for people: units, full coordinates, AOI coverage."""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from affine import Affine
from click.testing import CliRunner
from pyproj import Geod

from geoseg.cli import cli
from geoseg.io.checkpoint import read_checkpoint_meta, save_checkpoint
from geoseg.io.training_data import read_labelled_raster
from geoseg.models.registry import build_model
from tests.change.helpers import write_labels
from tests.conftest import make_tiny_checkpoint, write_raster

# 50 x 48 px of 10 m: x 500000-500500, y 5099520-5100000 (EPSG:32633)
GRID = Affine(10, 0, 500_000, 0, -10, 5_100_000)
AOI = {
    # 500 m x 600 m, its southern 120 m off the maps and 25 nodata px: (2400 - 25) / 3000
    "partial": shapely.box(500_000, 5_099_400, 500_500, 5_100_000),
    # 100 m x 100 m (10 x 10 px) with 25 px where the second map has nodata: 75 %
    "holey": shapely.box(500_000, 5_099_900, 500_100, 5_100_000),
    # wholly on valid pixels, off the pixel grid: 100 %
    "inside": shapely.box(500_203, 5_099_603, 500_397, 5_099_797),
}


def _geodesic_m2(geom: shapely.Geometry) -> float:
    """Independent reference: pyproj's geodesic area of the lon/lat polygon."""
    return abs(Geod(ellps="WGS84").geometry_area_perimeter(geom)[0])


def test_change_aoi_table_has_each_feature_area_and_coverage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import geopandas as gpd

    a = np.full((48, 50), 1, np.uint8)
    b = a.copy()
    b[:, 25:] = 9
    b[:5, :5] = 255
    maps = [write_labels(tmp_path / n, m, transform=GRID) for n, m in (("a.tif", a), ("b.tif", b))]
    # densified in UTM so the lon/lat polygon keeps the UTM-straight edges
    utm = gpd.GeoSeries([shapely.segmentize(g, 5.0) for g in AOI.values()], crs=32633)
    lonlat = utm.to_crs(4326)
    frame = gpd.GeoDataFrame({"name": list(AOI)}, geometry=lonlat.values, crs=4326)
    frame.to_file(tmp_path / "fields.gpkg")
    args = ["change", *map(str, maps), "-o", str(tmp_path / "r"), "--aoi"]
    with caplog.at_level(logging.WARNING):
        run = CliRunner().invoke(cli, [*args, str(tmp_path / "fields.gpkg"), "--aoi-field", "name"])
    assert run.exit_code == 0, run.output
    with (tmp_path / "r" / "transitions_by_aoi.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    own = {r["aoi"]: (float(r["aoi_area_ha"]), float(r["aoi_covered_percent"])) for r in rows}
    for name, geom in zip(AOI, lonlat, strict=True):
        assert own[name][0] == pytest.approx(_geodesic_m2(geom) / 1e4, rel=1e-6)
    assert own["partial"][0] == pytest.approx(30.0, rel=1e-3)  # UTM scale factor 0.9996
    assert own["partial"][1] == pytest.approx(100 * 2375 / 3000, abs=0.01)
    assert own["holey"][1] == pytest.approx(75.0, abs=0.01)
    assert own["inside"][1] == pytest.approx(100.0, abs=1e-6)
    assert "2 of 3 AOI features are only partly covered" in caplog.text
    assert "partial (79.2 % of 30.02 ha), holey (75.0 % of 1.00 ha);" in caplog.text
    assert "inside" not in caplog.text


SLOVENIA = Affine(9.99479, 0, 465181.0522318204, 0, -9.99745, 5080254.63349641)
SPAIN = Affine(8.983152841195215e-05, 0, -0.781893618, 0, -8.983152841195215e-05, 38.128812569)
METRICS = {
    "epoch": 24,
    "val_miou": 0.8336110348552157,
    "test": {
        "overall_accuracy": 0.925002,
        "classes": [{"name": "water", "iou": 0.85353, "f1": None}],
    },
}


def _info_raster(tmp: Path) -> Path:
    return write_raster(tmp / "utm.tif", np.zeros((1, 4, 4), np.uint8), transform=SLOVENIA)


def _info_lonlat(tmp: Path) -> Path:
    return write_raster(tmp / "ll.tif", np.zeros((1, 4, 4), np.uint8), crs="EPSG:4326",
                        transform=SPAIN)  # fmt: skip


def _info_empty_geojson(tmp: Path) -> Path:
    path = tmp / "empty.geojson"
    path.write_text('{"type": "FeatureCollection", "features": []}')
    return path


def _checkpoint(tmp: Path, gsd_m: float | None) -> Path:
    path = make_tiny_checkpoint(tmp / "base.safetensors")
    meta = dataclasses.replace(read_checkpoint_meta(path), gsd_m=gsd_m, metrics=METRICS)
    model = build_model("unet", "resnet18", 4, 3)
    return save_checkpoint(tmp / "model.safetensors", model.state_dict(), meta)


_INDENTED_METRICS = [
    "  metrics:",
    "    epoch:    24",
    "    val_miou: 0.8336",
    "    test:",
    "      overall_accuracy: 0.9250",
    "      classes:",
    "        water: iou 0.8535, f1 n/a",
]
#: case: (command, input maker, lines expected in the output (a list: consecutive lines),
#: text that must not appear)
CASES: dict[str, tuple[str, Any, list[str | list[str]], str]] = {
    "info utm origin in full": (
        "info", _info_raster, ["  pixel size: 9.99479 x 9.99745   origin: 465181.052, 5080254.633"],
        "e+06",
    ),
    "info lon/lat origin to 8 decimals": (
        "info", _info_lonlat, ["  pixel size: 8.98315e-05 x 8.98315e-05   origin: -0.78189362, "
                               "38.12881257"], "(-0.781894",
    ),
    "info empty feature collection": (
        "info", _info_empty_geojson, ["    bounds: none (no features)"], "nan",
    ),
    "models degrees of an old checkpoint": (
        "models", lambda tmp: _checkpoint(tmp, 8.983152841195215e-05),
        ["  window: 64 px   margin: 8 px   GSD: 8.983e-05° (about 10 m at the equator; this "
         "older checkpoint recorded the training CRS's unit, degrees)", _INDENTED_METRICS], "{",
    ),
    "models metres": (
        "models", lambda tmp: _checkpoint(tmp, 10.0),
        ["  window: 64 px   margin: 8 px   GSD: 10 m"],
        "e-05",
    ),
    "models no gsd": (
        "models", lambda tmp: _checkpoint(tmp, None),
        ["  window: 64 px   margin: 8 px   GSD: unknown"],
        "None",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_describe_output(tmp_path: Path, case: str) -> None:
    command, make, expected, absent = CASES[case]
    run = CliRunner().invoke(cli, [command, str(make(tmp_path))])
    assert run.exit_code == 0, run.output
    lines = run.output.splitlines()
    for block in expected:
        want = [block] if isinstance(block, str) else block
        at = lines.index(want[0])
        assert lines[at : at + len(want)] == want
    assert absent not in run.output


def test_training_records_the_gsd_in_metres_on_a_lonlat_grid(tmp_path: Path) -> None:
    image = write_raster(tmp_path / "image.tif", np.ones((2, 8, 8), np.uint16), crs="EPSG:4326",
                         transform=SPAIN)  # fmt: skip
    labels = write_raster(tmp_path / "labels.tif", np.ones((1, 8, 8), np.uint8), crs="EPSG:4326",
                          transform=SPAIN)  # fmt: skip
    got = read_labelled_raster(image, labels).gsd_m
    x0, y0 = SPAIN @ (4, 4)
    x1, y1 = SPAIN @ (5, 5)
    ring_area = Geod(ellps="WGS84").polygon_area_perimeter([x0, x1, x1, x0], [y0, y0, y1, y1])[0]
    assert got == pytest.approx(abs(ring_area) ** 0.5, rel=1e-6)
    assert got == pytest.approx(8.9, abs=0.05)  # about 10 m N-S by 7.9 m E-W at 38 N


def test_training_records_the_gsd_in_metres_on_a_feet_grid(tmp_path: Path) -> None:
    feet = Affine(10, 0, 1_000_000, 0, -10, 500_000)  # EPSG:2263: NY Long Island, US feet
    image = write_raster(tmp_path / "image.tif", np.ones((2, 8, 8), np.uint16), crs="EPSG:2263",
                         transform=feet)  # fmt: skip
    labels = write_raster(tmp_path / "labels.tif", np.ones((1, 8, 8), np.uint8), crs="EPSG:2263",
                          transform=feet)  # fmt: skip
    assert read_labelled_raster(image, labels).gsd_m == pytest.approx(10 * 1200 / 3937, rel=1e-9)
