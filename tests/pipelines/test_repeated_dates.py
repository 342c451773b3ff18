"""One file listed twice as two dates (undated: no order check sees it) is refused by
name in change, stack, track and run, instead of reporting 0 ha of change."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import GeosegError
from geoseg.io.stack import stack_dates
from geoseg.pipelines.time_order import check_time_order
from tests.change.helpers import write_labels
from tests.conftest import TINY_BANDS, textured_scene, write_raster


def _run(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    return res.exit_code, " ".join(res.output.split())


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "a.tif", textured_scene(40, 50), descriptions=TINY_BANDS)


def test_change_refuses_one_map_twice(tmp_path: Path) -> None:
    labels = np.full((20, 30), 1, np.uint8)
    m = write_labels(tmp_path / "m.tif", labels)
    again = tmp_path / "sub" / ".." / "m.tif"
    (tmp_path / "sub").mkdir()
    code, text = _run("change", m, again, "-o", tmp_path / "report")
    assert code == 2, text
    assert f"{again}: listed twice among the maps (as {m})" in text
    assert not (tmp_path / "report").exists()


def test_stack_refuses_one_scene_twice_by_a_link_too(tmp_path: Path, scene: Path) -> None:
    link = tmp_path / "b.tif"
    os.link(scene, link)  # another name, the same file
    code, text = _run("stack", scene, link, "-o", tmp_path / "s.tif")
    assert code == 2, text
    assert f"{link}: listed twice among the scenes (as {scene})" in text
    with pytest.raises(GeosegError, match="listed twice among the dates"):
        stack_dates([scene, scene], tmp_path / "s.tif")
    assert not (tmp_path / "s.tif").exists()


def test_run_refuses_one_scene_twice_before_writing(tmp_path: Path, scene: Path) -> None:
    flow = tmp_path / "wf.yaml"
    flow.write_text("scenes: [a.tif, a.tif]\nmodel: spectral\noutput: out\n")
    code, text = _run("run", flow, "--root", tmp_path)
    assert code == 2, text
    assert f"{flow}: scenes: {scene}: listed twice among the scenes" in text
    assert not (tmp_path / "out").exists()


def test_distinct_files_with_equal_contents_pass(tmp_path: Path, scene: Path) -> None:
    """Only the same file is refused: a copy is another file (its date may differ)."""
    copy = tmp_path / "copy.tif"
    copy.write_bytes(scene.read_bytes())
    assert check_time_order([str(scene), str(copy)], [None, None], "scenes") is False
