"""segment_instances: instance and panoptic COGs from a scene, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.errors import OutputExistsError
from geoseg.pipelines.instances import InstanceOptions, segment_instances
from geoseg.types import NODATA_LABEL, TileSpec
from tests.conftest import write_raster
from tests.stitching.oracle import OraclePredictor, object_scene, stitch_in_memory

H, W = 90, 110
OPTS = InstanceOptions(window=32, margin=4, chunk=48, batch_size=4)


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return object_scene(H, W, seed=3, big=False)


@pytest.fixture
def scene_tif(tmp_path: Path, truth: np.ndarray) -> Path:
    return write_raster(tmp_path / "scene.tif", truth.astype(np.uint16))


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_instance_cog_equals_in_memory_stitching(
    tmp_path: Path, scene_tif: Path, truth: np.ndarray
) -> None:
    result = segment_instances(scene_tif, OraclePredictor, tmp_path / "inst.tif", OPTS)
    expected, ids = stitch_in_memory(truth, TileSpec(32, 4, 2))
    assert result.count == ids.count == int(truth[0].max())
    np.testing.assert_array_equal(_read(result.output), expected[::-1])  # class, then id
    with rasterio.open(result.output) as src:
        assert src.dtypes == ("uint32", "uint32")
        assert src.descriptions == ("class", "instance")
        assert src.crs is not None and src.overviews(1) is not None
        assert [c["id"] for c in json.loads(src.tags()["GEOSEG_CLASSES"])] == [0, 2, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inst.tif", "scene.tif"]


def test_panoptic_takes_stuff_from_labels(
    tmp_path: Path, scene_tif: Path, truth: np.ndarray
) -> None:
    stuff = np.where(truth[0] > 0, 2, 0).astype(np.uint8)  # objects labelled "building"
    stuff[:5, :5] = 2  # a thing class with no instance: void
    stuff[-3:, -3:] = NODATA_LABEL
    stuff_tif = write_raster(tmp_path / "labels.tif", stuff[None])
    opts = InstanceOptions(
        window=32, margin=4, chunk=48, panoptic=tmp_path / "pan.tif", stuff_labels=stuff_tif
    )
    result = segment_instances(scene_tif, OraclePredictor, tmp_path / "inst.tif", opts)
    assert result.panoptic is not None
    pan, inst = _read(result.panoptic), _read(result.output)
    np.testing.assert_array_equal(pan[1], inst[1])
    things = inst[1] > 0
    np.testing.assert_array_equal(pan[0][things], inst[0][things])
    background = ~things & (truth[0] == 0)
    expect_bg = np.where(stuff == 0, 0, NODATA_LABEL)
    np.testing.assert_array_equal(pan[0][background], expect_bg[background])


def test_refuses_existing_output_unless_overwrite(tmp_path: Path, scene_tif: Path) -> None:
    out = tmp_path / "inst.tif"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        segment_instances(scene_tif, OraclePredictor, out, OPTS)
    assert out.read_bytes() == b"keep me"
    opts = InstanceOptions(window=32, margin=4, chunk=48, overwrite=True)
    assert segment_instances(scene_tif, OraclePredictor, out, opts).count > 0


class _Broken(OraclePredictor):
    def predict_instances(self, batch: np.ndarray, valid: np.ndarray) -> list:  # type: ignore[type-arg]
        raise RuntimeError("model crashed")


def test_failed_run_leaves_nothing(tmp_path: Path, scene_tif: Path) -> None:
    opts = InstanceOptions(window=32, margin=4, chunk=48, panoptic=tmp_path / "pan.tif")
    with pytest.raises(RuntimeError, match="crashed"):
        segment_instances(scene_tif, _Broken, tmp_path / "inst.tif", opts)
    assert [p.name for p in tmp_path.iterdir()] == ["scene.tif"]


def _masks(path: Path) -> tuple[np.ndarray, list[list[str]]]:
    with rasterio.open(path) as src:
        return src.dataset_mask(), [[f.name for f in b] for b in src.mask_flag_enums]


def test_scene_nodata_is_masked_apart_from_no_object(tmp_path: Path, truth: np.ndarray) -> None:
    """A nodata collar (columns >= 80, rows < 7) is masked in both COGs; class 255 with a
    valid mask is "no object" (the rest of the scene where the truth has none)."""
    data = truth.astype(np.uint16)
    collar = np.zeros((H, W), bool)
    collar[:, 80:] = True
    collar[:7] = True
    data[:, collar] = 65535
    scene = write_raster(tmp_path / "scene.tif", data, nodata=65535)
    opts = InstanceOptions(window=32, margin=4, chunk=48, panoptic=tmp_path / "pan.tif")
    result = segment_instances(scene, OraclePredictor, tmp_path / "inst.tif", opts)
    for out in (result.output, tmp_path / "pan.tif"):
        mask, flags = _masks(out)
        np.testing.assert_array_equal(mask, np.where(collar, 0, 255))
        assert flags == [["per_dataset"], ["per_dataset"]]
    inst = _read(result.output)
    assert inst[1][collar].max() == 0 and (inst[0][collar] == NODATA_LABEL).all()
    no_object = ~collar & (inst[1] == 0)
    assert no_object.sum() > 1000  # valid pixels without an object: unmasked class 255
    assert (inst[0][no_object] == NODATA_LABEL).all()


def test_scene_without_nodata_gets_no_mask(tmp_path: Path, scene_tif: Path) -> None:
    result = segment_instances(scene_tif, OraclePredictor, tmp_path / "inst.tif", OPTS)
    mask, flags = _masks(result.output)
    assert flags == [["all_valid"], ["all_valid"]] and mask.min() == 255
