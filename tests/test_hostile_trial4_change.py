"""Hostile inputs from a new-user trial of `geoseg change` / `geoseg run` (trial 4).

Dated inputs must keep their time order even with undated ones between them; an
``--overwrite`` never swaps a labelled ``samples.gpkg`` for an unlabelled one; the line
that says the order given was taken names each map and what its tags lack; a scene
date tag that is no date is warned about once, not dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from shapely.geometry import Point

from geoseg.cli import cli
from geoseg.errors import DateOrderError
from geoseg.pipelines.time_order import check_time_order, scenes_in_time_order
from geoseg.pipelines.track_dates import dates_in_time_order
from tests.change.helpers import write_labels
from tests.conftest import TINY_BANDS, sample_run_folder, textured_scene, write_raster


def _water_grows(rows: int) -> np.ndarray:
    """A 20 x 30 map: forest (1), the top ``rows`` rows water (4)."""
    out = np.full((20, 30), 1, np.uint8)
    out[:rows] = 4
    return out


def _maps(tmp: Path, dates: list[str | None], source: str | None = None) -> list[str]:
    """One map per date (named m0, m1 ...); ``source``: their DATE_SOURCE tag."""
    paths = []
    for i, date in enumerate(dates):
        path = write_labels(tmp / f"m{i}.tif", _water_grows(4 * i), date=date)
        if source:
            with rasterio.open(path, "r+") as dst:
                dst.update_tags(DATE_SOURCE=source)
        paths.append(str(path))
    return paths


#: case -> (DATE tag of each map, in the order given; words of the one-line refusal,
#: or None when it runs and says the order given was taken)
UNDATED_BETWEEN: dict[str, tuple[list[str | None], list[str] | None]] = {
    "newest first around an undated map": (
        ["2015-09-09", None, "2015-07-11"],
        ["m2.tif (acquired 2015-07-11) is listed after", "m0.tif (acquired 2015-09-09)",
         "acquired 2015-09-09, undated, 2015-07-11", "list the maps oldest first"],
    ),
    "undated first, dated ones reversed": (
        [None, "2015-09-09", "2015-07-11"],
        ["m2.tif (acquired 2015-07-11) is listed after", "m1.tif (acquired 2015-09-09)"],
    ),
    "first and last the same date around an undated map": (
        ["2015-07-11", None, "2015-07-11"], ["both dated 2015-07-11", "m0.tif", "m2.tif"],
    ),
    "dated ones in order around an undated map": (["2015-07-11", None, "2015-09-09"], None),
    "undated first, dated ones in order": ([None, "2015-07-11", "2015-09-09"], None),
}  # fmt: skip


@pytest.mark.parametrize("case", list(UNDATED_BETWEEN))
def test_change_keeps_dated_maps_in_order_around_undated_ones(tmp_path: Path, case: str) -> None:
    dates, words = UNDATED_BETWEEN[case]
    maps = _maps(tmp_path, dates)
    out = tmp_path / "rep"
    res = CliRunner().invoke(cli, ["change", *maps, "-o", str(out)])
    if words is not None:
        assert res.exit_code == 2, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert all(w in res.output for w in words), res.output
        assert not out.exists()
        return
    assert res.exit_code == 0, res.output
    undated = maps[dates.index(None)]
    assert f"the order given is taken as time order: {undated} has no acquisition date" in (
        res.output
    )
    doc = json.loads((out / "transitions.json").read_text())
    assert doc["time_order"] == "as given (a map has no acquisition date)"


#: case -> (DATE tag of each scene given; refused)
SCENES: dict[str, tuple[list[str | None], bool]] = {
    "newest first around an undated scene": (["2015-09-09", None, "2015-07-11"], True),
    "same first and last date around an undated scene": (
        ["2015-07-11", None, "2015-07-11"], True,
    ),
    "in order around an undated scene": (["2015-07-11", None, "2015-09-09"], False),
}  # fmt: skip


def _scenes(tmp: Path, dates: list[str | None]) -> list[str]:
    paths = []
    for i, date in enumerate(dates):
        path = write_raster(tmp / f"s{i}.tif", textured_scene(32, 32, seed=i),
                            descriptions=TINY_BANDS)  # fmt: skip
        if date:
            with rasterio.open(path, "r+") as dst:
                dst.update_tags(DATE=date)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("case", list(SCENES))
def test_stack_and_track_keep_dated_scenes_in_order(tmp_path: Path, case: str) -> None:
    dates, refused = SCENES[case]
    scenes = _scenes(tmp_path, dates)
    out = tmp_path / "stack.tif"
    res = CliRunner().invoke(cli, ["stack", *scenes, "-o", str(out)])
    assert res.exit_code == (2 if refused else 0), res.output
    assert out.exists() != refused
    if refused:
        assert "s2.tif" in res.output and "s0.tif" in res.output, res.output
        with pytest.raises(DateOrderError):  # geoseg run's check
            scenes_in_time_order(scenes)
    else:
        assert scenes_in_time_order(scenes) is False  # order taken as given
    # track: equal dates pass, a reversed pair around an undated scene does not
    from geoseg.io.raster import open_scene

    opened = [open_scene(s) for s in scenes]
    if dates[0] != dates[-1] and refused:
        with pytest.raises(DateOrderError):
            dates_in_time_order(opened)
    else:
        assert dates_in_time_order(opened) is False


def test_check_time_order_returns_whether_every_input_is_dated() -> None:
    import datetime as dt

    day = dt.date.fromisoformat
    assert check_time_order(["a", "b"], [day("2015-07-11"), day("2015-09-09")], "maps")
    assert not check_time_order(["a", "b", "c"], [None, day("2015-07-11"), None], "maps")
    with pytest.raises(DateOrderError, match=r"b\.tif \(acquired 2015-07-11\) is listed after a "):
        check_time_order(["a", "x", "b.tif"], [day("2015-09-09"), None, day("2015-07-11")], "m")


def _label_samples(path: Path, labels: list[str | None]) -> None:
    """Fill the first ``len(labels)`` points' ``reference`` column, as a user would."""
    frame = gpd.read_file(path)
    refs = frame["reference"].astype(object)
    for i, label in enumerate(labels):
        refs.iloc[i] = label
    frame["reference"] = refs
    frame.to_file(path)


#: case -> (reference values written into the first points; refused with this count)
LABELS: dict[str, tuple[list[str | None], int | None]] = {
    "three points labelled": (["forest", "water", "forest"], 3),
    "one point labelled": ([None, "forest"], 1),
    "blank labels only": (["", "  "], None),
    "unlabelled": ([], None),
}


@pytest.mark.parametrize("case", list(LABELS))
def test_overwrite_never_replaces_labelled_samples(tmp_path: Path, case: str) -> None:
    labels, count = LABELS[case]
    maps = _maps(tmp_path, ["2015-07-11", "2015-09-09"])
    out = tmp_path / "report"
    args = ["change", *maps, "-o", str(out), "--samples-se", "0.05"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    samples = out / "samples.gpkg"
    _label_samples(samples, labels)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    res = CliRunner().invoke(cli, [*args, "--overwrite"])
    if count is None:  # nothing to lose: replaced as before
        assert res.exit_code == 0, res.output
        assert gpd.read_file(samples)["reference"].isna().all()
        return
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    for words in (str(samples), f"holds {count} labelled sample points",
                  "move it out of the report folder", "pass the moved file as"):  # fmt: skip
        assert words in res.output, res.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing written
    kept = gpd.read_file(samples)["reference"]
    assert int(kept.notna().sum()) >= count and labels[-1] in set(kept)


def test_run_overwrite_refuses_labelled_samples_before_any_work(tmp_path: Path) -> None:
    root = sample_run_folder(tmp_path)
    flow = root / "workflows" / "labelled.yaml"
    flow.write_text(
        "version: 1\nname: labelled\nscenes:\n  - sample_data/scene_before.tif\n"
        "  - sample_data/scene_after.tif\nmodel: sample_data/models/landcover_s2.safetensors\n"
        "output: workflow_out/labelled\nchange: {samples_se: 0.05}\n"
    )
    report = root / "workflow_out" / "labelled" / "report"
    report.mkdir(parents=True)
    points = gpd.GeoDataFrame(
        {"stratum": [0, 5], "reference": ["forest", None]}, crs="EPSG:32633",
        geometry=[Point(500010, 5099990), Point(500020, 5099980)],
    )  # fmt: skip
    points.to_file(report / "samples.gpkg")
    res = CliRunner().invoke(cli, ["run", str(flow), "--root", str(root), "--overwrite"])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert f"{report / 'samples.gpkg'} holds 1 labelled sample points" in res.output
    assert "move it out of the report folder" in res.output
    assert "--reference to geoseg change" in res.output
    assert sorted(os.listdir(report.parent)) == ["report"]  # no map predicted
    assert os.listdir(report) == ["samples.gpkg"]


#: case -> (DATE of each map, newest first; their DATE_SOURCE; words of the note)
NOTES: dict[str, tuple[list[str | None], str | None, list[str]]] = {
    "dated by file time stamps": (
        ["2015-09-09", "2015-07-11"], "TIFFTAG_DATETIME",
        ["m0.tif has DATE 2015-09-09 taken from a file time stamp "
         "(DATE_SOURCE=TIFFTAG_DATETIME), which is not an acquisition date", "m1.tif has DATE "
         "2015-07-11 taken from a file time stamp"],
    ),
    "a DATE that is no date": (
        ["11/07/2015", "2015-07-11"], None,
        ["m0.tif has DATE '11/07/2015', which is not a date (ISO YYYY-MM-DD expected)"],
    ),
    "no DATE": ([None, "2015-07-11"], None, ["m0.tif has no acquisition date (DATE tag)"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(NOTES))
def test_the_order_note_says_what_each_map_lacks(tmp_path: Path, case: str) -> None:
    dates, source, words = NOTES[case]
    maps = _maps(tmp_path, dates, source)
    res = CliRunner().invoke(cli, ["change", *maps, "-o", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "not every map carries" not in res.output
    line = next(s for s in res.output.splitlines() if "order given" in s)
    assert line.startswith("the order given is taken as time order: "), line
    assert all(w in line for w in words), line
    if source:  # both maps do have a DATE: the line may not say otherwise
        assert "no acquisition date (DATE tag)" not in line


def test_an_unreadable_scene_date_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scene = _scenes(tmp_path, ["11/07/2015"])[0]
    caplog.set_level(logging.WARNING)
    assert scenes_in_time_order([scene]) is False  # run and stack read it first
    out = tmp_path / "lc.tif"
    res = CliRunner().invoke(cli, ["predict", scene, "-m", "spectral", "-o", str(out)])
    assert res.exit_code == 0, res.output
    said = [m for r in caplog.records if "could not be read as a date" in (m := r.getMessage())]
    assert said == [
        f"{scene}: its DATE tag '11/07/2015' could not be read as a date and is ignored; "
        "write it as ISO YYYY-MM-DD (e.g. 2015-07-11)"
    ]
    with rasterio.open(out) as src:
        assert "DATE" not in src.tags()
