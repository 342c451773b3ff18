"""Shipped workflows run on the sample scene pair; bad workflow files are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import rasterio

from geoseg.errors import GeosegError
from geoseg.pipelines.workflow import load_workflow, run_workflow
from geoseg.synthetic import write_sample_data

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.yaml"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder laid out like the repository, with a small sample scene pair."""
    base = tmp_path_factory.mktemp("run")
    write_sample_data(base / "sample_data", height=160, width=192, seed=4)
    shutil.copytree(REPO / "sample_data" / "models", base / "sample_data" / "models")
    shutil.copytree(REPO / "workflows", base / "workflows")
    return base


def test_three_workflows_are_shipped() -> None:
    assert {p.stem for p in WORKFLOWS} == {"deforestation", "flood", "land_cover"}


@pytest.mark.parametrize("name", [p.stem for p in WORKFLOWS])
def test_shipped_workflow_runs_on_the_sample_pair(root: Path, name: str) -> None:
    wf = load_workflow(root / "workflows" / f"{name}.yaml", root)
    result = run_workflow(wf)
    assert len(result.maps) == 2
    names = {p.name for p in result.report}
    assert {"transitions.csv", "transitions.json", "change.tif", "index.html"} <= names
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


HEAD = "scenes: [a.tif, b.tif]\nmodel: spectral\n"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (HEAD + "output: out\ncolour: red\n", "unknown key(s) ['colour']"),
        ("scenes: [a.tif, ../../b.tif]\nmodel: spectral\noutput: out\n", "leaves the run folder"),
        (HEAD + "output: /tmp/x\n", "leaves the run folder"),
        (HEAD + "output: out\npredict: {windw: 3}\n", "unknown predict"),
        ("scenes: [a.tif]\nmodel: spectral\noutput: out\n", "at least two"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_bad_workflow_files_name_the_problem(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    with pytest.raises(GeosegError) as info:
        load_workflow(path, tmp_path)
    assert words in str(info.value) and "wf.yaml" in str(info.value)
