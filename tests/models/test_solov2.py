"""SOLOv2: Matrix NMS, grid target assignment, window inference, a tiny overfit and
`geoseg train`/`geoseg evaluate` end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from affine import Affine
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import CheckpointError, GeosegError, UnknownModelError
from geoseg.io.checkpoint import read_checkpoint_meta, save_checkpoint
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.solov2 import (
    SOLOv2Predictor,
    build_solov2,
    default_grids,
    load_solov2_predictor,
    scale_ranges,
    solov2_model,
)
from geoseg.models.solov2_post import SOLOv2Thresholds, matrix_nms, window_objects
from geoseg.models.solov2_targets import centre_cells, grid_targets
from geoseg.stitching import InstancePredictor
from geoseg.training.sampling import Batch
from geoseg.training.tasks import solov2_step_loss
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

LIGHT = {"fpn_channels": 32, "head_channels": 32, "head_convs": 2, "mask_channels": 32}


def _three_masks() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (16 px) and B (16 px) share 8 px: IoU 8 / 24 = 1/3. C (4 px) lies inside A
    (IoU 4 / 16 = 1/4) but is of another class."""
    a = box((8, 8), slice(0, 4), slice(0, 4))
    b = box((8, 8), slice(0, 4), slice(2, 6))
    c = box((8, 8), slice(0, 2), slice(0, 2))
    masks = torch.from_numpy(np.stack([a, b, c]))
    return masks, torch.tensor([0, 0, 1]), torch.tensor([0.9, 0.8, 0.7])


@pytest.mark.parametrize(
    ("kernel", "b_decayed"),
    [
        # exp(-(iou^2 - cmax_A^2) / sigma) = exp(-(1/9 - 0) / 0.5) = exp(-2/9)
        ("gaussian", 0.8 * math.exp(-2 / 9)),  # 0.640590
        # (1 - iou) / (1 - cmax_A) = (2/3) / 1
        ("linear", 0.8 * 2 / 3),  # 0.533333
    ],
)
def test_matrix_nms_decays_by_hand(kernel: str, b_decayed: float) -> None:
    masks, labels, scores = _three_masks()
    out = matrix_nms(masks, labels, scores, kernel=kernel, sigma=0.5)
    # A is best: kept; C overlaps A by 1/4 but is another class: kept
    np.testing.assert_allclose(out.numpy(), [0.9, b_decayed, 0.7], rtol=1e-6)


def test_matrix_nms_compensates_a_suppressed_suppressor() -> None:
    # A > B > C, B = A (IoU 1), C overlaps B by 1/3 and A by 1/3 too (B = A);
    # C's decay through B is exp(-(1/9 - 1) / 0.5) > 1 and through A exp(-2/9): A's wins
    masks, _, scores = _three_masks()
    masks = torch.stack([masks[0], masks[0], masks[1]])
    out = matrix_nms(masks, torch.zeros(3), scores)
    np.testing.assert_allclose(
        out.numpy(), [0.9, 0.8 * math.exp(-2), 0.7 * math.exp(-2 / 9)], rtol=1e-6
    )


def test_matrix_nms_of_nothing_and_bad_kernel() -> None:
    empty = torch.zeros(0, 4, 4, dtype=torch.bool)
    assert len(matrix_nms(empty, torch.zeros(0), torch.zeros(0))) == 0
    masks, labels, scores = _three_masks()
    with pytest.raises(GeosegError, match="gaussian"):
        matrix_nms(masks, labels, scores, kernel="soft")


def test_centre_region_cells_by_hand() -> None:
    # 8 x 8 px square, rows/cols 20-27 and 36-43: centre (24, 40) px, on cell corners of
    # an 8-cell grid over 64 px (8 px cells); region +-0.8 px -> rows 2-3, cols 4-5
    square = box((64, 64), slice(20, 28), slice(36, 44))
    rows, cols = centre_cells(square, 8)
    assert (list(rows), list(cols)) == ([2, 3], [4, 5])
    # a 30 x 30 px box at rows/cols 2-31: centre (17, 17); region +-3 px; 4 cells of 16 px
    big = box((64, 64), slice(2, 32), slice(2, 32))
    assert [list(r) for r in centre_cells(big, 4)] == [[0, 1], [0, 1]]
    # a tall 64 x 3 px object, sigma 1: the region (rows 0-64 px, cols 0-3 px) is clipped
    # to one cell either side of the centre's cell (row 8 of 16: rows 7-9; cols: cell 0)
    tall = box((64, 64), slice(0, 64), slice(0, 3))
    assert [list(r) for r in centre_cells(tall, 16, sigma=1.0)] == [[7, 8, 9], [0]]


def test_objects_go_to_the_level_of_their_scale() -> None:
    small = box((64, 64), slice(20, 28), slice(36, 44))  # scale 8 px
    big = box((64, 64), slice(2, 32), slice(2, 32))  # scale 30 px
    t = grid_targets([(small, 1), (big, 0)], grids=(8, 4), scale_ranges=((1, 12), (12, 64)))
    # level 0 (8 x 8): cells (2,4), (2,5), (3,4), (3,5); level 1 starts at 64: (0,0) ... (1,1)
    expected = [2 * 8 + 4, 2 * 8 + 5, 3 * 8 + 4, 3 * 8 + 5, 64 + 0, 64 + 1, 64 + 4, 64 + 5]
    assert t.positive.tolist() == expected
    assert t.classes[expected].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert (t.classes >= 0).sum() == 8 and t.classes.shape == (64 + 16,)
    assert (t.masks[:4] == small).all() and (t.masks[4:] == big).all()
    # overlapping ranges: an object of scale 12 belongs to both levels
    both = grid_targets([(box((64, 64), slice(0, 12), slice(0, 12)), 0)], (8, 4),
                        ((1, 12), (12, 64)))  # fmt: skip
    assert (both.positive < 64).any() and (both.positive >= 64).any()


def test_window_objects_rescores_by_maskness_and_decays_duplicates() -> None:
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    cates = torch.full((1, 4, 4), -10.0)
    cates[0, 0, 0], cates[0, 0, 3], cates[0, 3, 3] = logit(0.9), logit(0.8), logit(0.6)
    kernels = torch.zeros(2, 4, 4)
    kernels[:, 0, 0] = kernels[:, 3, 3] = torch.tensor([1.0, 0.0])  # the same (left) mask
    kernels[:, 0, 3] = torch.tensor([0.0, 1.0])  # the right mask
    features = torch.full((2, 8, 8), -20.0)
    features[0, :, :4], features[1, :, 4:] = 4.0, 2.0
    masks, classes, scores = window_objects([cates], [kernels], features, SOLOv2Thresholds())
    s4, s2 = 1 / (1 + math.exp(-4)), 1 / (1 + math.exp(-2))  # maskness of each mask
    # scores = category x maskness; the duplicate decays by exp(-(1 - 0) / 0.5)
    np.testing.assert_allclose(
        scores.numpy(), [0.9 * s4, 0.8 * s2, 0.6 * s4 * math.exp(-2)], rtol=1e-5
    )
    assert classes.tolist() == [0, 0, 0]
    assert ((masks[0] > 0.5) == (features[0] > 0)).all() and (masks[1] > 0.5)[:, 4:].all()
    strict = window_objects([cates], [kernels], features, SOLOv2Thresholds(update_threshold=0.1))
    assert len(strict[2]) == 2  # 0.0797 < 0.1: the duplicate goes


def _meta(bands: int, schema: ClassSchema = THING_SCHEMA, **options: object) -> ModelMeta:
    return instance_meta("solov2", LIGHT, bands, schema, **options)


@pytest.mark.parametrize("bands", [1, 3, 5])
def test_any_band_count_and_the_instance_contract(bands: int) -> None:
    torch.manual_seed(0)
    module = build_solov2(bands, 2, window=64, **LIGHT)  # type: ignore[arg-type]
    assert module.backbone.body.conv1.in_channels == bands
    assert module.grids == default_grids(64) == (5, 4, 3, 2, 2)
    meta = _meta(bands, score_threshold=0.005, update_threshold=0.0)
    model = SOLOv2Predictor(module, meta, torch.device("cpu"))
    assert isinstance(model, InstancePredictor)
    x = np.random.default_rng(bands).normal(size=(2, bands, 64, 64)).astype(np.float32)
    valid = np.ones((2, 64, 64), bool)
    valid[1, :32] = False
    found = model.predict_instances(x, valid)
    assert len(found) == 2 and len(found[0][0]) > 0  # untrained, low thresholds: objects
    for masks, classes, scores in found:
        assert masks.dtype == bool and masks.shape[1:] == (64, 64)
        assert set(classes) <= {2, 5} and scores.dtype == np.float32
        assert (np.diff(scores) <= 0).all() and (masks.sum(axis=(1, 2)) >= 4).all()
    assert not found[1][0][:, :32].any()  # nodata is in no object


def test_a_window_without_objects_gives_empty_arrays() -> None:
    torch.manual_seed(0)
    module = build_solov2(3, 2, window=64, **LIGHT)  # type: ignore[arg-type]
    model = SOLOv2Predictor(module, _meta(3, score_threshold=1.0), torch.device("cpu"))
    x = np.zeros((2, 3, 96, 64), np.float32)  # not square, as whole-raster validation
    for masks, classes, scores in model.predict_instances(x, np.ones((2, 96, 64), bool)):
        assert masks.shape == (0, 96, 64) and masks.dtype == bool
        assert classes.shape == scores.shape == (0,) and scores.dtype == np.float32


def test_bad_options_are_named() -> None:
    with pytest.raises(
        UnknownModelError, match=r"unknown SOLOv2 backbone 'vgg16'.*resnet18, resnet34"
    ):
        build_solov2(3, 1, backbone="vgg16")
    with pytest.raises(GeosegError, match="5 grid sizes"):
        build_solov2(3, 1, grids=(8, 4))
    with pytest.raises(GeosegError, match="thing class"):
        build_solov2(3, 0)
    with pytest.raises(GeosegError, match="5 scale ranges"):
        scale_ranges({"scale_ranges": [[1, 8], [8, 4]]})
    with pytest.raises(GeosegError, match="'gaussian' or 'linear'"):
        SOLOv2Thresholds(nms_kernel="hard")
    with pytest.raises(GeosegError, match=r"unknown SOLOv2 options \['anchor_sizes'\].*grids"):
        solov2_model(_meta(3, anchor_sizes=[8, 16]))


def test_loader_refuses_another_checkpoint(tmp_path: Path) -> None:
    meta = _meta(3)
    module = build_solov2(3, 2, window=64, **LIGHT)  # type: ignore[arg-type]
    other = dataclasses.replace(meta, arch="maskrcnn")
    path = save_checkpoint(tmp_path / "m.safetensors", module.state_dict(), other)
    with pytest.raises(
        CheckpointError, match=r"'maskrcnn' checkpoint, not a SOLOv2.*--arch solov2"
    ):
        load_solov2_predictor(path, device="cpu")
    good = save_checkpoint(tmp_path / "s.safetensors", module.state_dict(), meta)
    assert isinstance(load_solov2_predictor(good, device="cpu"), SOLOv2Predictor)


def test_tiny_overfit_finds_the_two_squares() -> None:
    image, a, b = two_squares()
    batch = squares_batch(image, a, b)
    torch.manual_seed(0)
    module = build_solov2(3, 1, window=64, **LIGHT).train()  # type: ignore[arg-type]
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    x, losses, t0 = torch.from_numpy(image)[None], [], time.perf_counter()
    for _ in range(25):
        loss = solov2_step_loss(module, x, batch, BUILDINGS, scale_ranges({}))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]
    model = SOLOv2Predictor(module, _meta(3, BUILDINGS), torch.device("cpu"))
    masks, classes, _ = model.predict_instances(image[None], np.ones((1, 64, 64), bool))[0]
    for square in (a, b):
        best = max((m & square).sum() / (m | square).sum() for m in masks)
        assert best > 0.5
    assert set(classes) == {1}
    assert time.perf_counter() - t0 < 60  # about 10 s on one free core


def test_step_loss_without_objects_is_finite() -> None:
    batch = empty_batch()
    module = build_solov2(3, 1, window=64, **LIGHT)  # type: ignore[arg-type]
    loss = solov2_step_loss(module, torch.zeros(2, 3, 64, 64), batch, BUILDINGS, scale_ranges({}))
    assert torch.isfinite(loss) and 0 < float(loss.detach()) < 1  # the focal loss of 0.01 priors
    no_ids = Batch(batch.image, batch.valid, batch.target)
    with pytest.raises(GeosegError, match="instance ids"):
        solov2_step_loss(module, torch.zeros(2, 3, 64, 64), no_ids, BUILDINGS, scale_ranges({}))


def test_geoseg_train_and_evaluate_solov2(tmp_path: Path) -> None:
    """`geoseg train --task instance --arch solov2` on a 64 px scene of three bright
    squares, then `geoseg evaluate` of the checkpoint on the same scene (whole-scene
    prediction through the instance stitching)."""
    torch.set_num_threads(1)
    ids = np.zeros((64, 64), np.uint32)
    for i, (r0, r1, c0, c1) in enumerate(((6, 22, 8, 24), (36, 56, 30, 54), (8, 18, 44, 58))):
        ids[r0:r1, c0:c1] = i + 1
    image = np.random.default_rng(0).normal(300, 20, size=(64, 64)) + 900 * (ids > 0)
    utm = {"crs": "EPSG:32616", "transform": Affine(0.5, 0, 733600.0, 0, -0.5, 3725000.0)}
    scene = write_raster(tmp_path / "scene.tif", image[None].astype(np.uint16), **utm)
    labels = write_raster(tmp_path / "ids.tif", ids[None], **utm)
    classes = tmp_path / "classes.yaml"
    classes.write_text(yaml.safe_dump(BUILDINGS.to_json()))
    config = tmp_path / "net.yaml"
    config.write_text(yaml.safe_dump({"options": LIGHT}))
    out = tmp_path / "solo.safetensors"
    args = [
        "train", "--task", "instance", "--arch", "solov2", "--encoder", "resnet18",
        "--image", scene, "--labels", labels, "--val-image", scene, "--val-labels", labels,
        "--classes", classes, "--config", config, "-o", out, "--epochs", "3",
        "--steps-per-epoch", "15", "--batch-size", "2", "--window", "64", "--lr", "3e-3",
        "--device", "cpu",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "best val AP50" in result.output
    meta = read_checkpoint_meta(out)
    assert (meta.task, meta.arch, meta.options) == ("instance", "solov2", LIGHT)
    assert isinstance(load_predictor(model_spec(str(out), "cpu")), SOLOv2Predictor)
    ev = tmp_path / "ev"
    args = ["evaluate", "-m", out, "--image", scene, "--labels", labels, "-o", ev,
            "--task", "instance", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    report = json.loads((ev / "metrics.json").read_text())
    # validation predicts the scene as one window (1.0 here); evaluate tiles it in 48 px
    # strides with 8 px margins, so the squares are cut and their pieces stitched
    assert meta.metrics["val_ap50"] > 0.9 and report["ap50"] > 0.5
