"""The acquisition date travels from a scene's tags through predict's label map (its
``DATE`` tag) into the change report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.pipelines.predict import scene_date
from tests.conftest import TINY_BANDS, textured_scene, write_raster


@pytest.mark.parametrize(
    "tags, expected",
    [
        ({"DATE": "2024-07-15"}, "2024-07-15"),  # the synthetic sample scenes
        ({"ACQUISITION": "2015-07-11T10:00:08"}, "2015-07-11"),  # the Slovenia scenes
        ({"ACQUISITION_DATE": "20190601"}, "2019-06-01"),
        ({"TIFFTAG_DATETIME": "2020:05:04 12:00:00"}, "2020-05-04"),
        ({"DATE": "last summer", "ACQUISITION": "2015-07-11T10:00:08"}, "2015-07-11"),
        ({"DATE": "2015-13-45"}, None),  # not a date: nothing copied, no failure
        ({"SENSOR": "S2A"}, None),
        ({"DATE": "2015-07-11", "TIFFTAG_DATETIME": "2023:01:01 00:00:00"}, "2015-07-11"),
    ],
)
def test_scene_date(tags: dict[str, str], expected: str | None) -> None:
    assert scene_date(tags) == expected


def test_predicted_maps_carry_the_acquisition_date_into_the_report(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    runner = CliRunner()
    maps = []
    for i, acquired in enumerate(("2015-07-11T10:00:08", "not a date")):
        scene = write_raster(
            tmp_path / f"s{i}.tif", textured_scene(40, 50, seed=i), nodata=0,
            descriptions=TINY_BANDS,
        )  # fmt: skip
        with rasterio.open(scene, "r+") as dst:
            dst.update_tags(ACQUISITION=acquired)
        lc = tmp_path / f"lc{i}.tif"
        res = runner.invoke(cli, ["predict", str(scene), "-m", str(tiny_checkpoint), "-o", str(lc)])
        assert res.exit_code == 0, res.output
        maps.append(lc)
    with rasterio.open(maps[0]) as a, rasterio.open(maps[1]) as b:
        assert a.tags()["DATE"] == "2015-07-11" and "DATE" not in b.tags()
    res = runner.invoke(cli, ["change", *map(str, maps), "-o", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r" / "transitions.json").read_text())
    assert doc["dates"] == ["2015-07-11", None]
