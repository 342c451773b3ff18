"""Refining polygons (``geoseg prompt --boxes --interior-points``) and scoring SAM in the prompt
setting (``geoseg evaluate -m sam --labels polygons``).

The decoder is replaced by one that fills a known share of each box, so every
polygon's IoU with its object is known: a mask of the box's left ``f`` share of a
pixel-aligned rectangle has IoU ``f`` with it (true pixel areas: equal to ~1e-6).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from rasterio.windows import Window

from geoseg.areas import pixel_area_m2
from geoseg.cli import cli
from geoseg.models.sam import Decoded, SamPrompter
from geoseg.pipelines.importing import ImportOptions, import_model
from geoseg.pipelines.prompt import PromptOptions, prompt_scene
from geoseg.pipelines.prompt_inputs import SceneFrame
from geoseg.pipelines.prompt_refine import interior_points, mask_iou, summarize_ious
from geoseg.pipelines.prompt_windows import PromptWindow, read_window
from tests.conftest import textured_scene, write_raster
from tests.models.sam_folders import fake_decode, sam_folder
from tests.pipelines.test_prompt import H, S, T, W, box_layer

BOXES = [(100, 100, 160, 150), (20, 30, 60, 80), (400, 300, 470, 360)]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    data = (textured_scene(H, W, 3) // 16).astype(np.uint8)
    return write_raster(tmp_path / "scene.tif", data, transform=T, descriptions=("R", "G", "B"))


def share_decoder(shares: list[float], seen: list[dict[str, Any]] | None = None) -> Any:
    """A decode whose mask for the ``k``-th prompt decoded is the left ``shares[k]`` of its box
    (pixel centres; share 0: an empty mask); it records what it was given in ``seen``."""
    calls = iter(shares)

    def decode(self: SamPrompter, embedding: Any, points: Any = None, labels: Any = None,
               boxes: Any = None, keep: str = "best") -> Decoded:  # fmt: skip
        if seen is not None:
            seen.append({"points": points, "labels": labels, "boxes": boxes})
        centre = np.arange(S) + 0.5
        logits = np.full((len(boxes), 1, S, S), -5.0, np.float32)
        for p, (x0, y0, x1, y1) in enumerate(boxes):
            right = x0 + next(calls) * (x1 - x0)
            rows, cols = (centre >= y0) & (centre < y1), (centre >= x0) & (centre < right)
            logits[p, 0][np.ix_(rows, cols)] = 5.0
        return Decoded(logits, np.full((len(boxes), 1), 0.7, np.float32))

    return decode


def test_interior_points_are_deterministic_inside_and_spread() -> None:
    ell = shapely.Polygon([(0, 0), (40, 0), (40, 10), (10, 10), (10, 40), (0, 40)])
    t = Affine(2, 0, 1000, 0, -2, 2000)  # 2 m px, so the L is 20 x 20 px
    geom = shapely.affinity.affine_transform(ell, (t.a, t.b, t.d, t.e, t.c, t.f))
    pts = interior_points(geom, t, 4)
    assert pts.shape == (4, 2)
    assert pts == pytest.approx(interior_points(geom, t, 4))
    assert pts[0] == pytest.approx(shapely.get_coordinates(shapely.point_on_surface(ell))[0])
    assert shapely.contains(ell, shapely.points(pts)).all()
    gaps = np.hypot(*(pts[:, None] - pts[None]).T)[~np.eye(4, dtype=bool)]
    assert gaps.min() > 3.0  # spread over the L, not stacked near the first point
    assert interior_points(geom, t, 0).shape == (0, 2)
    sliver = shapely.box(0, 0, 50, 1e-9)  # no room for more than the representative point
    assert len(interior_points(sliver, Affine.identity(), 3)) <= 1


def all_valid(window: Window) -> np.ndarray:
    return np.ones((int(window.height), int(window.width)), bool)


def test_iou_counts_true_pixel_areas_and_an_empty_mask_scores_zero() -> None:
    frame = SceneFrame("s.tif", "EPSG:32633", T, H, W, lambda r, c: np.ones(len(r), bool),
                       all_valid)  # fmt: skip
    square = shapely.box(*(T @ (10, 20)), *(T @ (20, 10)))  # pixels rows/cols 10-19
    left = (10, 10, np.ones((10, 5), bool))
    shifted = (10, 15, np.ones((10, 10), bool))
    got = [mask_iou(square, m, frame) for m in (left, None, shifted)]
    assert got == pytest.approx([0.5, 0.0, 1 / 3], rel=1e-5)
    lonlat = SceneFrame("s.tif", "EPSG:4326", Affine(0.1, 0, 0, 0, -0.1, 80), 300, 300,
                        frame.valid_at, all_valid)  # fmt: skip
    rows = shapely.box(0, 70, 1, 80)  # 10 x 100 px from 80 N to 70 N: px shrink northward
    top_half = (0, 0, np.ones((50, 10), bool))
    truth = pixel_area_m2("EPSG:4326", lonlat.transform, np.arange(100), np.arange(10)).sum(1)
    assert mask_iou(rows, top_half, lonlat) == pytest.approx(truth[:50].sum() / truth.sum())
    summary = summarize_ious(np.array(got), empty=1)
    assert (summary.count, summary.empty) == (3, 1)
    assert summary.mean == pytest.approx((0.5 + 1 / 3) / 3, rel=1e-5)
    assert summary.median == pytest.approx(1 / 3, rel=1e-5)
    assert summary.share_50 == pytest.approx(1 / 3)


def test_interior_points_join_the_box_prompt(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    fake_decode(monkeypatch, share_decoder([1.0, 1.0], seen))
    layer = box_layer(tmp_path / "b.gpkg", BOXES[:2])
    run_prompt(image, sam, tmp_path, layer, interior_points=3)
    (call,) = seen  # one window, one decode of both prompts
    assert call["points"].shape == (2, 3, 2) and (call["labels"] == 1).all()
    for box, points in zip(call["boxes"], call["points"], strict=True):
        assert ((points > box[:2]) & (points < box[2:])).all()


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:4326"])
def test_each_polygon_gets_its_iou_with_the_refined_polygon(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crs: str
) -> None:
    fake_decode(monkeypatch, share_decoder([0.5, 1.0, 0.0]))
    layer = box_layer(tmp_path / "b.gpkg", BOXES, crs=crs)
    result = run_prompt(image, sam, tmp_path, layer)
    table = gpd.read_file(tmp_path / "o.gpkg")
    # a reprojected rectangle's box is a hair larger than it: the mask too (4326 only)
    tol = 1e-5 if crs == "EPSG:32633" else 0.02
    assert list(table["object_id"]) == [1, 2]
    assert list(table["input_iou"]) == pytest.approx([0.5, 1.0], abs=tol)
    assert (result.iou.count, result.iou.empty) == (3, 1)
    assert result.iou.mean == pytest.approx(0.5, abs=tol)
    assert result.iou.median == pytest.approx(0.5, abs=tol)
    assert result.iou.share_50 == pytest.approx(2 / 3)


def test_the_cli_prints_the_iou_summary(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_decode(monkeypatch, share_decoder([0.5, 1.0]))
    layer = box_layer(tmp_path / "b.gpkg", BOXES[:2])
    result = CliRunner().invoke(cli, ["prompt", str(image), "-m", sam, "--boxes", str(layer),
                                      "--interior-points", "2", "-o", str(tmp_path / "o.tif"),
                                      "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "input IoU mean 0.750, median 0.750, 100.0% >= 0.5 over 2 input polygons" in (
        result.output
    )


def run_prompt(image: Path, sam: str, tmp: Path, layer: Path, **kw: Any) -> Any:
    opts = PromptOptions(device="cpu", boxes=str(layer), **kw)
    return prompt_scene(image, sam, tmp / "o.tif", opts, tmp / "o.gpkg")


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:4326"])
def test_evaluate_scores_sam_with_a_box_per_reference_polygon(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crs: str
) -> None:
    fake_decode(monkeypatch, share_decoder([0.25, 1.0, 0.5]))
    layer = box_layer(tmp_path / "ref.gpkg", BOXES, crs=crs)
    result = CliRunner().invoke(cli, ["evaluate", "-m", sam, "--image", str(image), "--labels",
                                      str(layer), "-o", str(tmp_path / "ev"), "--device",
                                      "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    tol = 1e-5 if crs == "EPSG:32633" else 0.02
    assert metrics["task"] == "prompt" and metrics["count"] == 3 and metrics["empty"] == 0
    assert [o["feature"] for o in metrics["objects"]] == [1, 2, 3]
    assert [o["iou"] for o in metrics["objects"]] == pytest.approx([0.25, 1.0, 0.5], abs=tol)
    assert metrics["mean_iou"] == pytest.approx(1.75 / 3, abs=tol)
    assert metrics["median_iou"] == pytest.approx(0.5, abs=tol)
    assert metrics["share_iou_0_5"] == pytest.approx(2 / 3)
    assert "over 3 reference polygons" in result.output
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["metrics.json"]


def _no_crs_layer(path: Path) -> Path:
    """A polygon layer in the scene's (projected) coordinates that declares no CRS."""
    x0, y0 = T.c + 100 * T.a, T.f + 100 * T.e
    box = shapely.box(x0, y0 + 50 * T.e, x0 + 50 * T.a, y0)
    gpd.GeoDataFrame(geometry=[box], crs=None).to_file(path)
    return path


#: refusals: (command line after `geoseg` from (tmp, image, sam), words in the one line).
REFUSALS: dict[str, tuple[Any, str]] = {
    "interior-points-with-a-point": (
        lambda t, i, m: ["prompt", i, "-m", m, "--point", "501000,5099000", "--interior-points",
                         "2", "-o", t / "o.tif"], "give --boxes"),
    "evaluate-sam-on-a-raster": (
        lambda t, i, m: ["evaluate", "-m", m, "--image", i, "--labels", i, "-o", t / "ev"],
        "scored against a polygon layer"),
    "evaluate-sam-reference-outside": (
        lambda t, i, m: ["evaluate", "-m", m, "--image", i, "--labels",
                         box_layer(t / "r.gpkg", [(5000, 5000, 5010, 5010)]), "-o", t / "ev"],
        "no prompt is left"),
    "evaluate-sam-reference-outside-names-its-crs-option": (
        lambda t, i, m: ["evaluate", "-m", m, "--image", i, "--labels",
                         box_layer(t / "r.gpkg", [(5000, 5000, 5010, 5010)]), "-o", t / "ev"],
        "CRS (--labels-crs)"),
    "evaluate-sam-reference-without-crs": (
        lambda t, i, m: ["evaluate", "-m", m, "--image", i, "--labels",
                         _no_crs_layer(t / "nocrs.gpkg"), "-o", t / "ev"], "--labels-crs"),
    "evaluate-sam-with-prediction": (
        lambda t, i, m: ["evaluate", "--task", "prompt", "--prediction", i, "--labels",
                         box_layer(t / "r.gpkg", [BOXES[0]]), "-o", t / "ev"], "-m SAM_MODEL"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals(case: str, image: Path, sam: str, tmp_path: Path) -> None:
    make, words = REFUSALS[case]
    args = [str(a) for a in make(tmp_path, image, sam)]
    before = set(tmp_path.rglob("*"))
    result = CliRunner().invoke(cli, [*args, "--device", "cpu"] if "-m" in args else args)
    assert result.exit_code == 2 and words in result.output, result.output
    assert set(tmp_path.rglob("*")) == before


def test_evaluate_on_spacenet_buildings_with_a_random_sam(
    shared_data: Path, tmp_path: Path
) -> None:
    """The shared SpaceNet chip (1 band, uint16, 43 footprints): every footprint is prompted
    (with interior points: boxes and padded points through the real decoder) and scored."""
    chip = shared_data / "spacenet_atlanta_buildings"
    folder = sam_folder(tmp_path / "folder")
    model = import_model(folder, tmp_path / "pan.safetensors",
                         ImportOptions(("PAN",), scale=6615.0)).output  # fmt: skip
    result = CliRunner().invoke(cli, ["evaluate", "-m", str(model), "--image",
                                      str(chip / "sample_geotiff.tif"), "--labels",
                                      str(chip / "geotiff_labels.geojson"), "-o",
                                      str(tmp_path / "ev"), "--interior-points", "2",
                                      "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert (metrics["count"], metrics["outside"], metrics["interior_points"]) == (43, 0, 2)
    ious = np.array([o["iou"] for o in metrics["objects"]])
    assert len(ious) == 43 and ((ious >= 0) & (ious <= 1)).all()
    assert metrics["mean_iou"] == pytest.approx(ious.mean())
    assert metrics["median_iou"] == pytest.approx(np.median(ious))


@pytest.mark.parametrize("corner", [(64, 64), (H - 200, W - 100)])
def test_windows_read_the_scene_pixels_inside_and_nodata_outside(
    tmp_path: Path, corner: tuple[int, int]
) -> None:
    """Windows wholly inside skip the boundless (VRT) read; both kinds read the same pixels."""
    data = (textured_scene(H, W, 3) // 16).astype(np.uint8)
    path = write_raster(tmp_path / "s.tif", data, transform=T, descriptions=("R", "G", "B"))
    row0, col0 = corner
    with rasterio.open(path) as src:
        values, valid = read_window(src, [1, 2, 3], PromptWindow(0, row0, col0, S), S)
    rows, cols = min(S, H - row0), min(S, W - col0)
    assert (values[:, :rows, :cols] == data[:, row0 : row0 + rows, col0 : col0 + cols]).all()
    assert valid[:rows, :cols].all() and not valid[rows:].any() and not valid[:, cols:].any()
    assert (values[:, rows:] == 0).all() and (values[:, :, cols:] == 0).all()


def test_a_box_on_nodata_is_not_scored_by_prompt(
    tmp_path: Path, sam: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``evaluate`` does: a polygon over no data is neither an IoU nor an empty mask
    (``prompt`` counted it as "1 empty mask" at IoU 0)."""
    data = (textured_scene(H, W, 3) // 16).astype(np.uint8) + 1
    c0, r0, c1, r1 = BOXES[2]
    data[:, r0 - 5 : r1 + 5, c0 - 5 : c1 + 5] = 0  # the third box lies on nodata
    image = write_raster(tmp_path / "n.tif", data, transform=T, nodata=0,
                         descriptions=("R", "G", "B"))  # fmt: skip
    fake_decode(monkeypatch, share_decoder([0.5, 1.0, 0.0]))
    result = run_prompt(image, sam, tmp_path, box_layer(tmp_path / "b.gpkg", BOXES))
    assert (result.iou.count, result.iou.empty) == (2, 0)
    assert result.iou.mean == pytest.approx(0.75, abs=1e-5)
