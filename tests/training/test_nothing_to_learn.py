"""Labels with nothing to learn from (an empty polygon layer, polygons off the image, a
label raster without a labelled pixel) are refused before training: exit 2, one message
naming the labels file, no model written. ``geoseg plan`` refuses them too."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner
from shapely.geometry import box

from geoseg.cli import cli
from tests.conftest import write_raster

GRID = Affine(0.5, 0, 733600.0, 0, -0.5, 3725000.0)  # 0.5 m pixels, UTM 16N
CLASSES = (
    "- {id: 0, name: background, colour: [0, 0, 0]}\n"
    "- {id: 1, name: building, colour: [227, 26, 28], is_thing: true}\n"
)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    """A 64 x 64 px scene (32 m a side); polygon layers: one empty, one 1 km east of it."""
    image = np.random.default_rng(0).normal(300, 20, size=(1, 64, 64)).astype(np.uint16)
    (tmp_path / "classes.yaml").write_text(CLASSES)
    empty = gpd.GeoDataFrame(geometry=[], crs="EPSG:32616")
    empty.to_file(tmp_path / "empty.gpkg")
    east = gpd.GeoDataFrame(geometry=[box(734600, 3724980, 734610, 3724990)], crs="EPSG:32616")
    east.to_file(tmp_path / "east.gpkg")
    unlabelled = np.full((1, 64, 64), 255, np.uint8)  # nodata everywhere
    return {
        "image": write_raster(tmp_path / "scene.tif", image, crs="EPSG:32616", transform=GRID),
        "empty": tmp_path / "empty.gpkg", "east": tmp_path / "east.gpkg",
        "unlabelled": write_raster(tmp_path / "lab.tif", unlabelled, crs="EPSG:32616",
                                   transform=GRID, nodata=255),
        "classes": tmp_path / "classes.yaml",
    }  # fmt: skip


def _train(files: dict[str, Path], labels: str, task: str, out: Path) -> list[str]:
    return ["train", "--task", task, "--image", str(files["image"]), "--labels",
            str(files[labels]), "--classes", str(files["classes"]), "--epochs", "1",
            "--steps-per-epoch", "1", "--window", "32", "--margin", "4", "--device", "cpu",
            "-o", str(out)]  # fmt: skip


@pytest.mark.parametrize(
    ("labels", "task", "what"),
    [("empty", "instance", "object"), ("east", "instance", "object"),
     ("east", "panoptic", "object"), ("unlabelled", "semantic", "pixel")],
)  # fmt: skip
def test_training_on_nothing_is_refused_before_anything_is_written(
    files: dict[str, Path], tmp_path: Path, labels: str, task: str, what: str
) -> None:
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(cli, _train(files, labels, task, out))
    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith(f"geoseg: error: {files[labels]}: no labelled {what}"), error
    assert "nothing to learn from" in error and "--labels-crs" in error
    assert sorted(p.name for p in tmp_path.glob("m.*")) == []  # no model, no resume state


@pytest.mark.parametrize("labels", ["empty", "east"])
def test_plan_on_no_object_is_refused(files: dict[str, Path], tmp_path: Path, labels: str) -> None:
    args = ["plan", "--task", "instance", "--image", str(files["image"]), "--labels",
            str(files[labels]), "--classes", str(files["classes"]), "-o",
            str(tmp_path / "p.yaml")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert f"{files[labels]}: no labelled object" in result.output
    assert "nothing to learn from" in result.output and "diameter" not in result.output
    assert not (tmp_path / "p.yaml").exists()
