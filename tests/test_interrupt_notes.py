"""Ctrl-C says how to go on, once and rightly: ``--resume`` only where a command has it
and it applies (a per-pixel predict with kept chunks), the workflow key for ``run``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import geoseg.pipelines.instances
import geoseg.pipelines.predict
from geoseg.cli import cli
from geoseg.io.parts import parts_folder
from tests.conftest import TINY_BANDS, make_instance_checkpoint, textured_scene, write_raster


def _run(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    return res.exit_code, res.output


def _stop(*_: object, **__: object) -> None:
    raise KeyboardInterrupt


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "a.tif", textured_scene(150, 173), descriptions=TINY_BANDS)


def test_an_interrupted_instance_predict_does_not_offer_resume(
    tmp_path: Path, scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_instance_checkpoint(tmp_path / "inst.safetensors")
    code, text = _run("predict", scene, "-m", model, "-o", tmp_path / "o.tif", "--resume")
    assert code == 2 and "--resume does not apply to an instance model" in text, text
    code, text = _run("predict", scene, "-m", model, "-o", tmp_path / "o.tif", "--confidence",
                      "--resume")  # fmt: skip
    assert "--confidence, --resume do not apply to an instance model" in text, text
    monkeypatch.setattr(geoseg.pipelines.instances, "predict_instances", _stop)
    code, text = _run("predict", scene, "-m", model, "-o", tmp_path / "o.tif")
    assert code == 130, text
    assert "--resume" not in text
    assert "interrupted (--task instance does not resume: rerun it to start again)" in text


def test_an_interrupted_predict_names_its_kept_chunks_and_resume_once(
    tmp_path: Path, scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o.tif"
    with monkeypatch.context() as m:
        m.setattr(geoseg.pipelines.predict, "_write_cog", _stop)  # every chunk is kept by now
        code, text = _run("predict", scene, "-m", "spectral", "-o", out, "--chunk", "64")
    assert code == 130, text
    assert text.count("--resume") == 1, text
    assert (
        f"interrupted (finished chunks are kept in {parts_folder(out)}: rerun with --resume "
        "to continue)" in text
    )
    code, text = _run("predict", scene, "-m", "spectral", "-o", out, "--chunk", "64", "--resume")
    assert code == 0 and out.exists() and not parts_folder(out).exists(), text


def test_an_interrupted_run_names_the_workflow_key_once(
    tmp_path: Path, scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_raster(tmp_path / "b.tif", textured_scene(150, 173, seed=1), descriptions=TINY_BANDS)
    flow = tmp_path / "wf.yaml"
    flow.write_text("scenes: [a.tif, b.tif]\nmodel: spectral\noutput: out\n")
    with monkeypatch.context() as m:
        m.setattr(geoseg.pipelines.predict, "_write_cog", _stop)
        code, text = _run("run", flow, "--root", tmp_path)
    assert code == 130, text
    kept = tmp_path / "out" / ".map_1_a.tif.parts"
    lines = [line for line in text.splitlines() if "interrupted" in line or "resume" in line]
    assert lines == [
        f"geoseg: interrupted (finished chunks are kept in {kept}: set predict: "
        f"{{resume: true}} in {flow} and rerun it to continue)"
    ], text
    flow.write_text(flow.read_text() + "predict: {resume: true}\n")
    with monkeypatch.context() as m:
        m.setattr(geoseg.pipelines.predict, "_write_cog", _stop)
        code, text = _run("run", flow, "--root", tmp_path)
    assert f"kept in {kept}: rerun it to continue (predict: {{resume: true}})" in text, text
    code, text = _run("run", flow, "--root", tmp_path)
    assert code == 0 and not kept.exists(), text
