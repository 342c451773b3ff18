"""A workflow's scenes are checked against its model and each other before any map.

Before, a fourth scene with the wrong bands failed after three dates had been
predicted, and disjoint scenes failed in the change step, naming the maps.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from affine import Affine
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.pipelines import predict as predict_module
from tests.conftest import TINY_BANDS, make_tiny_checkpoint, textured_scene, write_raster


def _run(root: Path, scenes: list[str], model: str) -> tuple[int, str]:
    (root / "wf.yaml").write_text(
        f"scenes: [{', '.join(scenes)}]\nmodel: {model}\noutput: out\n"
        "focus: {from: [water], to: [vegetation]}\n"
    )
    done = CliRunner().invoke(cli, ["run", str(root / "wf.yaml"), "--root", str(root)])
    return done.exit_code, done.output


@pytest.fixture
def never_predicts(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a map was predicted before the scenes were checked")

    monkeypatch.setattr(predict_module, "_predict", refuse)


@pytest.mark.usefixtures("never_predicts")
def test_a_scene_with_other_bands_is_refused_first(tmp_path: Path) -> None:
    make_tiny_checkpoint(tmp_path / "m.safetensors")
    for name, seed in (("a.tif", 0), ("b.tif", 1)):
        write_raster(tmp_path / name, textured_scene(40, 40, seed=seed), descriptions=TINY_BANDS)
    write_raster(tmp_path / "c.tif", textured_scene(40, 40, bands=3), descriptions=TINY_BANDS[:3])
    (tmp_path / "wf.yaml").write_text(
        "scenes: [a.tif, b.tif, c.tif]\nmodel: m.safetensors\noutput: out\n"
    )
    done = CliRunner().invoke(cli, ["run", str(tmp_path / "wf.yaml"), "--root", str(tmp_path)])
    assert done.exit_code == 2, done.output
    assert done.output.startswith(f"geoseg: error: {tmp_path / 'wf.yaml'}: scenes: ")
    assert "c.tif" in done.output and "the model needs 4 bands" in done.output
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("never_predicts")
def test_scenes_that_do_not_overlap_are_refused_first(tmp_path: Path) -> None:
    write_raster(tmp_path / "a.tif", textured_scene(40, 40), descriptions=TINY_BANDS,
                 transform=Affine(10, 0, 500_000, 0, -10, 5_100_000))  # fmt: skip
    # 400 m east of a.tif's right edge
    write_raster(tmp_path / "b.tif", textured_scene(40, 40, seed=1), descriptions=TINY_BANDS,
                 transform=Affine(10, 0, 500_800, 0, -10, 5_100_000))  # fmt: skip
    start = time.monotonic()
    code, text = _run(tmp_path, ["a.tif", "b.tif"], "spectral")
    assert code == 2, text
    assert "b.tif does not overlap" in text and "list scenes of one area" in text
    assert time.monotonic() - start < 20 and not (tmp_path / "out").exists()


def test_overlapping_scenes_in_two_crs_pass(tmp_path: Path) -> None:
    from geoseg.pipelines.workflow_checks import check_scenes_overlap
    from geoseg.pipelines.workflow_file import load_workflow

    write_raster(tmp_path / "a.tif", textured_scene(40, 40), descriptions=TINY_BANDS,
                 transform=Affine(10, 0, 500_000, 0, -10, 5_100_000))  # fmt: skip
    # the same ground in EPSG:4326 (UTM 33N's 500000 E, 5100000 N is 15 E, 46.0536 N)
    write_raster(tmp_path / "b.tif", textured_scene(40, 40, seed=1), descriptions=TINY_BANDS,
                 crs="EPSG:4326", transform=Affine(1e-4, 0, 15.001, 0, -1e-4, 46.053))  # fmt: skip
    (tmp_path / "wf.yaml").write_text("scenes: [a.tif, b.tif]\nmodel: spectral\noutput: out\n")
    check_scenes_overlap(load_workflow(tmp_path / "wf.yaml", root=tmp_path))
