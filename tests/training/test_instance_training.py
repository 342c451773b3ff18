"""Instance training: targets from polygons or id rasters, boundary target, a tiny run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import torch
import yaml
from affine import Affine
from click.testing import CliRunner
from shapely.geometry import box

from geoseg.cli import cli
from geoseg.errors import ConfigError
from geoseg.io.checkpoint import load_checkpoint, read_checkpoint_meta
from geoseg.models.registry import build_model
from geoseg.training import load_train_config, train_model
from geoseg.training.instances import (
    boundary_target,
    encode_targets,
    read_instance_raster,
)
from geoseg.types import ClassInfo, ClassSchema
from tests.conftest import write_raster
from tests.training.helpers import assert_saved_model_is_the_best

SCHEMA = ClassSchema(
    (ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "building", (255, 0, 0), is_thing=True))
)
GRID = Affine(0.5, 0, 733600.0, 0, -0.5, 3725000.0)  # 0.5 m pixels, UTM 16N
SMALL_NET = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}
#: Two buildings as (row0, row1, col0, col1) pixel blocks, end exclusive.
SQUARES = ((6, 22, 8, 24), (36, 56, 30, 54))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 64 x 64 px panchromatic scene with two bright squares, their ids and polygons."""
    tmp = tmp_path_factory.mktemp("instances")
    rng = np.random.default_rng(0)
    image = rng.normal(300, 20, size=(1, 64, 64))
    ids = np.zeros((1, 64, 64), np.uint32)
    for i, (r0, r1, c0, c1) in enumerate(SQUARES, start=1):
        image[0, r0:r1, c0:c1] += 900
        ids[0, r0:r1, c0:c1] = i
    boxes = [
        box(*(GRID @ (c0, r1)), *(GRID @ (c1, r0))) for r0, r1, c0, c1 in SQUARES
    ]  # pixel edges
    frame = gpd.GeoDataFrame({"kind": ["building", "1"]}, geometry=boxes, crs="EPSG:32616")
    polygons = tmp / "buildings.geojson"
    frame.to_crs("EPSG:4326").to_file(polygons)  # another CRS: reprojected on reading
    return {
        "image": write_raster(tmp / "scene.tif", image.astype(np.uint16), crs="EPSG:32616",
                              transform=GRID),
        "ids": write_raster(tmp / "ids.tif", ids, crs="EPSG:32616", transform=GRID),
        "polygons": polygons,
    }  # fmt: skip


def test_polygon_targets_equal_id_raster_targets(scene: dict[str, Path]) -> None:
    from_ids = read_instance_raster(scene["image"], scene["ids"], None, SCHEMA)
    from_polygons = read_instance_raster(
        scene["image"], scene["polygons"], None, SCHEMA, class_field="kind"
    )
    np.testing.assert_array_equal(from_polygons.ids, from_ids.ids)
    np.testing.assert_array_equal(from_polygons.labels, from_ids.labels)
    np.testing.assert_array_equal(from_polygons.image, from_ids.image)
    assert [int(np.count_nonzero(from_ids.ids == i)) for i in (1, 2)] == [16 * 16, 20 * 24]
    assert set(np.unique(from_ids.labels)) == {0, 1}
    assert int(np.count_nonzero(from_ids.labels == 1)) == 16 * 16 + 20 * 24


def test_boundary_target_of_two_touching_objects_and_one_on_the_edge() -> None:
    ids = np.array([
        [0, 0, 0, 0, 0, 0, 3, 3],
        [0, 1, 1, 2, 2, 2, 3, 3],
        [0, 1, 1, 2, 2, 2, 3, 3],
        [0, 1, 1, 2, 2, 2, 0, 0],
        [0, 0, 0, 2, 2, 2, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ], np.uint32)  # fmt: skip
    rows = ("......#.", ".######.", ".###.###", ".###.#..", "...###..", "........")
    expected = np.array([[ch == "#" for ch in row] for row in rows])  # '#' = boundary
    np.testing.assert_array_equal(boundary_target(ids), expected)
    classes = np.where(ids > 0, 1, 0)
    classes[5, 0] = 255
    target = encode_targets(classes, expected, 2)
    assert target[2, 4] == 1 and target[2, 3] == 3 and target[0, 0] == 0 and target[5, 0] == 255


def test_a_missing_class_field_is_named(scene: dict[str, Path]) -> None:
    from geoseg.errors import GeosegError

    with pytest.raises(GeosegError, match="no attribute 'nope'"):
        read_instance_raster(scene["image"], scene["polygons"], None, SCHEMA, class_field="nope")


def _config(scene: dict[str, Path], out: Path, **kw: Any) -> Any:
    base: dict[str, Any] = {
        "images": [str(scene["image"])], "labels": [str(scene["polygons"])],
        "val_images": [str(scene["image"])], "val_labels": [str(scene["ids"])],
        "classes": SCHEMA.to_json(), "output": str(out), "arch": "unet", "task": "instance",
        "encoder": "tu-resnet18", "options": SMALL_NET, "window": 32, "margin": 4,
        "epochs": 2, "steps_per_epoch": 3, "batch_size": 4, "lr": 1e-2, "device": "cpu",
    }  # fmt: skip
    return load_train_config(None, **(base | kw))


def test_a_short_run_writes_an_instance_checkpoint(scene: dict[str, Path], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "buildings.safetensors"
    cfg = _config(scene, out)
    result = train_model(cfg)
    assert result.metric == "val_ap50" and len(result.history) == 2
    assert_saved_model_is_the_best(cfg, result)
    tensors, meta = load_checkpoint(out)
    assert meta.task == "instance"
    assert meta.schema == SCHEMA
    assert [c.is_thing for c in meta.schema.classes] == [False, True]
    assert meta.bands == ("1",) and meta.window == 32 and meta.gsd_m == 0.5
    assert read_checkpoint_meta(out) == meta
    # the two squares: 16 x 16 and 20 x 24 px of 0.5 m; p99 interpolates between them
    assert meta.provenance["object_sizes"] == {
        "objects": 2, "largest_px": 480, "largest_m2": 120.0, "pixel_m": 0.5,
        "p99_px": 477.8, "p99_m2": 119.44,
    }  # fmt: skip
    info = CliRunner().invoke(cli, ["info", str(out)]).output
    assert "  training objects: 2   largest: 120.0 m² (480 px)   p99: 119.44 m² (477.8 px)" in info
    model = build_model(meta.arch, meta.encoder, 1, len(SCHEMA) + 1, **meta.options)
    model.load_state_dict(tensors, strict=True)  # K class channels + 1 boundary channel


def test_the_same_seed_gives_the_same_instance_model(
    scene: dict[str, Path], tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    a, b, c = (tmp_path / f"{n}.safetensors" for n in "abc")
    kw = {"val_images": [], "val_labels": [], "epochs": 1}
    train_model(_config(scene, a, **kw))
    train_model(_config(scene, b, **kw))
    train_model(_config(scene, c, seed=1, **kw))
    wa, wb, wc = (load_checkpoint(p)[0] for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_geoseg_train_task_instance_from_polygons(scene: dict[str, Path], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    classes = tmp_path / "classes.yaml"
    classes.write_text(yaml.safe_dump(SCHEMA.to_json()))
    config = tmp_path / "net.yaml"
    config.write_text(yaml.safe_dump({"options": SMALL_NET, "encoder": "tu-resnet18"}))
    out = tmp_path / "m.safetensors"
    args = [
        "train", "--task", "instance", "--image", scene["image"], "--labels", scene["polygons"],
        "--val-image", scene["image"], "--val-labels", scene["polygons"],
        "--classes", classes, "--config", config, "-o", out, "--epochs", "1",
        "--steps-per-epoch", "2", "--batch-size", "2", "--window", "32", "--device", "cpu",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "best val AP50" in result.output
    assert read_checkpoint_meta(out).task == "instance"


@pytest.mark.parametrize(
    ("things", "counts"),
    [((), "2 with is_thing: false (background, building) and 0"),
     ((0, 1), "0 with is_thing: false (none) and 2")],
)  # fmt: skip
def test_instance_classes_without_one_background_name_the_file(
    scene: dict[str, Path], tmp_path: Path, things: tuple[int, ...], counts: str
) -> None:
    classes = tmp_path / "my_classes.yaml"
    rows = [{**c, "is_thing": c["id"] in things} for c in SCHEMA.to_json()]
    classes.write_text(yaml.safe_dump(rows))
    with pytest.raises(ConfigError) as info:
        load_train_config(
            None, task="instance", classes=str(classes), output="m.safetensors",
            images=(str(scene["image"]),), labels=(str(scene["ids"]),),
        )  # fmt: skip
    assert str(info.value).startswith(f"{classes}: an instance model needs exactly one")
    assert counts in str(info.value)
