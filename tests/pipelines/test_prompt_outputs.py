"""``geoseg prompt`` writes its COG in a thread: that publish still belongs to the run, so
a run that fails afterwards leaves the earlier outputs as they were."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import geoseg.pipelines.prompt as prompt_module
from geoseg.cli import cli
from geoseg.errors import GeosegError
from geoseg.io.atomic import atomic_output
from geoseg.io.outputs import output_run
from tests.conftest import textured_scene, write_raster
from tests.pipelines.test_prompt import T, box_layer


def test_a_failure_after_the_threads_publish_puts_the_old_outputs_back(
    tmp_path: Path, sam: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (textured_scene(300, 320, 3) // 16).astype(np.uint8)
    image = write_raster(tmp_path / "scene.tif", data, transform=T, descriptions=("R", "G", "B"))
    layer = box_layer(tmp_path / "b.gpkg", [(20, 30, 60, 80)])
    out, vector = tmp_path / "p.tif", tmp_path / "p.gpkg"
    out.write_bytes(b"old raster")
    vector.write_bytes(b"old polygons")

    def fail(*args: object, **kw: object) -> None:
        assert out.read_bytes() != b"old raster"  # the new COG is published by now
        raise GeosegError("writing the polygons failed")

    monkeypatch.setattr(prompt_module, "write_vectors", fail)
    res = CliRunner().invoke(cli, [
        "prompt", str(image), "-m", sam, "--boxes", str(layer), "-o", str(out),
        "--vector", str(vector), "--overwrite", "--device", "cpu",
    ])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "writing the polygons failed" in res.output
    assert out.read_bytes() == b"old raster" and vector.read_bytes() == b"old polygons"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.gpkg", "p.gpkg", "p.tif", "scene.tif"]


def test_meanwhile_publishes_into_the_run(tmp_path: Path) -> None:
    out = tmp_path / "new.tif"

    def write() -> None:
        with atomic_output(out, overwrite=False) as tmp:
            tmp.write_bytes(b"new")

    with pytest.raises(RuntimeError, match="later"), output_run() as run:
        run.add([out])
        with prompt_module._meanwhile(write):
            pass
        assert out.read_bytes() == b"new"
        raise RuntimeError("later")
    assert not out.exists()
