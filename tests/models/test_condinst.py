"""CondInst: the dynamic mask head, relative coordinates, location targets, window
inference, a tiny overfit and `geoseg train`/`predict`/`evaluate` end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from affine import Affine
from click.testing import CliRunner
from torch import nn

from geoseg.cli import cli
from geoseg.errors import CheckpointError, GeosegError, UnknownModelError
from geoseg.io.checkpoint import read_checkpoint_meta, save_checkpoint
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.condinst import (
    CondInstPredictor,
    build_condinst,
    condinst_model,
    load_condinst_predictor,
    size_ranges,
)
from geoseg.models.condinst_post import (
    CondInstThresholds,
    dynamic_mask_head,
    dynamic_param_count,
    instance_mask_logits,
    relative_coords,
    window_objects,
)
from geoseg.models.condinst_targets import location_targets
from geoseg.stitching import InstancePredictor
from geoseg.training.condinst import condinst_step_loss
from geoseg.training.sampling import Batch
from geoseg.types import ClassSchema, ModelMeta
from tests.conftest import write_raster
from tests.models.dense_instance_helpers import (
    BUILDINGS,
    box,
    empty_batch,
    instance_meta,
    squares_batch,
    two_squares,
)
from tests.stitching.oracle import THING_SCHEMA

LIGHT = {"fpn_channels": 32, "head_channels": 32, "branch_channels": 32}
#: The three head levels of a 64 px window: strides 8, 16, 32.
SHAPES, STRIDES = [(8, 8), (4, 4), (2, 2)], (8, 16, 32)


def test_dynamic_head_equals_an_explicit_conv_stack() -> None:
    assert dynamic_param_count(8 + 2, 8) == 169  # the paper's count
    torch.manual_seed(0)
    params, inputs = torch.randn(2, 169), torch.randn(2, 10, 3, 4)
    got = dynamic_mask_head(inputs, params, 8)
    for p, x, out in zip(params, inputs, got, strict=True):
        # the authors' layout: weights 10x8, 8x8, 8x1, then biases 8, 8, 1
        w1, w2, w3 = p[:80].reshape(8, 10), p[80:144].reshape(8, 8), p[144:152].reshape(1, 8)
        b1, b2, b3 = p[152:160], p[160:168], p[168:169]
        stack = [nn.Conv2d(10, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 1, 1)]
        for conv, w, b in zip(stack[::2], (w1, w2, w3), (b1, b2, b3), strict=True):
            conv.weight.data, conv.bias.data = w[..., None, None], b  # type: ignore[union-attr]
        expected = nn.Sequential(*stack)(x[None])[0, 0]
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_relative_coordinates_by_hand() -> None:
    # a 2 x 3 grid at stride 8: pixel centres x = 4, 12, 20 and y = 4, 12 px
    rel = relative_coords(torch.tensor([[12.0, 4.0]]), 2, 3, 8)
    assert rel[0, 0].tolist() == [[8, 0, -8], [8, 0, -8]]  # x: location - centre
    assert rel[0, 1].tolist() == [[0, 0, 0], [-8, -8, -8]]  # y
    # a head that outputs its first input (relu(x) - relu(-x) = x): the relative x
    # coordinate divided by the size of interest, 8 strides of the level (16 px -> 128)
    params = torch.zeros(1, dynamic_param_count(3, 2))
    w1, w2, w3 = params[0, :6].view(2, 3), params[0, 6:10].view(2, 2), params[0, 10:12]
    w1[0, 0], w1[1, 0] = 1.0, -1.0
    w2[0, 0] = w2[1, 1] = 1.0
    w3[:] = torch.tensor([1.0, -1.0])
    features = torch.zeros(1, 2, 3)  # one mask feature channel, after the coordinates
    out = instance_mask_logits(features, params, torch.tensor([[12.0, 4.0]]),
                               torch.tensor([16]), 8, 2)  # fmt: skip
    torch.testing.assert_close(out[0], torch.tensor([[8.0, 0, -8], [8, 0, -8]]) / 128)


def test_location_targets_by_hand() -> None:
    square = box((64, 64), slice(8, 24), slice(10, 26))  # box x 10-26, y 8-24; centre (18, 16)
    tiny = box((64, 64), slice(40, 43), slice(41, 44))  # 3 px: widened to 8 px around (42.5, 41.5)
    band = box((64, 64), slice(50, 60), slice(0, 64))  # 64 px long: level 1 (stride 16)
    t = location_targets([(square, 0), (tiny, 1), (band, 0)], SHAPES, STRIDES,
                         [(0, 64), (64, 128), (128, math.inf)])  # fmt: skip
    # square: locations x, y in {12, 20} (rows/cols 1-2); tiny: (44, 44) = row 5, col 5;
    # band: level 1 starts at 64, row 3 (y = 56 in the widened box y 47-63), every column
    assert t.positive.tolist() == [9, 10, 17, 18, 45, 76, 77, 78, 79]
    assert t.classes[t.positive].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert (t.classes >= 0).sum() == 9 and t.classes.shape == (64 + 16 + 4,)
    # kept objects in order: square, tiny, band
    assert t.owner.tolist() == [0, 0, 0, 0, 1, 2, 2, 2, 2]
    assert (t.masks[1] == tiny).all()
    # centerness sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)): at (12, 12) l=2 r=14 t=4 b=12
    np.testing.assert_allclose(t.centerness[0], math.sqrt(2 / 14 * 4 / 12), rtol=1e-6)
    np.testing.assert_allclose(t.centerness[3], math.sqrt(6 / 10 * 4 / 12), rtol=1e-6)
    np.testing.assert_allclose(t.centerness[4], math.sqrt(2.5 / 5.5 * 1.5 / 6.5), rtol=1e-6)


def test_a_location_claimed_twice_keeps_the_smaller_object() -> None:
    square = box((64, 64), slice(8, 24), slice(10, 26))
    inner = box((64, 64), slice(10, 13), slice(10, 13))  # widened: x, y 7.5-15.5 -> (12, 12)
    t = location_targets([(square, 0), (inner, 1)], SHAPES, STRIDES,
                         [(0, 64), (64, 128), (128, 1e9)])  # fmt: skip
    assert t.positive.tolist() == [9, 10, 17, 18]
    assert t.owner.tolist() == [1, 0, 0, 0] and t.classes[9] == 1


def test_window_objects_scores_and_removes_duplicates() -> None:
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    cls = torch.full((1, 2, 2), -10.0)
    cls[0, 0, 0], cls[0, 0, 1], cls[0, 1, 1] = logit(0.9), logit(0.8), logit(0.6)
    ctr = torch.full((1, 2, 2), logit(0.5))
    params = torch.zeros(dynamic_param_count(3, 2), 2, 2)
    # every head: logit = 4 x relu(feature) - 2: the mask is where the feature is 1
    params[2, ...], params[6, ...], params[10, ...], params[11, ...] = 1.0, 1.0, 4.0, 0.0
    params[16, ...] = -2.0  # the last bias
    features = torch.zeros(1, 4, 4)
    features[0, :, :2] = 1.0  # one mask (the left half) for every location
    masks, classes, scores = window_objects(
        ([cls], [ctr], [params], features), [16], 8, 2, (32, 32), CondInstThresholds()
    )
    # three candidates with the same mask: box NMS keeps the best, sqrt(0.9 x 0.5)
    np.testing.assert_allclose(scores.numpy(), [math.sqrt(0.45)], rtol=1e-5)
    assert classes.tolist() == [0] and masks.shape == (1, 32, 32)
    assert (masks[0, :, :12] > 0.5).all() and (masks[0, :, 20:] < 0.5).all()
    loose = window_objects(([cls], [ctr], [params], features), [16], 8, 2, (32, 32),
                           CondInstThresholds(nms_iou=1.0, score_threshold=0.6))  # fmt: skip
    # sqrt(0.6 x 0.5) = 0.548 < 0.6: one candidate fewer; no NMS at IoU 1
    np.testing.assert_allclose(loose[2].numpy(), [math.sqrt(0.45), math.sqrt(0.4)], rtol=1e-5)


def _meta(bands: int, schema: ClassSchema = THING_SCHEMA, **options: object) -> ModelMeta:
    return instance_meta("condinst", LIGHT, bands, schema, **options)


@pytest.mark.parametrize(("bands", "stride"), [(1, 8), (3, 4), (5, 8)])
def test_any_band_count_and_the_instance_contract(bands: int, stride: int) -> None:
    torch.manual_seed(0)
    module = build_condinst(bands, 2, mask_stride=stride, **LIGHT)
    assert module.backbone.body.conv1.in_channels == bands
    assert module.controller.out_channels == 169
    meta = _meta(bands, score_threshold=0.005, mask_stride=stride)
    model = CondInstPredictor(module, meta, torch.device("cpu"))
    assert isinstance(model, InstancePredictor)
    x = np.random.default_rng(bands).normal(size=(2, bands, 64, 64)).astype(np.float32)
    valid = np.ones((2, 64, 64), bool)
    valid[1, :32] = False
    features = module(torch.from_numpy(x))[3]
    assert features.shape == (2, 8, 64 // stride, 64 // stride)
    found = model.predict_instances(x, valid)
    assert len(found) == 2
    for masks, classes, scores in found:
        assert masks.dtype == bool and masks.shape[1:] == (64, 64)
        assert set(classes) <= {2, 5} and scores.dtype == np.float32
        assert (np.diff(scores) <= 0).all() and (masks.sum(axis=(1, 2)) >= 4).all()
    assert not found[1][0][:, :32].any()  # nodata is in no object


def test_a_window_without_objects_gives_empty_arrays() -> None:
    torch.manual_seed(0)
    module = build_condinst(3, 2, **LIGHT)
    model = CondInstPredictor(module, _meta(3, score_threshold=1.0), torch.device("cpu"))
    x = np.zeros((2, 3, 96, 64), np.float32)  # not square, as whole-raster validation
    for masks, classes, scores in model.predict_instances(x, np.ones((2, 96, 64), bool)):
        assert masks.shape == (0, 96, 64) and masks.dtype == bool
        assert classes.shape == scores.shape == (0,) and scores.dtype == np.float32


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: build_condinst(3, 1, backbone="vgg16"), UnknownModelError,
         r"unknown CondInst backbone 'vgg16'.*resnet18, resnet34"),
        (lambda: build_condinst(3, 0), GeosegError, "thing class"),
        (lambda: build_condinst(3, 1, mask_stride=16), GeosegError, "mask_stride must be 4 or 8"),
        (lambda: size_ranges({"size_ranges": [[0, 64], [64, 32], [128, 1e9]]}), GeosegError,
         "3 size ranges"),
        (lambda: size_ranges({"size_ranges": [0, 64, 128]}), GeosegError, "3 size ranges"),
        (lambda: condinst_model(_meta(3, grids=[8, 4])), GeosegError,
         r"unknown CondInst options \['grids'\].*mask_stride.*nms_iou"),
    ],
)  # fmt: skip
def test_bad_options_are_named(make: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()  # type: ignore[operator]


def test_loader_refuses_another_checkpoint(tmp_path: Path) -> None:
    meta = _meta(3)
    module = build_condinst(3, 2, **LIGHT)
    other = dataclasses.replace(meta, arch="solov2")
    path = save_checkpoint(tmp_path / "m.safetensors", module.state_dict(), other)
    with pytest.raises(CheckpointError, match=r"'solov2' checkpoint, not a CondInst.*condinst"):
        load_condinst_predictor(path, device="cpu")
    good = save_checkpoint(tmp_path / "c.safetensors", module.state_dict(), meta)
    assert isinstance(load_condinst_predictor(good, device="cpu"), CondInstPredictor)


def test_tiny_overfit_finds_the_two_squares() -> None:
    image, a, b = two_squares()
    batch = squares_batch(image, a, b)
    torch.manual_seed(0)
    module = build_condinst(3, 1, **LIGHT).train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    x, losses, t0 = torch.from_numpy(image)[None], [], time.perf_counter()
    for _ in range(30):
        loss = condinst_step_loss(module, x, batch, BUILDINGS, size_ranges({}))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # the centerness BCE of soft targets keeps a floor (their entropy, about 0.5)
    assert losses[-1] < 0.25 * losses[0]
    model = CondInstPredictor(module, _meta(3, BUILDINGS), torch.device("cpu"))
    masks, classes, _ = model.predict_instances(image[None], np.ones((1, 64, 64), bool))[0]
    assert len(masks) == 2 and set(classes) == {1}
    for square in (a, b):
        assert max((m & square).sum() / (m | square).sum() for m in masks) > 0.7
    assert time.perf_counter() - t0 < 60  # about 13 s on one free core


def test_step_loss_without_objects_is_finite() -> None:
    batch = empty_batch()
    module = build_condinst(3, 1, **LIGHT)
    loss = condinst_step_loss(module, torch.zeros(2, 3, 64, 64), batch, BUILDINGS, size_ranges({}))
    # the focal loss of 0.01 priors over 2 x 84 locations: about 168 x 0.75 x 0.01^2 x 0.01
    assert torch.isfinite(loss) and 0 < float(loss.detach()) < 0.01
    no_ids = Batch(batch.image, batch.valid, batch.target)
    with pytest.raises(GeosegError, match="CondInst training needs instance ids"):
        condinst_step_loss(module, torch.zeros(2, 3, 64, 64), no_ids, BUILDINGS, size_ranges({}))


def test_geoseg_train_predict_and_evaluate_condinst(tmp_path: Path) -> None:
    """`geoseg train --task instance --arch condinst` on a 128 px scene of bright squares
    (64 px windows: each step sees them elsewhere); `geoseg predict` of the checkpoint in
    48 px chunks equals one 144 px chunk, with one scene-unique id per square; `geoseg
    evaluate` scores it."""
    torch.set_num_threads(1)
    ids = np.zeros((128, 128), np.uint32)
    boxes = ((6, 22, 8, 24), (36, 56, 30, 54), (8, 18, 44, 58), (70, 90, 10, 26),
             (80, 96, 60, 80), (100, 120, 96, 116), (20, 36, 90, 110))  # fmt: skip
    for i, (r0, r1, c0, c1) in enumerate(boxes):
        ids[r0:r1, c0:c1] = i + 1
    image = np.random.default_rng(0).normal(300, 20, size=(128, 128)) + 900 * (ids > 0)
    utm = {"crs": "EPSG:32616", "transform": Affine(0.5, 0, 733600.0, 0, -0.5, 3725000.0)}
    scene = write_raster(tmp_path / "scene.tif", image[None].astype(np.uint16), **utm)
    labels = write_raster(tmp_path / "ids.tif", ids[None], **utm)
    classes = tmp_path / "classes.yaml"
    classes.write_text(yaml.safe_dump(BUILDINGS.to_json()))
    config = tmp_path / "net.yaml"
    options = dict(LIGHT)
    config.write_text(yaml.safe_dump({"options": options}))
    out = tmp_path / "condinst.safetensors"
    args = [
        "train", "--task", "instance", "--arch", "condinst", "--encoder", "resnet18",
        "--image", scene, "--labels", labels, "--val-image", scene, "--val-labels", labels,
        "--classes", classes, "--config", config, "-o", out, "--epochs", "3",
        "--steps-per-epoch", "25", "--batch-size", "2", "--window", "64", "--lr", "3e-3",
        "--device", "cpu",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "best val AP50" in result.output
    meta = read_checkpoint_meta(out)
    assert (meta.task, meta.arch, meta.options) == ("instance", "condinst", options)
    assert isinstance(load_predictor(model_spec(str(out), "cpu")), CondInstPredictor)
    maps = []
    for chunk in (48, 144):
        found = tmp_path / f"objects{chunk}.tif"
        args = ["predict", scene, "-m", out, "-o", found, "--task", "instance", "--chunk",
                chunk, "--device", "cpu"]  # fmt: skip
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        with rasterio.open(found) as src:
            maps.append(src.read())
    assert (maps[0] == maps[1]).all()  # chunk seams change nothing
    objects = maps[0][-1]
    owners = [np.bincount(objects[ids == k]).argmax() for k in range(1, len(boxes) + 1)]
    assert 0 not in owners and len(set(owners)) == len(boxes)  # one id per square
    ev = tmp_path / "ev"
    args = ["evaluate", "-m", out, "--image", scene, "--labels", labels, "-o", ev,
            "--task", "instance", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    report = json.loads((ev / "metrics.json").read_text())
    # validation predicts the scene as one window (0.82 here); evaluate tiles it in 48 px
    # strides with 8 px margins, cutting squares into pieces it stitches (0.71)
    assert meta.metrics["val_ap50"] > 0.6 and report["ap50"] > 0.5 and report["pq"] > 0.2


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"size_ranges": [[0, 64]]}, "give CondInst 3 size ranges"),
        ({"mask_stride": 2}, "mask_stride must be 4 or 8"),
        ({"anchor_sizes": [8]}, r"unknown CondInst options \['anchor_sizes'\]"),
    ],
)
def test_geoseg_train_refuses_bad_condinst_options(
    tmp_path: Path, options: dict[str, object], match: str
) -> None:
    ids = np.zeros((64, 64), np.uint32)
    ids[8:24, 8:24] = 1
    scene = write_raster(tmp_path / "scene.tif", (ids[None] * 900 + 300).astype(np.uint16))
    labels = write_raster(tmp_path / "ids.tif", ids[None])
    classes = tmp_path / "classes.yaml"
    classes.write_text(yaml.safe_dump(BUILDINGS.to_json()))
    config = tmp_path / "net.yaml"
    config.write_text(yaml.safe_dump({"options": {**LIGHT, **options}}))
    args = ["train", "--task", "instance", "--arch", "condinst", "--image", scene, "--labels",
            labels, "--classes", classes, "--config", config, "-o", tmp_path / "m.safetensors",
            "--epochs", "1", "--steps-per-epoch", "1", "--window", "64",
            "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and re.search(match, result.output)
    assert not (tmp_path / "m.safetensors").exists()
