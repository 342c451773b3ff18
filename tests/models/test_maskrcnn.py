"""torchvision Mask R-CNN: any band count, small anchors, the instance-window contract."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchvision.models.detection import MaskRCNN

from geoseg.errors import GeosegError, UnknownModelError
from geoseg.io.checkpoint import save_checkpoint
from geoseg.models.maskrcnn import (
    DEFAULT_ANCHOR_SIZES,
    MaskRCNNPredictor,
    build_maskrcnn,
    load_maskrcnn_predictor,
    maskrcnn_targets,
)
from geoseg.stitching import InstancePredictor
from geoseg.types import ClassInfo, ClassSchema, ModelMeta, Normalization
from tests.stitching.oracle import THING_SCHEMA


def _light(bands: int, things: int, **options: Any) -> MaskRCNN:
    """The lightest build: resnet18, narrow FPN and heads (the tests measure wiring)."""
    return build_maskrcnn(
        bands, things, "resnet18", window=128, fpn_channels=32, representation_size=64,
        **options,
    )  # fmt: skip


def _meta(bands: int) -> ModelMeta:
    names = tuple(f"b{i}" for i in range(bands))
    return ModelMeta(
        task="instance", arch="maskrcnn", encoder="resnet18", bands=names,
        normalization=Normalization((0.0,) * bands, (1.0,) * bands), schema=THING_SCHEMA,
        window=128, margin=16,
    )  # fmt: skip


def _targets() -> dict[str, torch.Tensor]:
    ids = np.zeros((128, 128), np.int64)
    classes = np.zeros((128, 128), np.int64)
    ids[10:30, 12:40], classes[10:30, 12:40] = 3, 2  # building
    ids[70:90, 60:75], classes[70:90, 60:75] = 8, 5  # tree
    ids[100:110, 0:5] = 9  # on ground (stuff): not a target
    return maskrcnn_targets(ids, classes, THING_SCHEMA)


def test_targets_from_an_id_raster() -> None:
    t = _targets()
    np.testing.assert_array_equal(t["boxes"].numpy(), [[12, 10, 40, 30], [60, 70, 75, 90]])
    assert t["labels"].tolist() == [1, 2]  # building, tree: thing order of the schema
    assert t["masks"].shape == (2, 128, 128) and t["masks"].dtype == torch.uint8
    assert t["masks"][0].sum() == 20 * 28 and t["masks"][1, 70, 60] == 1


@pytest.mark.parametrize("bands", [1, 3, 4])
def test_eval_forward_returns_window_instances(bands: int) -> None:
    torch.manual_seed(0)
    module = _light(bands, 2)
    assert module.backbone.body.conv1.in_channels == bands
    assert module.transform.image_mean == [0.0] * bands
    assert module.transform.image_std == [1.0] * bands
    model = MaskRCNNPredictor(module, _meta(bands), torch.device("cpu"), score_threshold=0.0)
    assert isinstance(model, InstancePredictor)
    x = np.random.default_rng(bands).normal(size=(2, bands, 128, 128)).astype(np.float32)
    valid = np.ones((2, 128, 128), bool)
    valid[1, :64] = False
    found = model.predict_instances(x, valid)
    assert len(found) == 2
    for masks, classes, scores in found:
        n = len(masks)
        assert masks.shape == (n, 128, 128) and masks.dtype == bool
        assert classes.shape == (n,) and classes.dtype == np.int64 and set(classes) <= {2, 5}
        assert scores.shape == (n,) and scores.dtype == np.float32
        assert ((scores >= 0) & (scores <= 1)).all()
        assert (masks.sum(axis=(1, 2)) >= model.min_pixels).all()
    assert len(found[0][0]) > 0  # an untrained model still detects at score >= 0
    assert not found[1][0][:, :64].any()  # nodata is in no instance


def test_score_threshold_drops_detections() -> None:
    torch.manual_seed(0)
    module = _light(3, 2)
    x = np.random.default_rng(0).normal(size=(1, 3, 128, 128)).astype(np.float32)
    valid = np.ones((1, 128, 128), bool)
    everything = MaskRCNNPredictor(module, _meta(3), torch.device("cpu"), score_threshold=0.0)
    scores = everything.predict_instances(x, valid)[0][2]
    cut = float(np.median(scores))
    strict = MaskRCNNPredictor(module, _meta(3), torch.device("cpu"), score_threshold=cut)
    kept = strict.predict_instances(x, valid)[0][2]
    assert 0 < len(kept) < len(scores)
    np.testing.assert_array_equal(np.sort(kept), np.sort(scores[scores >= cut]))


def test_one_training_step_gives_a_finite_loss() -> None:
    torch.manual_seed(0)
    model = _light(4, 2).train()
    losses = model([torch.randn(4, 128, 128)], [_targets()])
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness"} <= set(losses)
    total = sum(losses.values())
    assert isinstance(total, torch.Tensor) and torch.isfinite(total) and total.item() > 0
    torch.optim.SGD(model.parameters(), lr=0.01).zero_grad()
    total.backward()
    grad = model.backbone.body.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_anchor_sizes_are_configurable() -> None:
    default = _light(3, 1)
    assert default.rpn.anchor_generator.sizes == tuple((s,) for s in DEFAULT_ANCHOR_SIZES)
    small = _light(3, 1, anchor_sizes=(4, 8, 16, 32, 64))
    assert small.rpn.anchor_generator.sizes == ((4,), (8,), (16,), (32,), (64,))
    assert small.roi_heads.box_predictor.cls_score.out_features == 2  # 1 thing + background


def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown Mask R-CNN backbone 'vgg16'.*resnet18"):
        build_maskrcnn(3, 1, backbone="vgg16")
    with pytest.raises(GeosegError, match="5"):
        build_maskrcnn(3, 1, anchor_sizes=(8, 16))
    with pytest.raises(GeosegError, match="thing"):
        build_maskrcnn(3, 0)


def test_default_build_has_torchvision_layout() -> None:
    """With 3 bands and torchvision's widths, the weights fit maskrcnn_resnet50_fpn's."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    ours = build_maskrcnn(3, 90, "resnet50").state_dict()
    theirs = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    options = {"fpn_channels": 32, "representation_size": 64, "anchor_sizes": [4, 8, 16, 32, 64]}
    module = build_maskrcnn(1, 2, "resnet18", window=128, **options)
    meta = dataclasses.replace(_meta(1), options=options)
    path = save_checkpoint(tmp_path / "m.safetensors", module.state_dict(), meta)
    loaded = load_maskrcnn_predictor(path, "cpu")
    assert loaded.bands == ("b0",) and loaded._base.module.rpn.anchor_generator.sizes[0] == (4,)
    model = MaskRCNNPredictor(module, meta, torch.device("cpu"), score_threshold=0.0)
    loaded.score_threshold = 0.0
    x = np.random.default_rng(0).normal(size=(1, 1, 128, 128)).astype(np.float32)
    valid = np.ones((1, 128, 128), bool)
    for a, b in zip(model.predict_instances(x, valid)[0], loaded.predict_instances(x, valid)[0],
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)


def test_semantic_side_sums_to_one_and_follows_the_masks() -> None:
    """``predict`` turns detections into probabilities (used for panoptic stuff)."""
    from geoseg.models import maskrcnn

    predictor = maskrcnn.MaskRCNNPredictor.__new__(maskrcnn.MaskRCNNPredictor)
    schema = ClassSchema(
        (ClassInfo(0, "ground", (0, 0, 0)), ClassInfo(5, "building", (255, 0, 0), is_thing=True))
    )
    predictor.schema = schema
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 1:3, 1:3] = True

    def fake(batch: np.ndarray, valid: np.ndarray) -> list[tuple[np.ndarray, ...]]:
        return [(mask, np.array([5]), np.array([0.8], np.float32))]

    predictor.predict_instances = fake  # type: ignore[method-assign]
    probs = predictor.predict(np.zeros((1, 1, 4, 4), np.float32), np.ones((1, 4, 4), bool))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[0, 1], np.where(mask[0], 0.8, 0.0))
    np.testing.assert_allclose(probs[0, 0], np.where(mask[0], 0.2, 1.0))
