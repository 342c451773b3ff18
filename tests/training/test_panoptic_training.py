"""Panoptic-DeepLab and Mask R-CNN training: targets from polygons, checkpoints, seeds."""

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
from shapely.geometry import Polygon, box

from geoseg.cli import cli
from geoseg.io.checkpoint import load_checkpoint, read_checkpoint_meta
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.maskrcnn import MaskRCNNPredictor
from geoseg.models.panoptic import PanopticPredictor
from geoseg.training import load_train_config, train_model
from geoseg.training.instances import InstanceRaster
from geoseg.training.panoptic import panoptic_batch_targets
from geoseg.training.sampling import Batch, WindowSampler, augment
from geoseg.training.tasks import task_setup
from geoseg.types import ClassInfo, ClassSchema
from tests.conftest import write_raster
from tests.training.helpers import assert_saved_model_is_the_best

SCHEMA = ClassSchema(
    (ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "building", (255, 0, 0), is_thing=True))
)
GRID = Affine(0.5, 0, 733600.0, 0, -0.5, 3725000.0)  # 0.5 m pixels, UTM 16N
SMALL_NET = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}
SMALL_RCNN = {"fpn_channels": 16, "representation_size": 32}
#: Three buildings as (row0, row1, col0, col1) pixel blocks, end exclusive.
SQUARES = ((6, 22, 8, 24), (36, 56, 30, 54), (8, 18, 44, 58))


def _pixel_box(r0: int, r1: int, c0: int, c1: int) -> Polygon:
    """The ground outline (UTM 16N, m) of pixel rows ``r0:r1`` and columns ``c0:c1``."""
    (x0, y1), (x1, y0) = GRID @ (c0, r0), GRID @ (c1, r1)
    return box(x0, y0, x1, y1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 64 x 64 px panchromatic scene with three bright squares: image, id raster, polygons."""
    tmp = tmp_path_factory.mktemp("panoptic_scene")
    ids = np.zeros((64, 64), np.uint32)
    for i, (r0, r1, c0, c1) in enumerate(SQUARES, start=1):
        ids[r0:r1, c0:c1] = i
    image = np.random.default_rng(0).normal(300, 20, size=(64, 64)) + 900 * (ids > 0)
    outlines = gpd.GeoSeries([_pixel_box(*s) for s in SQUARES], crs="EPSG:32616")
    polygons = tmp / "buildings.gpkg"
    gpd.GeoDataFrame(geometry=outlines.to_crs("EPSG:4326")).to_file(polygons)  # reprojected back
    utm = {"crs": "EPSG:32616", "transform": GRID}
    return {
        "image": write_raster(tmp / "scene.tif", image[None].astype(np.uint16), **utm),
        "ids": write_raster(tmp / "ids.tif", ids[None], **utm),
        "polygons": polygons,
    }


def _config(scene: dict[str, Path], out: Path, **kw: Any) -> Any:
    base: dict[str, Any] = {
        "images": [str(scene["image"])], "labels": [str(scene["polygons"])],
        "val_images": [str(scene["image"])], "val_labels": [str(scene["ids"])],
        "classes": SCHEMA.to_json(), "output": str(out), "task": "panoptic", "arch": "unet",
        "encoder": "tu-resnet18", "options": SMALL_NET, "window": 64, "margin": 8,
        "epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "lr": 1e-2, "device": "cpu",
    }  # fmt: skip
    return load_train_config(None, **(base | kw))


def _maskrcnn(scene: dict[str, Path], out: Path, **kw: Any) -> Any:
    rcnn = {"task": "instance", "arch": "maskrcnn", "encoder": "resnet18", "options": SMALL_RCNN}
    return _config(scene, out, **(rcnn | kw))


def _sampled(scene: dict[str, Path], labels: Path) -> Batch:
    """Four augmented 48 px windows drawn with seed 3 from what the panoptic trainer reads."""
    cfg = _config(scene, scene["image"].with_suffix(".safetensors"), labels=[str(labels)])
    train, targets, _, _ = task_setup(cfg)(cfg, torch.device("cpu"))
    ids = [r.ids for r in train if isinstance(r, InstanceRaster)]
    rng = np.random.default_rng(3)
    sampler = WindowSampler([r.image for r in train], [r.valid for r in train], targets, 48, rng,
                            ids=ids)  # fmt: skip
    return augment(sampler.sample(4), rng)


def test_trainer_panoptic_targets_from_polygons_equal_those_from_the_id_raster(
    scene: dict[str, Path],
) -> None:
    from_ids, from_polygons = _sampled(scene, scene["ids"]), _sampled(scene, scene["polygons"])
    assert from_ids.ids is not None and from_polygons.ids is not None
    np.testing.assert_array_equal(from_polygons.ids, from_ids.ids)
    np.testing.assert_array_equal(from_polygons.target, from_ids.target)
    a, b = panoptic_batch_targets(from_ids, [1]), panoptic_batch_targets(from_polygons, [1])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    centre, offset, thing = a
    assert thing.sum() > 0 and centre.max() == pytest.approx(1.0)
    # Every thing pixel's offset lands on a heatmap peak of 1 (its object's centre).
    n, ys, xs = np.nonzero(thing)
    cy = ys + offset[n, 0, ys, xs].astype(int)
    cx = xs + offset[n, 1, ys, xs].astype(int)
    np.testing.assert_allclose(centre[n, cy, cx], 1.0)
    assert not offset[:, :, ~thing.any(0)].any()  # offsets only on thing pixels


def test_panoptic_centres_follow_the_augmented_window() -> None:
    ids = np.zeros((1, 8, 8), np.int64)
    ids[0, 0:2, 0:4] = 1  # a 2 x 4 block in the top-left corner: centre (1, 2) rounded
    batch = Batch(np.zeros((1, 1, 8, 8), np.float32), np.ones((1, 8, 8), bool), ids.copy(), ids)
    centre, offset, thing = panoptic_batch_targets(batch, [1], sigma_px=1.0)
    assert np.unravel_index(centre[0].argmax(), (8, 8)) == (1, 2)
    assert (offset[0, 0, 0, 0], offset[0, 1, 0, 0]) == (1.0, 2.0)
    assert thing.sum() == 8


#: kind -> (config maker, metric, (task, arch, encoder), options, predictor class).
KINDS: dict[str, tuple[Any, str, tuple[str, str, str], dict[str, Any], type]] = {
    "panoptic": (_config, "val_pq", ("panoptic", "panoptic-deeplab", "tu-resnet18"),
                 {"body": "unet", **SMALL_NET}, PanopticPredictor),
    "maskrcnn": (_maskrcnn, "val_ap50", ("instance", "maskrcnn", "resnet18"), SMALL_RCNN,
                 MaskRCNNPredictor),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_short_run_writes_a_checkpoint_that_loads(
    scene: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    torch.set_num_threads(1)
    make, metric, names, options, predictor_class = KINDS[kind]
    out = tmp_path / "model.safetensors"
    cfg = make(scene, out)
    result = train_model(cfg)
    assert result.metric == metric and len(result.history) == 2
    assert_saved_model_is_the_best(cfg, result)
    assert all(np.isfinite(h.loss) and h.loss > 0 for h in result.history)
    tensors, meta = load_checkpoint(out)
    assert (meta.task, meta.arch, meta.encoder) == names and meta.options == options
    assert meta.schema == SCHEMA and meta.window == 64 and meta.bands == ("1",)
    sizes = meta.provenance["object_sizes"]  # 16 x 16, 20 x 24 and 10 x 14 px of 0.5 m
    assert (sizes["objects"], sizes["largest_px"], sizes["largest_m2"]) == (3, 480, 120.0)
    assert read_checkpoint_meta(out) == meta
    predictor = load_predictor(model_spec(str(out), "cpu"))
    assert isinstance(predictor, predictor_class)
    loaded = predictor._base.module.state_dict()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    image, valid = np.full((1, 1, 64, 64), 300, np.float32), np.ones((1, 64, 64), bool)
    masks, classes, scores = predictor.predict_instances(image, valid)[0]
    assert masks.shape[1:] == (64, 64) and len(classes) == len(scores) == len(masks)
    assert set(classes.tolist()) <= {1}  # only the thing class


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_same_seed_gives_the_same_weights(
    scene: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    torch.set_num_threads(1)
    weights = []
    for n, seed in enumerate((0, 0, 1)):
        out = tmp_path / f"{n}.safetensors"
        train_model(KINDS[kind][0](scene, out, seed=seed, val_images=[], val_labels=[], epochs=1))
        weights.append(load_checkpoint(out)[0])
    first, same, other = weights
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_geoseg_train_task_panoptic(scene: dict[str, Path], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    classes = tmp_path / "classes.yaml"
    classes.write_text(yaml.safe_dump(SCHEMA.to_json()))
    config = tmp_path / "net.yaml"
    config.write_text(yaml.safe_dump({"options": {"encoder_depth": 3, "decoder_channels": 16}}))
    out = tmp_path / "p.safetensors"
    args = [
        "train", "--task", "panoptic", "--arch", "deeplabv3plus", "--encoder", "tu-resnet18",
        "--image", scene["image"], "--labels", scene["polygons"], "--val-image", scene["image"],
        "--val-labels", scene["ids"], "--classes", classes, "--config", config, "-o", out,
        "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--window", "64",
        "--device", "cpu",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "best val PQ" in result.output
    meta = read_checkpoint_meta(out)
    assert (meta.task, meta.arch, meta.options["body"]) == ("panoptic", "panoptic-deeplab",
                                                            "deeplabv3plus")  # fmt: skip
    assert isinstance(load_predictor(model_spec(str(out), "cpu")), PanopticPredictor)
