"""``geoseg prompt`` and ``geoseg evaluate -m SAM`` on a scene with nodata: polygons, areas
and IoUs are made of the scene's valid pixels, the instance COG's.

A box wider than one encoder input is read decimated (2 native px per input px);
its mask, repeated back to native px, reaches past a nodata edge that does not
fall on the decimation grid: the COG leaves those px out, and so must the polygons.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from click.testing import CliRunner
from rasterio.windows import Window

from geoseg.areas import pixel_area_m2
from geoseg.cli import cli
from geoseg.pipelines.prompt_inputs import SceneFrame
from geoseg.pipelines.prompt_refine import mask_iou, on_nodata
from geoseg.pipelines.prompt_windows import plan_windows
from tests.conftest import textured_scene, write_raster
from tests.models.sam_folders import fake_decode
from tests.pipelines.test_prompt import H, S, T, W, box_decoder, box_layer, box_prompt, read, run

#: First column holding data, columns before it nodata (odd: the decimated read's
#: 2 x 2 block of columns 150-151 holds data, its column 150 does not).
EDGE = 151
#: A box read decimated (236 px, 354 with context: a 512 px window at 256 px).
BOX = (100, 64, 300, 300)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A 3-band uint8 scene whose columns < :data:`EDGE` are nodata (0)."""
    data = (textured_scene(H, W, 3) // 16 + 1).astype(np.uint8)
    data[:, :, :EDGE] = 0
    return write_raster(tmp_path / "scene.tif", data, transform=T, nodata=0,
                        descriptions=("R", "G", "B"))  # fmt: skip


def test_polygons_are_the_cogs_pixels_on_data(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_decode(monkeypatch, box_decoder([0.5]))
    assert [w.factor for w in plan_windows([box_prompt(BOX)], S)] == [2]
    vector = tmp_path / "o.gpkg"
    run(image, sam, tmp_path / "o.tif", boxes=str(box_layer(tmp_path / "b.gpkg", [BOX])),
        vector=vector)  # fmt: skip
    cls, ids = read(tmp_path / "o.tif")
    cog = (ids == 1) & (cls == 1)
    expected = np.zeros((H, W), bool)
    expected[64:300, EDGE:300] = True
    assert (cog == expected).all()
    table = gpd.read_file(vector)
    polygon = rasterio.features.rasterize(table.geometry, out_shape=(H, W), transform=T) > 0
    assert (polygon == cog).all()
    # 10 m px in UTM: the planar area is the px count x 100 m2, the true area their sum
    assert table.geometry.area.iloc[0] == pytest.approx(cog.sum() * 100.0, rel=1e-12)
    truth = pixel_area_m2("EPSG:32633", T, np.arange(64, 300), np.arange(EDGE, 300)).sum()
    assert table["area_m2"].iloc[0] == pytest.approx(truth, rel=1e-6)
    assert table["area_ha"].iloc[0] == pytest.approx(truth / 1e4, rel=1e-6)


def test_input_iou_counts_valid_pixels_only(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mask is the box on data: the polygon's nodata px count neither in A nor in B."""
    fake_decode(monkeypatch, box_decoder([0.5]))
    box = (100, 100, 200, 160)  # 51 of its 100 columns on nodata: 0.49 counting them
    vector = tmp_path / "o.gpkg"
    result = run(image, sam, tmp_path / "o.tif", boxes=str(box_layer(tmp_path / "b.gpkg", [box])),
                 vector=vector)  # fmt: skip
    assert gpd.read_file(vector)["input_iou"].tolist() == pytest.approx([1.0], abs=1e-12)
    assert result.iou.mean == pytest.approx(1.0, abs=1e-12)


def test_evaluate_does_not_score_a_reference_polygon_on_nodata(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_decode(monkeypatch, box_decoder([0.5, 0.5]))
    boxes = [(400, 300, 470, 360), (20, 30, 60, 80)]  # the second wholly on nodata
    layer = box_layer(tmp_path / "ref.gpkg", boxes)
    result = CliRunner().invoke(cli, ["evaluate", "-m", sam, "--image", str(image), "--labels",
                                      str(layer), "-o", str(tmp_path / "ev"), "--device",
                                      "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert (metrics["count"], metrics["empty"], metrics["on_nodata"]) == (1, 0, 1)
    assert metrics["mean_iou"] == pytest.approx(1.0, abs=1e-12)
    assert [o["feature"] for o in metrics["objects"]] == [1]  # feature 2 not scored
    assert "over 1 reference polygons, 1 on its nodata not scored" in result.output


def test_a_polygon_is_on_nodata_when_every_pixel_it_covers_is() -> None:
    def valid(window: Window) -> np.ndarray:  # columns >= 15 hold data
        cols = int(window.col_off) + np.arange(int(window.width))
        return np.broadcast_to(cols >= 15, (int(window.height), int(window.width)))

    frame = SceneFrame("s.tif", "EPSG:32633", T, H, W, lambda r, c: c >= 15, valid)

    def box(c0: float, c1: float) -> shapely.Polygon:  # columns c0-c1, rows 10-20
        return shapely.box(*(T @ (c0, 20)), *(T @ (c1, 10)))

    assert on_nodata(box(10, 15), frame) and not on_nodata(box(10, 16), frame)
    assert not on_nodata(box(10.6, 10.9), frame)  # covers no pixel centre
    # A and B over valid px: columns 15-19 of A, the mask's columns 10-17 -> 15-17
    assert mask_iou(box(10, 20), (10, 10, np.ones((10, 8), bool)), frame) == pytest.approx(3 / 5)
