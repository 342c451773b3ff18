"""``geoseg track`` with a tiny random SAM 2 video model: prompts on one date, masks on all.

Random weights give meaningless masks, so the mechanics are checked with real
values: one COG per date on the first date's grid with the prompts' ids, areas
equal to those of the written masks, and (with the propagation replaced by known
masks per date) exact placement, areas measured independently with pyproj, and
a lost object's zero and note.
"""

from __future__ import annotations

import csv
import logging
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
from rasterio.enums import MaskFlags

from geoseg.areas import pixel_area_m2
from geoseg.cli import cli
from geoseg.models.sam2 import FramePrompt, Sam2Prompter, _point_inputs, load_sam2
from geoseg.pipelines.importing import ImportOptions, import_model
from geoseg.pipelines.prompt_inputs import Prompt
from geoseg.pipelines.prompt_windows import PromptWindow
from geoseg.pipelines.track import frame_prompt
from tests.conftest import textured_scene, write_raster
from tests.models.sam2_folders import sam2_folder
from tests.models.sam_folders import sam_folder

T = Affine(10, 0, 500000, 0, -10, 5100000)
H, W = 160, 200
BANDS = ("R", "G", "B")
#: Two boxes in scene px ``(col0, row0, col1, row1)``, 40 x 40 px each.
BOXES = [(20, 30, 60, 70), (120, 90, 160, 130)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sam2")
    opts = ImportOptions(BANDS)
    return {
        name: str(import_model(folder, root / f"{name}.safetensors", opts).output)
        for name, folder in (
            ("video", sam2_folder(root / "video")),
            ("image", sam2_folder(root / "image", video=False)),
            ("sam", sam_folder(root / "sam")),
        )
    }


def scene(path: Path, seed: int, transform: Affine = T, bands: int = 3, date: str | None = None,
          shape: tuple[int, int] = (H, W), names: tuple[str, ...] = ("R", "G", "B", "N"),
          tag: str = "DATE") -> str:  # fmt: skip
    data = (textured_scene(*shape, bands, seed=seed) // 16).astype(np.uint8)
    write_raster(path, data, transform=transform, descriptions=names[:bands])
    if date is not None:
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(**{tag: date})
    return str(path)


@pytest.fixture
def dates(tmp_path: Path) -> list[str]:
    return [scene(tmp_path / f"s{i}.tif", i, date=f"2021-0{i + 4}-01") for i in range(3)]


def box_layer(path: Path, boxes: list[tuple[int, int, int, int]]) -> str:
    geoms = [shapely.box(*(T @ (c0, r1)), *(T @ (c1, r0))) for c0, r0, c1, r1 in boxes]
    names = [f"field{i + 1}" for i in range(len(boxes))]
    gpd.GeoDataFrame({"name": names}, geometry=geoms, crs="EPSG:32633").to_file(path)
    return str(path)


def track(dates: list[str], model: str, out: Path, *extra: str) -> Any:
    args = ["track", *dates, "-m", model, "-o", str(out), "--device", "cpu", *extra]
    return CliRunner().invoke(cli, args)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def shrinking_squares(calls: list[dict[str, Any]]) -> Any:
    """A ``track`` that gives each box a square shrinking 5 px per side per date (empty
    on the third date), recording what it was given."""

    def fake(self: Sam2Prompter, frames: np.ndarray, valid: np.ndarray,
             prompts: list[FramePrompt], start: int) -> np.ndarray:  # fmt: skip
        calls.append({"frames": frames, "valid": valid, "prompts": prompts, "start": start})
        out = np.zeros((len(frames), len(prompts), self.size, self.size), bool)
        for p, prompt in enumerate(prompts):
            assert prompt.box is not None
            x0, y0, x1, y1 = (round(v) for v in prompt.box)
            for t in range(min(len(frames), 2)):
                out[t, p, y0 + 5 * t : y1 - 5 * t, x0 + 5 * t : x1 - 5 * t] = True
        return out

    return fake


def geodesic_area_m2(col0: int, row0: int, col1: int, row1: int) -> float:
    """pyproj's ellipsoidal area of a rectangle of scene px (edges densified to 1 m)."""
    poly = shapely.segmentize(shapely.box(*(T @ (col0, row1)), *(T @ (col1, row0))), 1.0)
    to_ll = pyproj.Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(*np.asarray(poly.exterior.coords).T)
    area, _ = pyproj.Geod(ellps="WGS84").polygon_area_perimeter(lon, lat)
    return abs(area)


def test_a_real_model_writes_one_cog_per_date_with_the_same_ids_and_their_areas(
    models: dict[str, str], dates: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "tracks"
    result = track(dates, models["video"], out, "--boxes", box_layer(tmp_path / "b.gpkg", BOXES),
                   "--prompt-date", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    labels = ["2021-04-01", "2021-05-01", "2021-06-01"]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{d}.tif" for d in labels]
                                                           + ["areas.csv"])  # fmt: skip
    rows = read_csv(out / "areas.csv")
    assert list(rows[0]) == ["object_id", "name", *labels, "note"]
    assert [r["object_id"] for r in rows] == ["1", "2"] and [r["name"] for r in rows] == [
        "field1", "field2"
    ]  # fmt: skip
    area = pixel_area_m2("EPSG:32633", T, np.arange(H), np.arange(W))
    for label in labels:
        with rasterio.open(out / f"{label}.tif") as src:
            assert (src.crs, src.transform, src.shape, src.count) == ("EPSG:32633", T, (H, W), 2)
            ids = src.read(2)
        assert set(np.unique(ids)) <= {0, 1, 2}
        for row in rows:
            truth = area[ids == int(row["object_id"])].sum() / 1e4
            assert float(row[label]) == pytest.approx(truth, abs=1e-6)
            assert (truth == 0) == (label in row["note"])


def test_known_masks_land_exactly_with_true_areas_and_a_lost_object_is_noted(
    models: dict[str, str], dates: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(Sam2Prompter, "track", shrinking_squares(calls))
    out = tmp_path / "tracks"
    result = track(dates, models["video"], out, "--boxes", box_layer(tmp_path / "b.gpkg", BOXES))
    assert result.exit_code == 0, result.output
    assert "2 object-dates without a mask" in result.output  # 2 objects x the last date
    assert calls[0]["start"] == 0 and calls[0]["frames"].shape[:2] == (3, 3)
    labels = ["2021-04-01", "2021-05-01", "2021-06-01"]
    rows = read_csv(out / "areas.csv")
    for t, label in enumerate(labels):
        with rasterio.open(out / f"{label}.tif") as src:
            cls, ids = src.read()
        expected = np.zeros((H, W), np.uint32)
        for k, (c0, r0, c1, r1) in enumerate(BOXES, start=1):
            if t < 2:
                expected[r0 + 5 * t : r1 - 5 * t, c0 + 5 * t : c1 - 5 * t] = k
            truth_ha = geodesic_area_m2(c0 + 5 * t, r0 + 5 * t, c1 - 5 * t, r1 - 5 * t) / 1e4
            assert float(rows[k - 1][label]) == pytest.approx(truth_ha if t < 2 else 0.0,
                                                              abs=2e-6)  # fmt: skip
        assert np.array_equal(ids, expected) and np.array_equal(cls, (expected > 0) * 1)
    assert float(rows[0][labels[0]]) == pytest.approx(16.0, rel=2e-3)  # 40 x 40 px of ~100 m²
    assert [r["note"] for r in rows] == ["no mask on 2021-06-01"] * 2


def test_a_date_on_another_grid_is_warped_onto_the_first_with_a_warning(
    models: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(Sam2Prompter, "track", shrinking_squares(calls))
    first = scene(tmp_path / "a.tif", 0)
    with rasterio.open(first) as src:
        pixels = src.read()
    # the same pixels, on a grid starting 6 px further east: no data in the first 6 columns
    shifted = tmp_path / "b.tif"
    east = T @ Affine.translation(6, 0)
    write_raster(
        shifted, np.ascontiguousarray(pixels[:, :, 6:]), transform=east, descriptions=BANDS
    )
    out = tmp_path / "tracks"
    with caplog.at_level(logging.WARNING):
        result = track([first, str(shifted)], models["video"], out, "--boxes",
                       box_layer(tmp_path / "b.gpkg", [(0, 30, 40, 70)]))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert any("on a different grid" in r.getMessage() and "b.tif" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    frames, valid = calls[0]["frames"], calls[0]["valid"]
    both = valid[0] & valid[1]
    assert (valid[0] & ~valid[1]).sum() > 0  # the 6 columns the second date lacks
    assert np.abs(frames[1].astype(int) - frames[0].astype(int))[:, both].max() <= 1
    with rasterio.open(out / "b.tif") as src:
        assert (src.transform, src.shape) == (T, (H, W))
        cls, ids = src.read()
    assert (cls[:, :6] == 255).all() and (cls[:, 6:] != 255).all()
    # the square of the second date (columns 5-34) is clipped to where that date has data
    assert (ids[35:65, 6:35] == 1).all() and ids[:, :6].sum() == 0 and (ids > 0).sum() == 30 * 29


def _write(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """The scenes and model of one bad input (``models`` key or path)."""
    a = scene(tmp_path / "a.tif", 0)
    if case == "one-date":
        return [a], "video"
    if case == "other-bands":
        return [a, scene(tmp_path / "b.tif", 1, bands=4)], "video"
    if case == "later-date-holds-the-models-bands-only":
        return [scene(tmp_path / "a.tif", 0, bands=4), scene(tmp_path / "b.tif", 1)], "video"
    if case == "disjoint":
        far = T @ Affine.translation(5 * W, 0)
        return [a, scene(tmp_path / "b.tif", 1, transform=far)], "video"
    if case == "disjoint-B1-B01":  # names the README calls the same band: the extents are at fault
        far = T @ Affine.translation(5 * W, 0)
        return [
            scene(tmp_path / "a.tif", 0, names=("B4", "B3", "B2")),
            scene(tmp_path / "b.tif", 1, transform=far, names=("B04", "B03", "B02")),
        ], "video"
    if case == "out-of-order":  # eo-learn's ACQUISITION tag, as the Slovenia scenes carry
        return [
            scene(tmp_path / f"{d}.tif", i, date=f"2015-0{d}-11T10:00:08", tag="ACQUISITION")
            for i, d in enumerate((8, 7, 9))
        ], "video"
    return [a, scene(tmp_path / "b.tif", 1)], case.split(":")[0]


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        ("one-date", [], "at least two dates"),
        ("other-bands", [], "differ from those of"),
        (
            "later-date-holds-the-models-bands-only",
            [],
            "every date feeds the model's R, G, B from the same band positions: give every "
            "date the same bands, e.g. only the model's R, G, B in each, or all 4 of the first",
        ),
        ("disjoint", [], "disjoint extents"),
        ("disjoint-B1-B01", [], "disjoint extents"),
        ("out-of-order", [], "acquired 2015-08-11, 2015-07-11, 2015-09-11, in the order given"),
        ("sam", [], "tracking needs SAM 2"),
        ("image", [], "image-only SAM 2 checkpoint"),
        (
            "video:late-prompt",
            ["--prompt-date", "3"],
            "--prompt-date 3: give a date between 1 and 2",
        ),
        ("video:outside", ["--outside"], "no prompt is left"),
        # the prompts point at date 2: they are outside its file
        (
            "video:outside-date-2",
            ["--outside", "--prompt-date", "2"],
            "b.tif); check the prompts and their CRS",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_inputs_exit_2_in_one_line_and_write_nothing(
    models: dict[str, str], tmp_path: Path, case: str, extra: list[str], message: str
) -> None:
    scenes, model = _write(tmp_path, case)
    boxes = [(20, 30, 60, 70)] if "--outside" not in extra else [(3 * W, 0, 3 * W + 9, 9)]
    extra = [e for e in extra if e != "--outside"]
    out = tmp_path / "tracks"
    result = track(scenes, models[model], out, "--boxes", box_layer(tmp_path / "p.gpkg", boxes),
                   *extra)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_existing_outputs_are_refused_without_overwrite_and_kept(
    models: dict[str, str], dates: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Sam2Prompter, "track", shrinking_squares([]))
    out = tmp_path / "tracks"
    out.mkdir()
    (out / "areas.csv").write_text("mine\n", encoding="utf-8")
    layer = box_layer(tmp_path / "b.gpkg", BOXES)
    result = track(dates, models["video"], out, "--boxes", layer)
    assert result.exit_code == 2 and "areas.csv" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["areas.csv"]
    assert (out / "areas.csv").read_text(encoding="utf-8") == "mine\n"
    assert track(dates, models["video"], out, "--boxes", layer, "--overwrite").exit_code == 0
    assert read_csv(out / "areas.csv")[0]["object_id"] == "1"


def test_sam2_goes_forward_from_the_prompt_date_then_back(
    models: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prompter = load_sam2(models["video"], "cpu")
    assert prompter.video is not None
    seen: list[tuple[int, bool]] = []
    original = prompter.video.propagate_in_video_iterator

    def spy(session: Any, start_frame_idx: int, reverse: bool = False) -> Any:
        for step in original(session, start_frame_idx=start_frame_idx, reverse=reverse):
            seen.append((step.frame_idx, reverse))
            yield step

    monkeypatch.setattr(prompter.video, "propagate_in_video_iterator", spy)
    side = prompter.size
    frames = np.random.default_rng(0).integers(0, 255, (3, 3, side, side), dtype=np.uint8)
    prompts = [FramePrompt(4, np.zeros((0, 2)), np.zeros(0, np.int64), (10.0, 10, 50, 50)),
               FramePrompt(9, np.array([[80.5, 80.5]]), np.array([1]))]  # fmt: skip
    masks = prompter.track(frames, np.ones((3, side, side), bool), prompts, start=1)
    assert seen == [(1, False), (2, False), (1, True), (0, True)]
    assert masks.shape == (3, 2, side, side) and masks.dtype == bool


def test_prompts_reach_sam2_in_window_px_with_box_corners_labelled_2_and_3() -> None:
    window = PromptWindow(0, 10, 20, 128)
    box = frame_prompt(Prompt(3, np.zeros((0, 2)), np.zeros(0, np.int64), (25, 15, 45, 35), 0),
                       window)  # fmt: skip
    points = frame_prompt(Prompt(5, np.array([[30.5, 40.5]]), np.array([0]), None, 0), window)
    assert box.box == (5.0, 5.0, 25.0, 25.0) and box.points.shape == (0, 2)
    assert points.points.tolist() == [[10.5, 30.5]] and points.box is None
    both = _point_inputs(FramePrompt(1, np.array([[5.5, 6.5]]), np.array([0]), (10, 20, 30, 40)))
    assert both["point_coords"].tolist() == [[[[9.5, 19.5], [29.5, 39.5], [5.0, 6.0]]]]
    assert both["point_labels"].tolist() == [[[2, 3, 0]]]


#: case -> (per date: (ACQUISITION tag or None, band names)), areas.csv date columns,
#: whether the output says the order given is taken as time order).
DATED: dict[str, tuple[list[tuple[str | None, tuple[str, ...]]], list[str], bool]] = {
    "acquisition-tag-iso-columns": (
        [("2015-07-11T10:00:08", ("R", "G", "B")), ("2015-08-20T10:07:28", ("R", "G", "B"))],
        ["2015-07-11", "2015-08-20"], False,
    ),
    "B1-is-B01": ([("2015-07-11", ("B4", "B3", "B2")), ("2015-07-11", ("B04", "B03", "B02"))],
                  ["2015-07-11", "2015-07-11_2"], False),
    "undated-order-taken": ([(None, ("R", "G", "B")), (None, ("R", "G", "B"))], ["d0", "d1"],
                            True),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DATED))
def test_dates_are_named_by_acquisition_and_masked_where_nodata(
    case: str, models: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Sam2Prompter, "track", shrinking_squares([]))
    given, columns, undated = DATED[case]
    paths = [scene(tmp_path / f"d{i}.tif", i, date=d, names=n, tag="ACQUISITION")
             for i, (d, n) in enumerate(given)]  # fmt: skip
    out = tmp_path / "tracks"
    result = track(paths, models["video"], out, "--boxes", box_layer(tmp_path / "b.gpkg", BOXES))
    assert result.exit_code == 0, result.output
    assert ("the order given is taken as time order" in result.output) == undated
    assert list(read_csv(out / "areas.csv")[0]) == ["object_id", "name", *columns, "note"]
    with rasterio.open(out / f"{columns[0]}.tif") as src:  # band 1's 255 is the mask's nodata
        assert src.mask_flag_enums == ([MaskFlags.per_dataset],) * 2
        assert (src.dataset_mask() == 255).all()  # these scenes hold data everywhere
        # the acquisition date, as predict tags a label map (change reads it)
        assert src.tags().get("DATE") == (None if undated else columns[0][:10])


def test_dates_off_the_models_pixel_scale_are_warned_of(
    models: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """uint16 reflectance x 10000 on a SAM 2 imported for 0-255 images: saturated."""
    monkeypatch.setattr(Sam2Prompter, "track", shrinking_squares([]))
    paths = []
    for i in range(2):
        data = textured_scene(H, W, 3, seed=i).astype(np.uint16)  # 300-3999
        paths.append(str(write_raster(tmp_path / f"d{i}.tif", data, transform=T,
                                      descriptions=("R", "G", "B"))))  # fmt: skip
    with caplog.at_level(logging.WARNING):
        result = track(paths, models["video"], tmp_path / "t", "--boxes",
                       box_layer(tmp_path / "b.gpkg", BOXES))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert caplog.text.count("geoseg track sees a saturated image") == 2, caplog.text
    assert "--scale 10000 " in caplog.text
