"""``geoseg track``: where a date resampled onto the first date's grid holds no data, and
what ``--overwrite`` leaves of an earlier run in the output folder.

The propagation is replaced by known masks (``shrinking_squares``), so the expected
class and id rasters, the validity the model is given and the areas are exact.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.areas import pixel_area_m2
from geoseg.models.sam2 import Sam2Prompter
from geoseg.pipelines.importing import ImportOptions, import_model
from tests.conftest import write_raster
from tests.models.sam2_folders import sam2_folder
from tests.pipelines.test_track import (
    BANDS,
    BOXES,
    H,
    T,
    W,
    box_layer,
    read_csv,
    scene,
    shrinking_squares,
    track,
)

#: Columns the moved date lacks (its grid starts this many px further east).
SHIFT = 6
#: A nodata hole of the moved date, in first-date px ``(row0, row1, col0, col1)``.
HOLE = (40, 50, 20, 30)
#: case -> (dtype of the moved date, its band names, its declared nodata and hole).
MOVED: dict[str, tuple[str, tuple[str, ...], float | None]] = {
    "float32": ("float32", BANDS, None),
    "uint8-5-bands": ("uint8", ("R", "G", "B", "N", "S"), None),
    # GDAL takes a 4-band uint8 GeoTIFF's last band as alpha: the VRT keeps it as its own
    "uint8-4-bands-alpha": ("uint8", ("R", "G", "B", "N"), None),
    "float32-nodata-0-hole": ("float32", BANDS, 0.0),
}


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("sam2v")
    folder = sam2_folder(root / "video")
    return str(import_model(folder, root / "video.safetensors", ImportOptions(BANDS)).output)


def moved_date(tmp_path: Path, case: str) -> tuple[str, str]:
    """The first date and the same place on a grid ``SHIFT`` px further east (with the
    case's dtype, bands and nodata hole): the second date lacks the first columns."""
    dtype, names, nodata = MOVED[case]
    first = scene(tmp_path / "a.tif", 0, bands=len(names), names=names)
    with rasterio.open(first) as src:
        pixels = src.read().astype(dtype) + 1  # no pixel reads as nodata by chance
    if dtype == "float32":
        pixels /= 255
    if nodata is not None:
        r0, r1, c0, c1 = HOLE
        pixels[:, r0:r1, c0:c1] = nodata
    moved = tmp_path / "b.tif"
    write_raster(moved, np.ascontiguousarray(pixels[:, :, SHIFT:]),
                 transform=T @ Affine.translation(SHIFT, 0), descriptions=names)  # fmt: skip
    if nodata is not None:
        with rasterio.open(moved, "r+") as dst:
            dst.nodata = nodata
    return first, str(moved)


@pytest.mark.parametrize("case", list(MOVED))
def test_a_moved_date_is_nodata_off_its_footprint_and_its_nodata_and_counts_no_area_there(
    case: str, video: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(Sam2Prompter, "track", shrinking_squares(calls))
    out = tmp_path / "tracks"
    dates = moved_date(tmp_path, case)
    # the box spans columns 0-39: the moved date lacks its first SHIFT columns
    result = track(list(dates), video, out, "--boxes", box_layer(tmp_path / "p.gpkg",
                   [(0, 30, 40, 70)]))  # fmt: skip
    assert result.exit_code == 0, result.output
    missing = np.zeros((H, W), bool)
    missing[:, :SHIFT] = True
    if MOVED[case][2] is not None:
        r0, r1, c0, c1 = HOLE
        missing[r0:r1, c0:c1] = True
    # what the model was given: the first date valid everywhere in the scene, the
    # moved one only where it holds data (window px (y, x) is scene px (y - y0 + 30, x - x0))
    frames, valid = calls[0]["frames"], calls[0]["valid"]
    box = calls[0]["prompts"][0].box
    x0, y0 = round(box[0]), round(box[1])
    size = valid.shape[-1]
    rows, cols = np.arange(size) - y0 + 30, np.arange(size) - x0
    inside = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
    assert np.array_equal(valid[0], inside)
    here = np.zeros((size, size), bool)
    here[inside] = missing[np.ix_(rows.clip(0, H - 1), cols.clip(0, W - 1))][inside]
    assert np.array_equal(valid[1], inside & ~here)
    assert (frames[1][:, ~valid[1]] == 0).all()
    # date 2: the square shrunk by 5 px (rows 35-64, columns 5-34) less where it has no data
    expected = np.zeros((H, W), np.uint32)
    expected[35:65, 5:35] = 1
    expected[missing] = 0
    with rasterio.open(out / "b.tif") as src:
        cls, ids = src.read()
        assert np.array_equal(src.dataset_mask() == 0, missing)
    assert np.array_equal(cls == 255, missing) and np.array_equal(ids, expected)
    area_ha = pixel_area_m2("EPSG:32633", T, np.arange(H), np.arange(W))[expected == 1].sum() / 1e4
    assert float(read_csv(out / "areas.csv")[0]["b"]) == pytest.approx(area_ha, abs=1e-6)
    assert 0 < area_ha < 30 * 30 * 100 / 1e4  # fewer px than the 30 x 30 square


def test_overwrite_removes_an_earlier_runs_other_dates_and_nothing_else(
    video: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Sam2Prompter, "track", shrinking_squares([]))
    out = tmp_path / "tracks"
    layer = box_layer(tmp_path / "b.gpkg", BOXES)
    earlier = [scene(tmp_path / f"s{i}.tif", i, date=f"2021-0{i + 4}-01") for i in range(3)]
    assert track(earlier, video, out, "--boxes", layer).exit_code == 0
    # beside the earlier run: a file of the user's, a copy of a date COG under another
    # name, and an input scene of the next run, dated like none of the earlier dates
    (out / "notes.txt").write_text("mine\n", encoding="utf-8")
    shutil.copy(out / "2021-06-01.tif", out / "mine.tif")
    inside = scene(out / "2021-04-01_scene.tif", 7, date="2021-08-01")
    result = track([earlier[1], inside], video, out, "--boxes", layer, "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "2021-04-01_scene.tif", "2021-05-01.tif", "2021-08-01.tif", "areas.csv", "mine.tif",
        "notes.txt",
    ]  # fmt: skip
    assert list(read_csv(out / "areas.csv")[0]) == [
        "object_id", "name", "2021-05-01", "2021-08-01", "note"
    ]  # fmt: skip
    # an input is never removed, even named in the earlier areas.csv and taken for a date COG
    (out / "areas.csv").write_text("object_id,name,2021-04-01_scene,note\n", encoding="utf-8")
    monkeypatch.setattr("geoseg.pipelines.track_outputs._is_date_cog", lambda path: True)
    result = track([earlier[0], inside], video, out, "--boxes", layer, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "2021-04-01_scene.tif").is_file() and (out / "2021-04-01.tif").is_file()
