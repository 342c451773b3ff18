"""``geoseg prompt`` with a tiny random SAM: prompts -> windows -> objects on the scene grid.

Random weights give meaningless masks, so the mechanics are checked with real
values: ids, windows, CRS, encoder calls and (with the decoder replaced by known
masks) exact placement and the score-wins overlap rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner

from geoseg.areas import pixel_area_m2
from geoseg.cli import cli
from geoseg.errors import OutputExistsError
from geoseg.models.cache import load_predictor
from geoseg.models.sam import PAD_LABEL, Decoded, SamPrompter
from geoseg.pipelines.prompt import PromptOptions, prompt_scene
from geoseg.pipelines.prompt_inputs import Prompt, SceneFrame, read_prompts
from geoseg.pipelines.prompt_objects import stability_score
from geoseg.pipelines.prompt_windows import plan_windows
from tests.conftest import textured_scene, write_raster
from tests.models.sam_folders import fake_decode

T = Affine(10, 0, 500000, 0, -10, 5100000)
H, W, S = 600, 700, 256


@pytest.fixture
def image(tmp_path: Path) -> Path:
    data = (textured_scene(H, W, 3) // 16).astype(np.uint8)
    return write_raster(tmp_path / "scene.tif", data, transform=T, descriptions=("R", "G", "B"))


def box_layer(path: Path, boxes: list[tuple[int, int, int, int]], crs: str = "EPSG:32633") -> Path:
    """Boxes given as scene px ``(col0, row0, col1, row1)`` written as polygons."""
    geoms = [shapely.box(*(T @ (c0, r1)), *(T @ (c1, r0))) for c0, r0, c1, r1 in boxes]
    names = [f"f{i + 1}" for i in range(len(boxes))]
    gpd.GeoDataFrame({"name": names}, geometry=geoms, crs="EPSG:32633").to_crs(crs).to_file(path)
    return path


def box_prompt(box: tuple[int, int, int, int], fid: int = 1) -> Prompt:
    return Prompt(fid, np.zeros((0, 2)), np.zeros(0, np.int64), tuple(map(float, box)), 0)


def run(image: Path, sam: str, out: Path, vector: Path | None = None, **kw: Any) -> Any:
    return prompt_scene(image, sam, out, PromptOptions(device="cpu", **kw), vector)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return np.asarray(src.read())


def box_decoder(scores: list[float]) -> Any:
    """A decode that returns logit +5 inside each given box (input px, pixel centres), -5
    outside, with ``scores[p]`` as prompt ``p``'s predicted IoU."""

    def decode(self: SamPrompter, embedding: Any, points: Any = None, labels: Any = None,
               boxes: Any = None, keep: str = "best") -> Decoded:  # fmt: skip
        centre = np.arange(S) + 0.5
        logits = np.full((len(boxes), 1, S, S), -5.0, np.float32)
        for p, (x0, y0, x1, y1) in enumerate(boxes):
            rows = (centre >= y0) & (centre < y1)
            cols = (centre >= x0) & (centre < x1)
            logits[p, 0][np.ix_(rows, cols)] = 5.0
        return Decoded(logits, np.array(scores[: len(boxes)], np.float32)[:, None])

    return decode


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, ...]]]:
    """The batch shapes SamPrompter.encode is called with."""
    seen: list[tuple[int, ...]] = []
    real = SamPrompter.encode

    def encode(self: SamPrompter, batch: np.ndarray, valid: np.ndarray) -> Any:
        seen.append(batch.shape)
        return real(self, batch, valid)

    monkeypatch.setattr(SamPrompter, "encode", encode)
    yield seen
    load_predictor.cache_clear()


def test_ids_are_the_prompt_ids_and_masks_stay_in_their_windows(
    image: Path, sam: str, tmp_path: Path
) -> None:
    boxes = [(20, 30, 60, 80), (400, 300, 470, 360), (5000, 5000, 5010, 5010)]
    layer = box_layer(tmp_path / "b.gpkg", boxes)
    result = run(image, sam, tmp_path / "o.tif", boxes=str(layer), vector=tmp_path / "o.gpkg")
    assert (result.objects, result.outside, result.windows) == (2, 1, 2)
    ids = read(tmp_path / "o.tif")[1]
    assert set(np.unique(ids)) == {0, 1, 2}
    plan = plan_windows([box_prompt(b) for b in boxes[:2]], S)
    for win, (i,) in plan.items():
        rows, cols = np.nonzero(ids == i + 1)
        assert rows.min() >= win.row0 and rows.max() < win.row0 + win.side
        assert cols.min() >= win.col0 and cols.max() < win.col0 + win.side
    table = gpd.read_file(tmp_path / "o.gpkg")
    assert list(table["object_id"]) == [1, 2] and list(table["name"]) == ["f1", "f2"]
    assert ((table["stability"] >= 0) & (table["stability"] <= 1)).all()


def test_a_raster_that_cannot_be_written_fails_the_run_before_the_polygons(
    image: Path, sam: str, tmp_path: Path
) -> None:
    # the COG is written in a thread while the IoUs and polygons are measured: its error
    # still ends the run, and the polygons it would have gone with are not written
    layer = box_layer(tmp_path / "b.gpkg", [(20, 30, 60, 80)])
    out, vector = tmp_path / "o.tif", tmp_path / "o.gpkg"
    out.write_bytes(b"kept")
    with pytest.raises(OutputExistsError, match=r"o\.tif: exists"):
        run(image, sam, out, boxes=str(layer), vector=vector)
    assert out.read_bytes() == b"kept" and not vector.exists()
    result = run(image, sam, out, boxes=str(layer), vector=vector, overwrite=True)
    assert result.objects == 1 and vector.exists() and read(out).shape == (2, H, W)


def test_a_box_outside_is_counted_and_said(image: Path, sam: str, tmp_path: Path) -> None:
    layer = box_layer(tmp_path / "b.gpkg", [(20, 30, 60, 80), (-500, -500, -400, -400)])
    out = tmp_path / "o.tif"
    result = CliRunner().invoke(cli, ["prompt", str(image), "-m", sam, "--boxes", str(layer),
                                      "-o", str(out), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 outside the scene" in result.output and out.exists()


def test_a_lonlat_point_lands_on_its_pixel(image: Path) -> None:
    col, row = 234.5, 123.5
    x, y = T @ (col, row)
    lon, lat = pyproj.Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(
        x, y
    )
    frame = SceneFrame(str(image), "EPSG:32633", T, H, W, lambda r, c: np.ones(len(r), bool))
    found = read_prompts(frame, point=f"{lon!r},{lat!r},EPSG:4326")
    assert found.items[0].points == pytest.approx(np.array([[col, row]]), abs=1e-6)
    assert found.items[0].id == 1 and list(found.items[0].labels) == [1]


@pytest.mark.parametrize(("scores", "overlap_id"), [([0.8, 0.3], 1), ([0.3, 0.8], 2)])
def test_the_higher_score_wins_an_overlap_and_masks_land_exactly(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    scores: list[float], overlap_id: int,
) -> None:  # fmt: skip
    fake_decode(monkeypatch, box_decoder(scores))
    boxes = [(100, 100, 160, 150), (140, 120, 200, 180)]
    layer = box_layer(tmp_path / "b.gpkg", boxes)
    run(image, sam, tmp_path / "o.tif", boxes=str(layer))
    cls, ids = read(tmp_path / "o.tif")
    expected = np.zeros((H, W), np.uint32)
    expected[100:150, 100:160] = 1
    expected[120:180, 140:200] = np.where(expected[120:180, 140:200] == 1, 0, 2)
    expected[120:150, 140:160] = overlap_id
    bad = np.argwhere(ids != expected)
    assert (ids == expected).all(), (bad[:3], bad[-3:], ids[tuple(bad[0])], len(bad))
    assert (cls == (expected > 0)).all()


def test_a_large_box_reads_decimated_and_lands_exactly(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_decode(monkeypatch, box_decoder([0.5]))
    box = (100, 64, 300, 300)  # 236 px (354 with context): a 512 px window read at 256
    layer = box_layer(tmp_path / "b.gpkg", [box])
    assert [w.factor for w in plan_windows([box_prompt(box)], S)] == [2]
    run(image, sam, tmp_path / "o.tif", boxes=str(layer))
    ids = read(tmp_path / "o.tif")[1]
    expected = np.zeros((H, W), np.uint32)
    expected[64:300, 100:300] = 1
    assert (ids == expected).all()


def test_prompts_on_one_window_share_one_encoding(
    image: Path, sam: str, tmp_path: Path, calls: list[tuple[int, ...]]
) -> None:
    layer = box_layer(tmp_path / "b.gpkg", [(20, 30, 60, 80), (70, 40, 110, 90)])
    result = run(image, sam, tmp_path / "o.tif", boxes=str(layer))
    assert result.windows == 1 and calls == [(1, 3, S, S)]
    calls.clear()
    far = box_layer(tmp_path / "far.gpkg", [(20, 30, 60, 80), (600, 500, 650, 560)])
    result = run(image, sam, tmp_path / "p.tif", boxes=str(far), batch_size=1)
    assert result.windows == 2 and calls == [(1, 3, S, S)] * 2


def test_points_are_grouped_labelled_and_padded(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: dict[str, np.ndarray] = {}

    def decode(self: SamPrompter, embedding: Any, points: Any = None, labels: Any = None,
               boxes: Any = None, keep: str = "best") -> Decoded:  # fmt: skip
        got.update(points=points, labels=labels)
        logits = np.full((len(points), 1, S, S), -5.0, np.float32)
        for p, (x, y) in enumerate(points[:, 0].astype(int)):  # 10 x 10 px at the first point
            logits[p, 0, y : y + 10, x : x + 10] = 5.0
        return Decoded(logits, np.full((len(points), 1), 0.5, np.float32))

    fake_decode(monkeypatch, decode)
    pixels = [(50.5, 60.5), (70.5, 60.5), (90.5, 100.5)]
    frame = gpd.GeoDataFrame(
        {"label": [1, 0, 1], "prompt_id": [7, 7, 9]},
        geometry=[shapely.Point(*(T @ p)) for p in pixels], crs="EPSG:32633",
    )  # fmt: skip
    frame.to_file(tmp_path / "p.gpkg")
    result = run(image, sam, tmp_path / "o.tif", points=str(tmp_path / "p.gpkg"))
    window = next(iter(plan_windows(read_prompts(
        SceneFrame(str(image), "EPSG:32633", T, H, W, lambda r, c: np.ones(len(r), bool)),
        points=str(tmp_path / "p.gpkg")).items, S)))  # fmt: skip
    origin = np.array([window.col0, window.row0])
    assert result.objects == 2 and result.windows == 1
    assert got["points"][0] == pytest.approx(np.array(pixels[:2]) - origin)
    assert got["points"][1, 0] == pytest.approx(np.array(pixels[2]) - origin)
    assert got["labels"].tolist() == [[1, 0], [1, PAD_LABEL]]
    ids = read(tmp_path / "o.tif")[1]
    assert (ids[60:70, 50:60] == 7).all() and (ids[100:110, 90:100] == 9).all()
    assert (ids > 0).sum() == 200


def test_multimask_all_gives_three_candidates_and_the_raster_keeps_the_best(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def decode(self: SamPrompter, embedding: Any, points: Any = None, labels: Any = None,
               boxes: Any = None, keep: str = "best") -> Decoded:  # fmt: skip
        assert keep == "all"
        logits = np.full((len(boxes), 3, S, S), -5.0, np.float32)
        x, y = boxes[0, :2].astype(int)  # masks from the box's top-left corner
        for m, side in enumerate((10, 20, 30)):
            logits[:, m, y : y + side, x : x + side] = 5.0
        return Decoded(logits, np.tile(np.array([0.2, 0.9, 0.5], np.float32), (len(boxes), 1)))

    fake_decode(monkeypatch, decode)
    layer = box_layer(tmp_path / "b.gpkg", [(20, 30, 60, 80)])
    vector = tmp_path / "o.gpkg"
    run(image, sam, tmp_path / "o.tif", boxes=str(layer), vector=vector, multimask="all")
    table = gpd.read_file(vector)
    assert list(table["candidate"]) == [0, 1, 2] and list(table["name"]) == ["f1"] * 3
    assert list(table["score"]) == pytest.approx([0.2, 0.9, 0.5])
    assert (read(tmp_path / "o.tif")[1] == 1).sum() == 400  # candidate 1: 20 x 20 px


def test_polygon_areas_are_the_true_areas_of_their_pixels(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_decode(monkeypatch, box_decoder([0.5]))
    layer = box_layer(tmp_path / "b.gpkg", [(100, 100, 160, 150)])
    vector = tmp_path / "o.gpkg"
    run(image, sam, tmp_path / "o.tif", boxes=str(layer), vector=vector)
    table = gpd.read_file(vector)
    truth = pixel_area_m2("EPSG:32633", T, np.arange(100, 150), np.arange(100, 160)).sum()
    assert table["area_m2"].iloc[0] == pytest.approx(truth, rel=1e-6)
    assert table["area_ha"].iloc[0] == pytest.approx(truth / 1e4, rel=1e-6)
    assert table["stability"].iloc[0] == 1.0 and table["score"].iloc[0] == 0.5


def test_stability_is_the_iou_of_the_mask_at_plus_and_minus_one() -> None:
    logits = np.array([[-2.0, -0.5, 0.5], [1.5, 2.0, 3.0]])
    assert stability_score(logits) == pytest.approx(3 / 5)
    assert stability_score(np.full((2, 2), -3.0)) == 0.0
