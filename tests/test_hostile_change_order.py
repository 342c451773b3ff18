"""Hostile date orders, stale report files and unseen warnings in `geoseg change` and `run`.

Maps (or scenes) listed newest first turn every gain into a loss, with confidence:
where every input is dated they are refused (exit 2, one line naming both files and
their dates). ``--overwrite`` removes the report files of an earlier run that the new
run does not write, once it has succeeded, and nothing else. The report's
plausibility flags reach the terminal, and predict's warnings reach ``summary.json``
and the HTML report of a workflow.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from shapely.geometry import box

from geoseg.cli import cli
from geoseg.errors import GeosegError
from geoseg.io.outputs import output_run
from geoseg.synthetic import DATE_AFTER, DATE_BEFORE
from tests.change.helpers import SCHEMA, write_labels, write_probabilities
from tests.conftest import TINY_BANDS, sample_run_folder, textured_scene, write_raster

ROOT = Path(__file__).resolve().parents[1]


def _forest_to_water(rows: int) -> np.ndarray:
    """A 20 x 30 map: forest, with the top ``rows`` rows water."""
    out = np.full((20, 30), 1, np.uint8)
    out[:rows] = 4
    return out


def _dated_maps(tmp: Path, dates: list[str | None]) -> list[Path]:
    """One map per date (water grows by 4 rows a date), named by its index."""
    return [write_labels(tmp / f"m{i}.tif", _forest_to_water(4 * i), date=d)
            for i, d in enumerate(dates)]  # fmt: skip


def _probabilities(maps: list[Path]) -> list[Path]:
    """Each map's probability file (0.9 on its class), beside it."""
    out = []
    for path in maps:
        with rasterio.open(path) as src:
            labels = src.read(1)
        probs = np.stack([np.where(labels == c, 0.9, 0.05) for c in SCHEMA.ids]).astype(np.float32)
        out.append(write_probabilities(path, probs, path.with_name(f"{path.stem}_p.tif")))
    return out


#: case -> (DATE tag of each map, in the order given; the order to pass them in;
#: extra arguments; words of the one-line refusal, or None when it runs)
ORDERS: dict[str, tuple[list[str | None], list[int], list[str], list[str] | None]] = {
    "two maps newest first": (
        ["2015-07-11", "2015-09-09"], [1, 0], [],
        ["m0.tif (acquired 2015-07-11) is listed after", "m1.tif (acquired 2015-09-09)",
         "list the maps oldest first"],
    ),
    "same date twice": (
        ["2015-07-11", "2015-07-11"], [0, 1], [], ["both dated 2015-07-11", "m0.tif", "m1.tif"],
    ),
    "three dates, last two swapped, --consistency 2": (
        ["2015-07-11", "2015-08-20", "2015-09-09"], [0, 2, 1], ["--consistency", "2"],
        ["m1.tif (acquired 2015-08-20) is listed after", "m2.tif (acquired 2015-09-09)",
         "acquired 2015-07-11, 2015-09-09, 2015-08-20, in the order given"],
    ),
    "posterior rule, maps and probabilities both reversed": (
        ["2015-07-11", "2015-09-09"], [1, 0], ["--rule", "posterior", "--probabilities-of"],
        ["m0.tif (acquired 2015-07-11)", "list the maps oldest first"],
    ),
    "oldest first runs": (["2015-07-11", "2015-09-09"], [0, 1], [], None),
    "middle dates alike run": (["2015-07-11", "2015-07-11", "2015-09-09"], [0, 1, 2], [], None),
    "undated maps: order as given": ([None, None], [1, 0], [], None),
    "one map undated: order as given": (["2015-09-09", None], [0, 1], [], None),
    "free-text DATE is no date": (["summer", "spring"], [0, 1], [], None),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ORDERS))
def test_change_refuses_maps_out_of_time_order(tmp_path: Path, case: str) -> None:
    dates, order, extra, words = ORDERS[case]
    maps = _dated_maps(tmp_path, dates)
    given = [str(maps[i]) for i in order]
    if "--probabilities-of" in extra:
        probs = _probabilities(maps)
        extra = [*extra, *(str(probs[i]) for i in order)]
    out = tmp_path / "report"
    res = CliRunner().invoke(cli, ["change", *given, "-o", str(out), *extra])
    if words is not None:
        assert res.exit_code == 2, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert all(w in res.output for w in words), res.output
        assert not out.exists()  # refused before anything was written
        return
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "transitions.json").read_text())
    as_given = None in dates or case.startswith("free-text")
    assert ("the order given is taken as time order" in res.output) == as_given
    assert doc["time_order"] == ("as given (a map has no acquisition date)" if as_given
                                 else "by date")  # fmt: skip
    assert doc["maps"] == given


def _aoi(path: Path) -> Path:
    """Two districts splitting the maps' 300 x 200 m (write_raster's grid) north/south."""
    frame = gpd.GeoDataFrame(
        {"name": ["north", "south"]}, crs="EPSG:32633",
        geometry=[box(500000, 5099900, 500300, 5100000), box(500000, 5099800, 500300, 5099900)],
    )  # fmt: skip
    frame.to_file(path)
    return path


def test_overwrite_removes_the_earlier_reports_files_only_once_the_new_one_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    maps = _dated_maps(tmp_path, ["2015-07-11", "2015-08-20", "2015-09-09"])
    out = tmp_path / "report"
    aoi = str(_aoi(tmp_path / "aoi.gpkg"))
    first = ["change", str(maps[0]), str(maps[2]), "-o", str(out), "--aoi", aoi,
             "--aoi-field", "name", "--samples-se", "0.01"]  # fmt: skip
    assert CliRunner().invoke(cli, first).exit_code == 0
    assert (out / "transitions_by_aoi.csv").is_file() and (out / "samples.gpkg").is_file()
    (out / "my_notes.txt").write_text("mine")
    again = ["change", str(maps[0]), str(maps[1]), "-o", str(out), "--overwrite"]

    def broken(*args: object, **kw: object) -> None:
        raise GeosegError("index.html could not be written")

    with monkeypatch.context() as m:  # a failing rerun loses nothing of the first report
        m.setattr("geoseg.pipelines.change.write_index", broken)
        assert CliRunner().invoke(cli, again).exit_code == 2
    assert (out / "transitions_by_aoi.csv").is_file() and (out / "samples.gpkg").is_file()
    assert json.loads((out / "transitions.json").read_text())["maps"][-1] == str(maps[2])
    sheet = (out / "samples.gpkg").read_bytes()
    with caplog.at_level(logging.WARNING):
        res = CliRunner().invoke(cli, again)
    assert res.exit_code == 0, res.output
    assert not (out / "transitions_by_aoi.csv").exists()
    # the sample sheet may hold the user's labels: kept as it was, with a warning
    assert (out / "samples.gpkg").read_bytes() == sheet
    assert any("earlier report's sample" in r.getMessage() for r in caplog.records)
    assert (out / "my_notes.txt").read_text() == "mine"  # not geoseg's: never touched
    assert json.loads((out / "transitions.json").read_text())["maps"][-1] == str(maps[1])


def test_a_retired_file_that_is_an_input_is_kept(tmp_path: Path) -> None:
    kept, gone = tmp_path / "samples.gpkg", tmp_path / "accuracy.csv"
    kept.write_text("labelled"), gone.write_text("old")
    with output_run(True, [kept]) as run:
        run.retire([kept, gone, tmp_path / "never_there.csv"])
    assert kept.read_text() == "labelled" and not gone.exists()


def test_plausibility_flags_are_logged_as_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = write_labels(tmp_path / "a.tif", _forest_to_water(0), date="2015-07-11")
    after = write_labels(tmp_path / "b.tif", _forest_to_water(20), date="2015-08-20")
    with caplog.at_level(logging.WARNING):
        res = CliRunner().invoke(
            cli, ["change", str(before), str(after), "-o", str(tmp_path / "r")]
        )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r" / "transitions.json").read_text())
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    texts = [f"{w['message']} Next step: {w['next_step']}" for w in doc["warnings"]]
    assert texts and all(t in logged for t in texts)
    assert any("forest lost" in t and "100 %" in t for t in texts)


def test_geoseg_change_prints_each_flag_on_stderr(tmp_path: Path) -> None:
    before = write_labels(tmp_path / "a.tif", _forest_to_water(0), date="2015-07-11")
    after = write_labels(tmp_path / "b.tif", _forest_to_water(20), date="2015-08-20")
    code = "from geoseg.cli import main; main()"
    cmd = [sys.executable, "-c", code, "change", str(before), str(after), "-o", str(tmp_path / "r")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "changed area" in done.stdout and "forest lost" not in done.stdout
    flags = [x for x in done.stderr.splitlines() if x.startswith("geoseg: WARNING: forest lost")]
    assert len(flags) == 1 and "100 %" in flags[0]


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_run_folder(tmp_path_factory.mktemp("order"))


def _workflow(root: Path, name: str, scenes: list[str], more: str = "") -> Path:
    path = root / "workflows" / f"{name}.yaml"
    listed = "".join(f"  - sample_data/{s}\n" for s in scenes)
    path.write_text(
        f"version: 1\nname: {name}\nscenes:\n{listed}"
        f"model: sample_data/models/landcover_s2.safetensors\noutput: workflow_out/{name}\n{more}"
    )
    return path


FOCUS = "focus: {name: loss, from: [forest], to: [grassland, cultivated land]}\n"
AOI = "aoi: sample_data/districts.gpkg\naoi_field: name\n"


def test_run_refuses_scenes_newest_first_before_writing(run_root: Path) -> None:
    flow = _workflow(run_root, "reversed", ["scene_after.tif", "scene_before.tif"], FOCUS)
    res = CliRunner().invoke(cli, ["run", str(flow), "--root", str(run_root)])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    for words in (
        str(flow),
        f"scene_before.tif (acquired {DATE_BEFORE}) is listed after",
        f"scene_after.tif (acquired {DATE_AFTER})",
        "list the scenes oldest first",
    ):
        assert words in res.output  # fmt: skip
    assert not (run_root / "workflow_out" / "reversed").exists()


def test_run_keeps_predict_warnings_and_overwrite_drops_stale_files(run_root: Path) -> None:
    flow = _workflow(run_root, "kept", ["scene_before.tif", "scene_after.tif"], FOCUS + AOI)
    res = CliRunner().invoke(cli, ["run", str(flow), "--root", str(run_root)])
    assert res.exit_code == 0, res.output
    out = run_root / "workflow_out" / "kept"
    summary = json.loads((out / "summary.json").read_text())
    said = [w for w in summary["warnings"] if w["rule"] == "predict"]
    scenes = {str(run_root / "sample_data" / s) for s in ("scene_before.tif", "scene_after.tif")}
    assert {w["scene"] for w in said} == scenes
    assert all("stored as uint16" in w["message"] for w in said)
    page = (out / "report" / "index.html").read_text()
    assert "predict " in page and "stored as uint16" in page
    (out / "report" / "mine.csv").write_text("mine")
    flow = _workflow(run_root, "kept", ["scene_before.tif", "scene_after.tif"])  # no focus, AOI
    res = CliRunner().invoke(cli, ["run", str(flow), "--root", str(run_root), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (out / "summary.json").exists()
    assert not (out / "report" / "transitions_by_aoi.csv").exists()
    assert (out / "report" / "mine.csv").read_text() == "mine"
    assert sorted(p.name for p in out.glob("map_*.tif")) == [
        "map_1_scene_before.tif",
        "map_2_scene_after.tif",
    ]


#: case -> (DATE tag of the scene given first, of the one given second; extra
#: arguments; words of the one-line refusal, or None when it runs)
STACKS: dict[str, tuple[str | None, str | None, list[str], list[str] | None]] = {
    "newest first": ("2015-09-09", "2015-07-11", [],
                     ["s1.tif (acquired 2015-07-11) is listed after", "s0.tif (acquired "
                      "2015-09-09)", "list the scenes oldest first"]),
    "newest first, --normalize irmad": ("2015-09-09", "2015-07-11", ["--normalize", "irmad"],
                                        ["list the scenes oldest first"]),
    "same date": ("2015-07-11", "2015-07-11", [], ["both dated 2015-07-11"]),
    "oldest first": ("2015-07-11", "2015-09-09", [], None),
    "undated": (None, None, [], None),
    # TIFFTAG_DATETIME is often the file's creation time: it may not refuse an order
    "file time stamps only, newest first": ("TIFF:2015:09:09 10:00:00",
                                            "TIFF:2015:07:11 10:00:00", [], None),
}  # fmt: skip


@pytest.mark.parametrize("case", list(STACKS))
def test_stack_refuses_scenes_out_of_time_order(tmp_path: Path, case: str) -> None:
    first, second, extra, words = STACKS[case]
    paths = []
    for i, date in enumerate((first, second)):
        path = write_raster(tmp_path / f"s{i}.tif", textured_scene(32, 32, seed=i),
                            descriptions=TINY_BANDS)  # fmt: skip
        if date:
            with rasterio.open(path, "r+") as dst:
                if date.startswith("TIFF:"):
                    dst.update_tags(TIFFTAG_DATETIME=date.removeprefix("TIFF:"))
                else:
                    dst.update_tags(DATE=date)
        paths.append(str(path))
    out = tmp_path / "stack.tif"
    res = CliRunner().invoke(cli, ["stack", *paths, "-o", str(out), *extra])
    if words is None:
        assert res.exit_code == 0, res.output
        assert out.is_file()
        return
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and all(w in res.output for w in words)
    assert not out.exists()


def test_a_date_from_the_file_time_stamp_is_marked_and_refuses_no_order(tmp_path: Path) -> None:
    """predict takes TIFFTAG_DATETIME as the date only as a last resort and says so in the
    map (DATE_SOURCE); change then takes such maps in the order given, never refuses it."""
    maps = []
    for i, stamp in enumerate(("2015:09:09 10:00:00", "2015:07:11 10:00:00")):
        scene = write_raster(tmp_path / f"s{i}.tif", textured_scene(32, 32, seed=i),
                             descriptions=TINY_BANDS)  # fmt: skip
        with rasterio.open(scene, "r+") as dst:
            dst.update_tags(TIFFTAG_DATETIME=stamp)
        out = tmp_path / f"lc{i}.tif"
        res = CliRunner().invoke(cli, ["predict", str(scene), "-m", "spectral", "-o", str(out)])
        assert res.exit_code == 0, res.output
        with rasterio.open(out) as src:
            tags = src.tags()
        assert tags["DATE"] == stamp[:10].replace(":", "-")
        assert tags["DATE_SOURCE"] == "TIFFTAG_DATETIME"
        maps.append(str(out))
    res = CliRunner().invoke(cli, ["change", *maps, "-o", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "report" / "transitions.json").read_text())
    assert doc["time_order"] == "as given (a map has no acquisition date)"
