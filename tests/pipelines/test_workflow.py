"""Shipped workflows run on the sample scene pair; bad workflow files are refused."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize

from geoseg.areas import pixel_area_m2
from geoseg.errors import GeosegError
from geoseg.io.vectors import read_vectors
from geoseg.pipelines.change import ChangeOptions
from geoseg.pipelines.predict import PredictOptions
from geoseg.pipelines.workflow import load_workflow, run_workflow
from geoseg.pipelines.workflow_schema import CHANGE_OPTIONS, PREDICT_OPTIONS
from tests.conftest import sample_run_folder

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.yaml"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder laid out like the repository, with a small sample scene pair."""
    return sample_run_folder(tmp_path_factory.mktemp("run"))


def test_three_workflows_are_shipped() -> None:
    assert {p.stem for p in WORKFLOWS} == {"deforestation", "flood", "land_cover"}


@pytest.mark.parametrize("name", [p.stem for p in WORKFLOWS])
def test_shipped_workflow_runs_on_the_sample_pair(root: Path, name: str) -> None:
    wf = load_workflow(root / "workflows" / f"{name}.yaml", root)
    result = run_workflow(wf)
    assert len(result.maps) == 2
    names = {p.name for p in result.report}
    assert {"transitions.csv", "transitions.json", "change.tif", "index.html"} <= names
    assert ("transitions_by_aoi.csv" in names) == (wf.aoi is not None) == (name == "flood")
    for path in result.maps:
        with rasterio.open(path) as dst, rasterio.open(wf.scenes[0]) as src:
            assert dst.crs == src.crs and dst.transform == src.transform
    if wf.focus is None:
        assert result.summary == {}
        return
    table = json.loads((wf.output / "report" / "transitions.json").read_text())
    cells = [
        c for c in table["transitions"]
        if c["from"] in wf.focus.from_classes and c["to"] in wf.focus.to_classes
        and c["from"] != c["to"]
    ]  # fmt: skip
    assert result.summary["area_m2"] == pytest.approx(sum(c["area_m2"] for c in cells))
    saved = json.loads((wf.output / "summary.json").read_text())
    assert saved["area_ha"] == pytest.approx(result.summary["area_m2"] / 1e4)
    flags = len(table["warnings"])  # the report's flags, then what predict warned
    assert saved["warnings"][:flags] == table["warnings"]
    assert saved["warnings"] == result.summary["warnings"]
    assert all(w["next_step"] and w["classes"] and w["figures"] for w in table["warnings"])
    assert all(w["rule"] == "predict" and w["message"] for w in saved["warnings"][flags:])


def _district_masks(aoi: Path, grid: rasterio.DatasetReader) -> dict[str, np.ndarray]:
    """``(H, W) bool`` mask of each district: pixel centre inside, as GDAL burns polygons."""
    return {
        str(name): rasterize(
            [(geom, 1)], out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8"
        ).astype(bool)
        for name, geom in zip(read_vectors(aoi)["name"], read_vectors(aoi).geometry, strict=True)
    }


def test_flood_workflow_reports_per_district(root: Path) -> None:
    wf = load_workflow(root / "workflows" / "flood.yaml", root)
    assert wf.aoi == (root / "sample_data" / "districts.gpkg").resolve()
    assert wf.aoi_field == "name"
    wf = dataclasses.replace(wf, output=root / "flood_by_district")
    result = run_workflow(wf)
    report = wf.output / "report"
    table = json.loads((report / "transitions.json").read_text())
    with (report / "transitions_by_aoi.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert 'href="transitions_by_aoi.csv"' in (report / "index.html").read_text()
    with rasterio.open(report / "change.tif") as grid:
        codes = grid.read(1)
        area = pixel_area_m2(
            grid.crs, grid.transform, np.arange(grid.height), np.arange(grid.width)
        )
        masks = _district_masks(wf.aoi, grid)
    assert list(masks) == ["west bank", "east bank", "uplands"]
    # Hand count on the 160 x 192 px scene: west bank columns 0-37 (0.2 * 192 = 38.4 -> 38),
    # east bank 38-95, uplands 96-191 in rows 0-79 then a slanted edge to (144, 120): 96 * 80
    # + 40 rows tapering from 96 to 48 px = 10 560 px. The south-east rest is in no district.
    assert [int(m.sum()) for m in masks.values()] == [38 * 160, 58 * 160, 96 * 80 + 72 * 40]
    assert (sum(m.astype(int) for m in masks.values()) <= 1).all()  # never in two districts
    inside = np.logical_or.reduce(list(masks.values()))
    # UTM 33N pixels at the central meridian are (10 m / 0.9996)^2 of ground each
    assert area[inside].sum() == pytest.approx(25_920 * 100.08, rel=1e-4)

    # Every (from, to) line, nodata included, summed over the districts equals the
    # scene-wide change map's area of that code inside the districts (pixel areas of
    # geoseg.areas); over all lines, the districts' own ground area, less than the scene's.
    k = len(table["classes"])
    lines = [(a, b, i * k + j) for i, a in enumerate(table["classes"])
             for j, b in enumerate(table["classes"])] + [("nodata", "nodata", 255)]  # fmt: skip
    for a, b, code in lines:
        got = [r for r in rows if (r["from"], r["to"]) == (a, b)]
        assert len(got) == 3
        assert sum(float(r["area_m2"]) for r in got) == pytest.approx(
            area[inside & (codes == code)].sum(), rel=1e-6, abs=1e-5
        )
        assert sum(int(r["pixels"]) for r in got) == int((inside & (codes == code)).sum())
    assert sum(float(r["area_m2"]) for r in rows) == pytest.approx(area[inside].sum(), rel=1e-7)
    scene_m2 = table["total_area_m2"]  # every pixel of the grid, nodata included
    assert scene_m2 == pytest.approx(area.sum(), rel=1e-7)
    assert area[inside].sum() < 0.9 * scene_m2

    # Each district's flooded area (not water -> water) against its polygon burnt onto
    # the change grid, in the summary and in the CSV
    flooded = table["classes"].index("not water") * k + table["classes"].index("water")
    by_aoi = {d["aoi"]: d for d in result.summary["by_aoi"]}
    assert list(by_aoi) == list(masks)
    for name, mask in masks.items():
        expected = area[mask & (codes == flooded)].sum()
        assert by_aoi[name]["area_m2"] == pytest.approx(expected, rel=1e-6, abs=1e-5)
        assert by_aoi[name]["area_ha"] == pytest.approx(expected / 1e4, rel=1e-6, abs=1e-9)
    assert by_aoi["west bank"]["area_m2"] > 0 and by_aoi["east bank"]["area_m2"] > 0
    in_districts = sum(d["area_m2"] for d in by_aoi.values())
    assert in_districts == pytest.approx(area[inside & (codes == flooded)].sum(), rel=1e-6)
    outside = area[~inside & (codes == flooded)].sum()
    assert in_districts + outside == pytest.approx(result.summary["area_m2"], rel=1e-9)
    saved = json.loads((wf.output / "summary.json").read_text())
    assert saved["by_aoi"] == result.summary["by_aoi"]


HEAD = "scenes: [a.tif, b.tif]\nmodel: spectral\n"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            HEAD + "output: out\ncolour: red\n",
            "unknown key 'colour'; valid keys: aoi, aoi_crs, aoi_field",
        ),
        ("scenes: [a.tif, ../../b.tif]\nmodel: spectral\noutput: out\n", "leaves the run folder"),
        (HEAD + "output: /tmp/x\n", "leaves the run folder"),
        (HEAD + "output: out\npredict: {windw: 3}\n", "predict: unknown key 'windw'"),
        (
            HEAD + "output: out\npredict: {tta: d8}\n",
            "predict.tta: expected one of none, flips, d4, got 'd8'",
        ),
        (
            "scenes: [a.tif]\nmodel: spectral\noutput: out\n",
            "scenes: expected a list of scene paths (at least 2)",
        ),
        ("- just\n- a list\n", "expected a mapping"),
        (HEAD + "output: out\naoi: ../zones.gpkg\n", "aoi '../zones.gpkg' leaves the run folder"),
        (HEAD + "output: out\naoi: zones.gpkg\n", "aoi 'zones.gpkg': no such file"),
        (HEAD + "output: out\naoi_field: name\n", "aoi_field is given without aoi"),
        (
            HEAD + "output: out\naoi: zones.gpkg\naoi_field: [a]\n",
            "aoi_field: expected text, got ['a']",
        ),
    ],
)
def test_bad_workflow_files_name_the_problem(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    (tmp_path / "a.tif").touch()  # existing scenes, so the case's own fault is the one named
    (tmp_path / "b.tif").touch()
    with pytest.raises(GeosegError) as info:
        load_workflow(path, tmp_path)
    assert words in str(info.value) and "wf.yaml" in str(info.value)


def test_schema_names_every_option_a_workflow_may_set() -> None:
    """A new PredictOptions/ChangeOptions field must be added to the schema (or excluded)."""
    # mask_clouds is a path: a top-level key, resolved inside the run folder like model;
    # probabilities is an output path per date, named by the run (change rule: posterior);
    # normalize_dates needs a change model's stacked pair, a workflow maps one date at a time;
    # normalize_to is the first scene, set by the top-level key normalize_dates
    predict = {f.name for f in dataclasses.fields(PredictOptions)} - {
        "overwrite", "preview", "mask_clouds", "probabilities", "normalize_dates", "normalize_to",
    }  # fmt: skip
    change = {f.name for f in dataclasses.fields(ChangeOptions)} - {
        "overwrite", "aoi", "aoi_field", "aoi_crs", "aoi_crs_option", "reference",
        "probabilities_of",  # the workflow's predict step writes them (rule: posterior)
    }  # fmt: skip
    assert set(PREDICT_OPTIONS) == predict
    assert set(CHANGE_OPTIONS) == change


def test_options_from_the_schema_build_the_pipeline_options(tmp_path: Path) -> None:
    for name in ("a.tif", "b.tif"):
        (tmp_path / name).touch()
    (tmp_path / "wf.yaml").write_text(
        HEAD + "output: out\npredict: {chunk: 512, bands: [B04, 8], band_roles: {RED: 3}, "
        "window: ~, tta: d4}\nchange: {mmu_ha: 1, consistency: 1}\n"
    )
    wf = load_workflow(tmp_path / "wf.yaml", tmp_path)
    assert dict(wf.predict) == {
        "chunk": 512, "bands": ("B04", "8"), "band_roles": {"red": 3}, "window": None,
        "tta": "d4",
    }  # fmt: skip
    assert dict(wf.change) == {"mmu_ha": 1.0, "consistency": 1}
    assert (PredictOptions(**wf.predict).chunk, PredictOptions(**wf.predict).tta) == (512, "d4")
    assert ChangeOptions(**wf.change).mmu_ha == 1.0


def test_a_run_that_fails_midway_leaves_no_output_folder(root: Path) -> None:
    """predict refuses margins over window/4 after the folder is made: it is removed again."""
    wf = load_workflow(root / "workflows" / "land_cover.yaml", root)
    wf = dataclasses.replace(
        wf, output=root / "failed" / "run", predict={"window": 16, "margin": 8}
    )
    with pytest.raises(GeosegError, match="margin must be between 0 and window/4"):
        run_workflow(wf)
    assert not (root / "failed").exists()
