"""Objects far larger than any the model was trained on are reported (one warning line)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.io.checkpoint import load_checkpoint, save_checkpoint
from geoseg.pipelines.instances import InstanceOptions, segment_instances
from geoseg.pipelines.object_sizes import warn_if_oversized
from geoseg.training.object_sizes import object_pixel_counts
from geoseg.types import OBJECT_SIZES_KEY, ClassInfo, ClassSchema, ModelMeta, Normalization
from tests.conftest import TINY_BANDS, make_instance_checkpoint, textured_scene, write_raster
from tests.stitching.oracle import THING_SCHEMA, OraclePredictor

OPTS = InstanceOptions(window=32, margin=4, chunk=48, batch_size=4)
#: A 4 x 5 px object (class 2) and a 40 x 40 px one (class 5) on 10 m pixels.
SMALL_PX, BIG_PX = 20, 1600
BUILDINGS = ClassSchema(
    (ClassInfo(0, "ground", (90, 90, 90)), ClassInfo(1, "building", (200, 0, 0), is_thing=True))
)


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    truth = np.zeros((2, 70, 80), np.uint16)
    truth[:, 3:7, 3:8] = np.array([1, 2])[:, None, None]
    truth[:, 20:60, 30:70] = np.array([2, 5])[:, None, None]  # spans several windows
    return write_raster(tmp_path / "scene.tif", truth)


def _meta(largest_m2: float | None) -> ModelMeta:
    record = None if largest_m2 is None else {"largest_px": int(largest_m2 / 100),
                                              "largest_m2": largest_m2}  # fmt: skip
    return ModelMeta(
        task="instance", arch="unet", encoder="resnet18", bands=("object", "class"),
        normalization=Normalization((0.0,) * 2, (1.0,) * 2), schema=THING_SCHEMA,
        window=32, margin=4, gsd_m=10.0,
        provenance={} if record is None else {OBJECT_SIZES_KEY: record},
    )  # fmt: skip


def test_pixel_counts_of_an_id_raster() -> None:
    ids = np.array([[0, 3, 3], [7, 3, 0]], np.uint32)
    assert object_pixel_counts(ids).tolist() == [3, 1]
    assert object_pixel_counts(ids * 1_000_000).tolist() == [3, 1]  # sparse ids: no huge table
    assert object_pixel_counts(np.zeros((2, 2), np.uint32)).tolist() == []


@pytest.mark.parametrize(
    ("trained_m2", "warned"),
    [
        (BIG_PX * 100 / 20, 1),  # the big object is 20 x the largest training object
        (BIG_PX * 100 / 5, 0),  # 5 x: within what a model may see
        (None, 0),  # an older checkpoint without the record
    ],
)
def test_an_object_20_times_the_largest_trained_one_is_reported(
    tmp_path: Path, scene: Path, caplog: pytest.LogCaptureFixture,
    trained_m2: float | None, warned: int,
) -> None:  # fmt: skip
    result = segment_instances(scene, OraclePredictor, tmp_path / "inst.tif", OPTS)
    assert result.pixel_m == 10.0 and result.object_px is not None
    assert sorted(result.object_px[1:].tolist()) == [SMALL_PX, BIG_PX]
    big_id = int(np.argmax(result.object_px[1:])) + 1
    with caplog.at_level(logging.WARNING):
        n = warn_if_oversized("m.safetensors", _meta(trained_m2), result.object_px, 10.0)
    lines = [r.getMessage() for r in caplog.records if "larger than" in r.getMessage()]
    assert n == warned and len(lines) == warned
    if warned:
        assert lines[0] == (
            "m.safetensors: 1 object is larger than 10× the largest object the model was "
            "trained on (8,000 m² / 80 px); the model may be under-trained or applied out "
            f"of domain — check them (largest: id {big_id}, 160,000 m²)"
        )


def test_sizes_in_pixels_when_the_scene_has_no_metric_size() -> None:
    px = np.array([0, 5, 900])  # id 2: over 10 x 80 px
    assert warn_if_oversized("m", _meta(8000.0), px, None) == 1
    assert warn_if_oversized("m", _meta(8000.0), px[:2], None) == 0


def _checkpoint_with_record(path: Path, record: dict[str, float] | None) -> Path:
    old = make_instance_checkpoint(path.with_suffix(".old.safetensors"), BUILDINGS)
    tensors, meta = load_checkpoint(old)
    if record is not None:
        meta = dataclasses.replace(meta, provenance={OBJECT_SIZES_KEY: record})
    return save_checkpoint(path, tensors, meta)


@pytest.mark.parametrize(("record", "warned"), [(None, False), ({"largest_px": 1}, True)])
def test_predict_warns_once_only_with_a_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, record: dict[str, float] | None,
    warned: bool,
) -> None:  # fmt: skip
    """An untrained model's objects exceed 10 px; a checkpoint without the record is silent."""
    torch.set_num_threads(1)
    scene = write_raster(tmp_path / "s.tif", textured_scene(64, 64), descriptions=TINY_BANDS)
    model = _checkpoint_with_record(tmp_path / "m.safetensors", record)
    out = tmp_path / "inst.tif"
    args = ["predict", str(scene), "-m", str(model), "-o", str(out), "--device", "cpu",
            "--torch-threads", "1", "--workers", "1"]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as src:
        px = object_pixel_counts(src.read(2))
    assert px.max(initial=0) > 10, "the untrained model found no object"
    lines = [r.getMessage() for r in caplog.records if "larger than 10×" in r.getMessage()]
    assert len(lines) == int(warned)
    if warned:
        assert lines[0].startswith(f"{model}: {int((px > 10).sum())} objects are larger")
        assert lines[0].endswith(f", {px.max()} px)")
