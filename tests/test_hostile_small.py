"""Small hostile cases: a degree-recorded GSD shown as recorded, a GSD check that is
skipped says so, and ``train``'s temperature fits warn of label ids the model lacks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from click.testing import CliRunner
from pyproj import CRS

from geoseg.cli import cli
from geoseg.io.training_data import read_labelled_raster
from geoseg.resolution import check_scene_gsd
from geoseg.synthetic import TRUTH_SCHEMA, write_sample_data

WATER = Path(__file__).resolve().parents[1] / "sample_data" / "models" / "water_s2.safetensors"
LOCAL = CRS.from_wkt(
    'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)
LOCAL_FT = CRS.from_wkt('LOCAL_CS["g",UNIT["unknown",3.5]]')
GRID = Affine(10, 0, 0, 0, -10, 700)  # 70 x 80 px of 10 units


# --- 1. a degree-recorded GSD is printed in degrees first --------------------------


@pytest.mark.parametrize("cmd", [["info"], ["models"]])
def test_degree_gsd_is_printed_as_recorded(cmd: list[str]) -> None:
    run = CliRunner().invoke(cli, [*cmd, str(WATER)])
    assert run.exit_code == 0, run.output
    assert "GSD: 8.983e-05° (about 10 m at the equator; " in run.output
    assert "degrees (about 10 m;" not in run.output


# --- 2. a GSD check that cannot run warns once, saying why --------------------------

#: case -> (model GSD as recorded, scene CRS, words of the one warning)
SKIPPED: dict[str, tuple[float, CRS, tuple[str, ...]]] = {
    "degree model on a local metre grid": (
        8.983e-05, LOCAL,
        ("s.tif: pixel size not compared with the model m.safetensors's",
         "in degrees (8.983e-05°)", "'site grid' is a local grid with no latitude"),
    ),
    "metre model on a local grid of unknown unit": (
        10.0, LOCAL_FT, ("s.tif: pixel size not compared", "'g' has no unit"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SKIPPED))
def test_a_skipped_gsd_check_warns_why(name: str, caplog: pytest.LogCaptureFixture) -> None:
    gsd, crs, words = SKIPPED[name]
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        check_scene_gsd("s.tif", "/x/m.safetensors", gsd, crs, GRID, (70, 80))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    for w in words:
        assert w in warnings[0]


def test_a_compared_gsd_on_a_local_metre_grid_stays_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        check_scene_gsd("s.tif", "m.safetensors", 10.0, LOCAL, GRID, (70, 80))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- 3. train's temperature fit warns of label ids the model lacks, as calibrate does -


def _stray_val_labels(truth: Path, out: Path) -> Path:
    """The truth raster with its top 20 rows (of 96: 20.8 %) set to id 77, not a class."""
    with rasterio.open(truth) as src:
        labels, profile = src.read(1), src.profile
    labels[:20] = 77
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(labels, 1)
    return out


@pytest.mark.parametrize("extra", [["--folds", "2"], []], ids=["folds", "single"])
def test_train_temperature_fit_warns_of_unknown_label_ids(
    extra: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sample = write_sample_data(tmp_path / "sample", height=96, width=128, seed=5)
    val = _stray_val_labels(sample["truth_after"], tmp_path / "val.tif")
    classes, config = tmp_path / "classes.yaml", tmp_path / "net.yaml"
    classes.write_text(yaml.safe_dump(TRUTH_SCHEMA.to_json()))
    net = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
    config.write_text(yaml.safe_dump({"options": net, "encoder": "tu-resnet18"}))
    args = [
        "train", "--image", sample["before"], "--labels", sample["truth_before"],
        "--val-image", sample["after"], "--val-labels", val, "--classes", classes,
        "--config", config, "-o", tmp_path / "m.safetensors", "--epochs", "1",
        "--steps-per-epoch", "1", "--batch-size", "2", "--window", "32", "--margin", "4",
        "--device", "cpu", *extra,
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        run = CliRunner().invoke(cli, [str(a) for a in args])
    assert run.exit_code == 0, run.output
    read = read_labelled_raster(str(sample["after"]), str(val), None)  # nodata: unlabelled
    n_stray = int(np.count_nonzero(read.valid & (read.labels == 77)))
    n_labelled = int(np.count_nonzero(read.valid & (read.labels != 255)))
    assert (n_stray, n_labelled) == (1837, 9735)  # 18.9 %, well over the 1 % that warns
    fits = [r.getMessage() for r in caplog.records if "carry ids the model lacks" in r.getMessage()]
    ids = ", ".join(str(c.id) for c in TRUTH_SCHEMA.classes)
    assert fits == [
        f"{val}: 1,837 of 9,735 labelled px (18.9%) "
        f"carry ids the model lacks (77; the model's: {ids}), left out of the temperature fit; "
        "check the labels use the model's class ids"
    ]
