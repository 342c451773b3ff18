"""Findings of the fifth new-user trial: what ``geoseg run`` and ``geoseg change`` advise
must work as advised."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from geoseg.cli import cli
from tests.conftest import TINY_BANDS, make_tiny_checkpoint, textured_scene, write_raster


def _workflow(root: Path, pixel_m: float, predict: str = "") -> Path:
    """Two 60 x 70 px scenes at ``pixel_m`` m (the tiny model was trained at 10 m)."""
    t = Affine(pixel_m, 0, 500000, 0, -pixel_m, 5100000)
    for i in (1, 2):
        write_raster(root / f"s{i}.tif", textured_scene(60, 70, seed=i), transform=t,
                     descriptions=TINY_BANDS)  # fmt: skip
    make_tiny_checkpoint(root / "m.safetensors")
    wf = root / "wf.yaml"
    wf.write_text(
        "version: 1\nname: coarse\nscenes: [s1.tif, s2.tif]\nmodel: m.safetensors\n"
        f"output: out\n{predict}"
    )
    return wf


def test_run_refusing_a_pixel_size_names_the_workflow_key(tmp_path: Path) -> None:
    """`run` said "or pass --ignore-gsd", an option it does not have."""
    wf = _workflow(tmp_path, 60.0)
    res = CliRunner().invoke(cli, ["run", str(wf), "--root", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "predict: {ignore_gsd: true}" in res.output and str(wf) in res.output
    assert "pass --ignore-gsd" not in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["predict: {ignore_gsd: true}\n"])
def test_the_advised_workflow_key_runs(tmp_path: Path, key: str) -> None:
    wf = _workflow(tmp_path, 60.0, key)
    res = CliRunner().invoke(cli, ["run", str(wf), "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "report" / "transitions.json").is_file()


def test_a_sheet_read_as_reference_is_not_called_stale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`change -o rep --overwrite --reference rep/samples.gpkg` warned that the sheet it
    was reading "does not sample this report's change.tif"."""
    import geopandas as gpd

    from tests.change.helpers import write_labels

    a = write_labels(tmp_path / "a.tif", np.full((20, 30), 1, np.uint8))
    b = np.full((20, 30), 1, np.uint8)
    b[:6] = 4
    b = write_labels(tmp_path / "b.tif", b)
    rep = tmp_path / "rep"
    first = ["change", str(a), str(b), "-o", str(rep), "--samples-se", "0.05"]
    assert CliRunner().invoke(cli, first).exit_code == 0
    sheet = gpd.read_file(rep / "samples.gpkg")
    with rasterio.open(b) as src:  # label every point with the truth (the later map)
        rows = [src.index(p.x, p.y) for p in sheet.geometry]
        later = src.read(1)
    names = {1: "forest", 4: "water"}
    with rasterio.open(a) as src:
        earlier = src.read(1)
    sheet["reference"] = [f"{names[earlier[r]]} -> {names[later[r]]}" for r in rows]
    sheet.to_file(rep / "samples.gpkg")
    again = [*first[:5], "--overwrite", "--reference", str(rep / "samples.gpkg")]
    with caplog.at_level(logging.WARNING):
        res = CliRunner().invoke(cli, again)
    assert res.exit_code == 0, res.output
    assert not any("earlier report's sample" in r.getMessage() for r in caplog.records)
    assert (rep / "accuracy.json").is_file()


def test_the_time_order_date_tag_is_the_change_reports() -> None:
    from geoseg.change.align import DATE_TAG
    from geoseg.pipelines import time_order

    assert time_order.DATE_TAG == DATE_TAG
