"""Hostile inputs to `geoseg change`, `vectorize` and `evaluate` (issue 15, items 6, 14, 17).

Maps in a local CRS without a datum get planar areas in their linear unit (or a
one-line refusal when the unit is unknown); label values outside the class schema
are reported with counts and areas; Dask's own logs stay behind -v; scores that
are 0/0 are explained in words.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner
from rasterio.crs import CRS

from geoseg.areas import area_method, pixel_area_m2, polygon_area_perimeter_m
from geoseg.cli import cli
from geoseg.errors import UnsupportedCRSError
from geoseg.evaluation.metrics import format_score, metrics_from_confusion
from tests.change.helpers import write_labels

ROOT = Path(__file__).resolve().parents[1]
US_FT = 1200 / 3937  # metres in a US survey foot


def _local(unit: str, factor: float) -> CRS:
    return CRS.from_wkt(
        f'LOCAL_CS["site grid",UNIT["{unit}",{factor!r}],AXIS["Easting",EAST],'
        'AXIS["Northing",NORTH]]'
    )


#: name -> (CRS, pixel side in CRS units, expected pixel area m² or None = refused)
LOCAL_GRIDS: dict[str, tuple[CRS, float, float | None]] = {
    "metre, 0.5 m pixels (train_change_levir.py)": (_local("metre", 1), 0.5, 0.25),
    "US survey foot, 2 ft pixels": (_local("US survey foot", US_FT), 2.0, (2 * US_FT) ** 2),
    "international foot, 3 ft pixels": (_local("foot", 0.3048), 3.0, 0.9144**2),
    "unknown unit": (_local("furlong", 201.168), 1.0, None),
}


def _maps(tmp: Path, crs: CRS, side: float) -> tuple[Path, Path]:
    """Two 20 x 30 maps: before all forest; after, the top 8 rows water."""
    t = Affine(side, 0, 0, 0, -side, 20 * side)
    before = np.full((20, 30), 1, np.uint8)
    after = before.copy()
    after[:8] = 4
    return (
        write_labels(tmp / "before.tif", before, crs=crs, transform=t),  # type: ignore[arg-type]
        write_labels(tmp / "after.tif", after, crs=crs, transform=t),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("name", sorted(LOCAL_GRIDS))
def test_change_in_a_local_crs(tmp_path: Path, name: str) -> None:
    crs, side, pixel_m2 = LOCAL_GRIDS[name]
    before, after = _maps(tmp_path, crs, side)
    out = tmp_path / "report"
    run = CliRunner().invoke(cli, ["change", str(before), str(after), "-o", str(out)])
    if pixel_m2 is None:
        assert run.exit_code == 2, run.output
        assert "unknown linear unit 'unknown'" in run.output and str(before) in run.output
        assert not out.exists()  # refused before the report folder was made
        return
    assert run.exit_code == 0, run.output
    assert "note: areas are planar" in run.output
    doc = json.loads((out / "transitions.json").read_text())
    assert doc["area_planar"] is True and doc["area_method"].startswith("planar")
    rows = {(r["from"], r["to"]): r for r in doc["transitions"]}
    assert rows[("forest", "water")]["pixels"] == 8 * 30
    assert rows[("forest", "water")]["area_m2"] == pytest.approx(240 * pixel_m2, rel=1e-9)
    assert rows[("forest", "forest")]["area_m2"] == pytest.approx(360 * pixel_m2, rel=1e-9)


@pytest.mark.parametrize("name", sorted(LOCAL_GRIDS))
def test_vectorize_in_a_local_crs(tmp_path: Path, name: str) -> None:
    import geopandas as gpd

    crs, side, pixel_m2 = LOCAL_GRIDS[name]
    _, after = _maps(tmp_path, crs, side)
    out = tmp_path / "after.gpkg"
    run = CliRunner().invoke(cli, ["vectorize", str(after), "-o", str(out)])
    if pixel_m2 is None:
        assert run.exit_code == 2, run.output
        assert "unknown linear unit" in run.output and not out.exists()
        return
    assert run.exit_code == 0, run.output
    frame = gpd.read_file(out).set_index("class_name")
    assert frame.loc["water", "area_m2"] == pytest.approx(240 * pixel_m2, rel=1e-9)
    assert frame.loc["forest", "area_m2"] == pytest.approx(360 * pixel_m2, rel=1e-9)
    # perimeter of the 30 x 8 px water strip: 2 * (30 + 8) pixel sides
    assert frame.loc["water", "perim_m"] == pytest.approx(76 * np.sqrt(pixel_m2), rel=1e-9)


def test_planar_areas_by_hand() -> None:
    crs = _local("US survey foot", US_FT)
    method = area_method(crs)
    assert (method.planar, method.unit) == (True, "US survey foot")
    assert method.metres_per_unit == pytest.approx(US_FT, rel=1e-15)
    t = Affine(3.0, 0, 1000.0, 0, -2.0, 5000.0)  # 3 ft x 2 ft pixels
    np.testing.assert_allclose(pixel_area_m2(crs, t, [0, 9], [0, 4, 7]), 6 * US_FT**2, rtol=1e-12)
    import shapely

    # a 100 ft x 50 ft rectangle with a 10 ft square hole, far from the origin
    shell = shapely.box(1e6, 2e6, 1e6 + 100, 2e6 + 50)
    poly = shapely.Polygon(
        shell.exterior, [shapely.box(1e6 + 5, 2e6 + 5, 1e6 + 15, 2e6 + 15).exterior]
    )
    area, perim = polygon_area_perimeter_m([poly], crs)
    assert area[0] == pytest.approx((5000 - 100) * US_FT**2, rel=1e-12)
    assert perim[0] == pytest.approx((300 + 40) * US_FT, rel=1e-12)
    assert area_method("EPSG:32633").planar is False


@pytest.mark.parametrize(
    "crs, message",
    [
        ('LOCAL_CS["g",UNIT["unknown",3.5]]', "unknown linear unit 'unknown'"),
        ('LOCAL_CS["g",UNIT["metre",0.9]]', "unknown linear unit 'metre'"),  # wrong factor
        ('LOCAL_CS["g",UNIT["degree",0.0174532925199433]]', "unknown linear unit 'degree'"),
        ("IAU_2015:49900", "cannot be mapped to WGS84"),  # Mars
    ],
)
def test_crs_without_measurable_areas_is_refused(crs: str, message: str) -> None:
    with pytest.raises(UnsupportedCRSError, match=message):
        area_method(crs, "map.tif")
    with pytest.raises(UnsupportedCRSError, match=r"map\.tif: "):
        area_method(crs, "map.tif")


# --- label values outside the class schema ------------------------------------------

GRID = Affine(0.5, 0, 0, 0, -0.5, 10)  # 0.25 m² pixels in the local metre CRS
METRE = _local("metre", 1)


def _with_strays(tmp: Path, name: str, strays: dict[int, int]) -> Path:
    """A forest map whose first pixels hold ``{value: pixels}`` outside the schema."""
    labels = np.full((20, 30), 1, np.uint8)
    labels[19, :4] = 255  # true nodata: never reported
    flat, start = labels.reshape(-1), 0
    for value, n in strays.items():
        flat[start : start + n] = value
        start += n
    return write_labels(tmp / name, labels, crs=METRE, transform=GRID)  # type: ignore[arg-type]


STRAY_CASES = {
    "none": ({}, {}),
    "after only": ({}, {7: 3}),
    "both dates, several values": ({200: 2, 0: 5}, {7: 1}),
}


@pytest.mark.parametrize("case", sorted(STRAY_CASES))
def test_change_reports_values_outside_the_schema(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    from geoseg.pipelines.change import change_report

    before_strays, after_strays = STRAY_CASES[case]
    before = _with_strays(tmp_path, "before.tif", before_strays)
    after = _with_strays(tmp_path, "after.tif", after_strays)
    with caplog.at_level(logging.WARNING):
        result = change_report([before, after], tmp_path / "out")
    expected = [
        (str(path), sorted(strays.items()))
        for path, strays in ((before, before_strays), (after, after_strays))
        if strays
    ]
    got = [(u.path, list(zip(u.values, u.pixels, strict=True))) for u in result.unknown_values]
    assert got == expected
    for u in result.unknown_values:
        assert list(u.area_m2) == pytest.approx([p * 0.25 for p in u.pixels], rel=1e-12)
    doc = json.loads((tmp_path / "out" / "transitions.json").read_text())
    in_json = [
        (d["map"], [(v["value"], v["pixels"]) for v in d["values"]]) for d in doc["unknown_values"]
    ]
    assert in_json == expected
    warnings = [r.getMessage() for r in caplog.records if "not classes of its schema" in r.message]
    assert len(warnings) == len(expected)
    for (path, strays), text in zip(expected, warnings, strict=True):
        assert text.startswith(path)
        for value, n in strays:
            assert f"{value}: {n:,} px" in text
    # stray pixels (the first ones of either map) count as nodata, beside 4 true nodata
    strays = max(sum(before_strays.values()), sum(after_strays.values()))
    assert result.matrix.nodata_pixels == 4 + strays


def test_vectorize_reports_values_outside_the_schema(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labels = _with_strays(tmp_path, "map.tif", {7: 3})
    with caplog.at_level(logging.WARNING):
        run = CliRunner().invoke(cli, ["vectorize", str(labels), "-o", str(tmp_path / "m.gpkg")])
    assert run.exit_code == 0, run.output
    text = " ".join(r.getMessage() for r in caplog.records)
    assert f"{labels}: values that are not classes" in text
    assert "7: 1 polygon(s), 0.75 m2" in text


def test_evaluate_reports_reference_values_outside_the_classes() -> None:
    from geoseg.tiling.confusion import ConfusionSink

    sink = ConfusionSink([1, 4], reference_map={10: 1, 40: 4})
    pred = np.array([[1, 4, 4, 1, 255]], np.int32)
    ref = np.array([[10, 40, 7, 7, 255]], np.int32)
    sink[(slice(0, 1), slice(0, 5))] = np.stack([pred, ref])
    assert sink.unknown_reference == {7: 2}
    np.testing.assert_array_equal(sink.matrix, [[1, 0], [0, 1]])


# --- scores that are 0/0 --------------------------------------------------------------


def test_never_predicted_change_is_stated_in_words() -> None:
    from geoseg.pipelines.evaluate import CHANGE_SCHEMA, _change_scores

    m = metrics_from_confusion(np.array([[50, 0], [7, 0]]), CHANGE_SCHEMA.names)
    scores = _change_scores(m)
    assert scores["change_precision"] is None and scores["change_recall"] == 0.0
    assert scores["change_note"] == "no pixel predicted as change: precision undefined"
    assert m.to_json()["classes"][1]["note"] == scores["change_note"]
    assert json.loads(json.dumps(scores))["change_precision"] is None
    assert format_score(m.precision[1], "no pixel predicted as change") == (
        "n/a (no pixel predicted as change)"
    )
    assert format_score(m.recall[1]) == "0.0000"


# --- Dask's own logs ------------------------------------------------------------------

_KILL_ONE_WORKER = """
import os, sys
import numpy as np
from geoseg.cli.app import quiet_dask_logs
quiet_dask_logs({verbose})
import dask.array as da
from distributed import Client, LocalCluster
MARK = sys.argv[1]
def once(x):
    try:
        os.close(os.open(MARK, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return x
    os._exit(1)
if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as c, Client(c):
        a = da.ones((8, 8), chunks=4).map_blocks(once, meta=np.array((), float))
        print(int(a.sum().compute()))
"""


@pytest.mark.parametrize("verbose, shown", [(False, False), (True, True)])
def test_dask_logs_of_a_dead_worker_stay_behind_verbose(
    tmp_path: Path, verbose: bool, shown: bool
) -> None:
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(_KILL_ONE_WORKER.format(verbose=verbose)))
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "killed")], capture_output=True, text=True,
        timeout=180, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "64" and (tmp_path / "killed").exists()
    assert ("distributed." in run.stderr) is shown, run.stderr


def test_cli_sets_distributed_loggers_by_verbosity(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(cli, ["info", str(tmp_path / "missing.tif")])
    assert logging.getLogger("distributed.worker").level == logging.CRITICAL
    runner.invoke(cli, ["-v", "info", str(tmp_path / "missing.tif")])
    assert logging.getLogger("distributed.worker").level == logging.INFO
    runner.invoke(cli, ["info", str(tmp_path / "missing.tif")])


# --- sample_data/models/train_change_levir.py -----------------------------------------


def _levir_script() -> Any:
    path = ROOT / "sample_data" / "models" / "train_change_levir.py"
    spec = importlib.util.spec_from_file_location("train_change_levir", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "existing, extra, code, message",
    [
        ("scores", [], 2, "scores.json: exists; pass --overwrite"),
        ("model", [], 2, "model.safetensors: exists; pass --overwrite"),
        ("scores", ["--overwrite", "--data", "nowhere"], 2, "no LEVIR-CD samples"),
    ],
)
def test_levir_script_refuses_its_outputs_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], existing: str, extra: list[str],
    code: int, message: str,
) -> None:  # fmt: skip
    script = _levir_script()
    scores, model = tmp_path / "scores.json", tmp_path / "model.safetensors"
    (scores if existing == "scores" else model).write_text("{}")
    argv = ["--scores", str(scores), "-o", str(model), "--data", str(tmp_path), *extra]
    assert script.main(argv) == code
    assert message in capsys.readouterr().err
    args = script.parse_args(argv)
    assert args.output == model and args.scores == scores
    assert (scores if existing == "scores" else model).read_text() == "{}"  # untouched
