"""Panoptic-DeepLab grouping, targets and predictor; Panoptic FPN-style fusion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch
from scipy import ndimage

from geoseg.errors import CheckpointError, GeosegError
from geoseg.io.checkpoint import save_checkpoint
from geoseg.models.panoptic import (
    PANOPTIC_ARCH,
    PanopticPredictor,
    build_panoptic_model,
    group_panoptic,
    load_panoptic_predictor,
    panoptic_loss,
    panoptic_targets,
)
from geoseg.stitching import InstancePredictor, plan_chunks, relabel_blocks, stitch_instances
from geoseg.stitching.panoptic import fuse_panoptic, panoptic_block
from geoseg.types import ModelMeta, Normalization, TileSpec
from tests.stitching.oracle import THING_SCHEMA, OraclePredictor, object_scene

# THING_SCHEMA channels: 0 ground (stuff, id 0), 1 building (id 2), 2 tree (id 5).
THING_CHANNELS = (1, 2)


def _grid(rows: list[str]) -> np.ndarray:
    return np.array([[int(c, 16) for c in row] for row in rows], dtype=np.int64)


def _one_hot(best: np.ndarray, k: int = 3) -> np.ndarray:
    p = np.full((k, *best.shape), 0.1, np.float32)
    np.put_along_axis(p, best[None], 0.8, axis=0)
    return p


def _heatmap(shape: tuple[int, int], peaks: list[tuple[int, int, float]]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    maps = [v * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2)) for y, x, v in peaks]
    return np.max(maps, axis=0).astype(np.float32)


def test_group_panoptic_assigns_pixels_to_nearest_shifted_centre() -> None:
    # Two touching buildings A (centre (2, 3)) and B (centre (2, 8)), one tree C (8, 5).
    objects = _grid([
        "0000000000000000",
        "0AAAAABBBBB00000",
        "0AAAAABBBBB00000",
        "0AAAAABBBBB00000",
        "0AAAAABBBBB00000",
        "0000000000000000",
        "0000000000000000",
        "000CCCCCC0000000",
        "000CCCCCC0000000",
        "000CCCCCC0000000",
        "000CCCCCC0000000",
        "0000000000000000",
    ])  # fmt: skip
    centres = {0xA: (2, 3), 0xB: (2, 8), 0xC: (8, 5)}
    offset = np.zeros((2, *objects.shape), np.float32)
    for obj, (cy, cx) in centres.items():
        ys, xs = np.nonzero(objects == obj)
        offset[0, ys, xs] = cy - ys + 0.4  # imprecise, but nearest to the right centre
        offset[1, ys, xs] = cx - xs
    offset[:, 2, 6] = (0.0, -0.6)  # B's pixel (2, 6) points to (2, 5.4): nearer A's centre
    best = np.select([objects == 0xC, objects > 0], [2, 1], 0)
    best[8, 4] = 1  # one tree pixel looks like a building: the vote keeps "tree"
    valid = np.ones(objects.shape, bool)
    valid[10, 8] = False
    # A 0.9, B 0.8, C 0.7, and a centre over ground that attracts no pixel.
    heat = _heatmap(objects.shape, [(2, 3, 0.9), (2, 8, 0.8), (8, 5, 0.7), (10, 14, 0.6)])

    got = group_panoptic(_one_hot(best), heat, offset, THING_CHANNELS, 0.1, 3, 10, valid)

    expected = _grid([
        "0000000000000000",
        "0111112222200000",
        "0111111222200000",
        "0111112222200000",
        "0111112222200000",
        "0000000000000000",
        "0000000000000000",
        "0003333330000000",
        "0003333330000000",
        "0003333330000000",
        "0003333300000000",
        "0000000000000000",
    ])  # fmt: skip
    np.testing.assert_array_equal(got.instances, expected)
    assert got.instances.dtype == np.int32
    assert got.classes.tolist() == [1, 1, 2]
    np.testing.assert_allclose(
        got.scores, [0.9 * 0.8, 0.8 * 0.8, 0.7 * (22 * 0.8 + 0.1) / 23], rtol=1e-5
    )
    assert got.semantic[10, 8] == -1 and got.semantic[8, 4] == 1 and got.semantic[0, 0] == 0


def test_group_panoptic_without_centres_has_no_instances() -> None:
    best = np.ones((6, 6), np.int64)
    heat = np.full((6, 6), 0.05, np.float32)
    got = group_panoptic(_one_hot(best), heat, np.zeros((2, 6, 6), np.float32), (1, 2), 0.1)
    assert not got.instances.any() and got.classes.shape == (0,) and got.scores.shape == (0,)


def test_targets_match_hand_computed_centres_and_offsets() -> None:
    ids = np.zeros((8, 10), np.int64)
    classes = np.zeros((8, 10), np.int64)
    ids[1:3, 1:4], classes[1:3, 1:4] = 7, 2  # building: centre of mass (1.5, 2) -> (2, 2)
    for y, x in [(5, 6), (5, 7), (6, 6)]:  # tree: (16/3, 19/3) -> (5, 6)
        ids[y, x], classes[y, x] = 9, 5
    ids[7, 0] = 4  # an id on a stuff pixel: no target

    centre, offset = panoptic_targets(ids, classes, things={2, 5}, sigma_px=2.0)

    assert centre.shape == (8, 10) and centre.dtype == np.float32
    assert offset.shape == (2, 8, 10) and offset.dtype == np.float32
    assert centre[2, 2] == 1.0 and centre[5, 6] == 1.0
    np.testing.assert_allclose(centre[2, 4], np.exp(-4 / 8), rtol=1e-6)
    np.testing.assert_allclose(centre[7, 0], np.exp(-(25 + 4) / 8), rtol=1e-6)
    expected = np.zeros((2, 8, 10), np.float32)
    expected[0, 1, 1:4], expected[1, 1, 1:4] = 1, [1, 0, -1]
    expected[0, 2, 1:4], expected[1, 2, 1:4] = 0, [1, 0, -1]
    expected[:, 5, 6], expected[:, 5, 7], expected[:, 6, 6] = (0, 0), (0, -1), (-1, 0)
    np.testing.assert_array_equal(offset, expected)

    # Perfect heads reproduce the thing instances exactly.
    best = np.select([classes == 2, classes == 5], [1, 2], 0)
    got = group_panoptic(_one_hot(best), centre, offset, THING_CHANNELS, 0.5, 3)
    np.testing.assert_array_equal(got.instances, np.select([ids == 7, ids == 9], [1, 2], 0))
    assert got.classes.tolist() == [1, 2]


def test_targets_refuse_mismatched_shapes() -> None:
    with pytest.raises(GeosegError, match="differ in shape"):
        panoptic_targets(np.zeros((4, 4)), np.zeros((4, 5)), {1})


def test_fuse_panoptic_pastes_by_score_and_drops_hidden_instances() -> None:
    sem = np.array(
        [
            [2, 2, 2, 0, 0, 1],
            [2, 2, 2, 2, 0, 1],
            [2, 2, 2, 2, 0, 1],
            [0, 2, 2, 2, 0, 1],
            [0, 0, 0, 0, 2, 2],
            [2, 0, 0, 0, 2, 255],
        ],
        np.uint8,
    )
    masks = np.zeros((4, 6, 6), bool)
    masks[0, 0:3, 0:3] = True  # 0.9
    masks[1, 1:4, 1:4] = True  # 0.8, keeps 5 of 9 pixels: kept
    masks[2, 2:4, 2:4] = True  # 0.7, keeps 0 of 4: dropped
    masks[3, 4:6, 4:6] = True  # 0.95, pasted first; its nodata pixel stays nodata
    fused = fuse_panoptic(
        sem, masks, np.array([2, 2, 2, 2]), np.array([0.9, 0.8, 0.7, 0.95]), things={2}
    )
    v = 255
    expected_class = [
        [2, 2, 2, 0, 0, 1],
        [2, 2, 2, 2, 0, 1],
        [2, 2, 2, 2, 0, 1],
        [0, 2, 2, 2, 0, 1],
        [0, 0, 0, 0, 2, 2],
        [v, 0, 0, 0, 2, v],
    ]
    expected_ids = [
        [2, 2, 2, 0, 0, 0],
        [2, 2, 2, 3, 0, 0],
        [2, 2, 2, 3, 0, 0],
        [0, 3, 3, 3, 0, 0],
        [0, 0, 0, 0, 1, 1],
        [0, 0, 0, 0, 1, 0],
    ]
    assert fused.dtype == np.uint32 and fused.shape == (2, 6, 6)
    np.testing.assert_array_equal(fused[0], expected_class)
    np.testing.assert_array_equal(fused[1], expected_ids)

    strict = fuse_panoptic(sem, masks, np.array([2, 2, 2, 2]), np.array([0.9, 0.8, 0.7, 0.95]),
                           things={2}, min_overlap=0.6)  # fmt: skip
    # 5/9 < 0.6: the 0.8 one goes, and the 0.7 one now keeps 3 of 4 pixels
    np.testing.assert_array_equal(strict[1][:4, :4], [
        [2, 2, 2, 0],
        [2, 2, 2, 0],
        [2, 2, 2, 3],
        [0, 0, 3, 3],
    ])  # fmt: skip
    assert strict[0][1, 3] == strict[0][3, 1] == 255  # building pixels no instance holds: void


def test_fuse_panoptic_checks_its_arguments() -> None:
    sem = np.zeros((4, 4), np.uint8)
    with pytest.raises(GeosegError, match="min_overlap"):
        fuse_panoptic(sem, np.zeros((0, 4, 4), bool), np.zeros(0), np.zeros(0), {2}, 1.5)
    with pytest.raises(GeosegError, match="differ in shape"):
        fuse_panoptic(sem, np.zeros((1, 4, 5), bool), np.ones(1), np.ones(1), {2})


@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus"])
def test_model_has_semantic_centre_and_offset_channels(arch: str) -> None:
    torch.manual_seed(0)
    model = build_panoptic_model(arch, "resnet18", 2, 3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 2, 64, 64))
    assert out.shape == (2, 3 + 3, 64, 64) and torch.isfinite(out).all()


def test_loss_is_finite_and_reaches_every_head() -> None:
    torch.manual_seed(0)
    model = build_panoptic_model("unet", "resnet18", 2, 3, encoder_depth=3,
                                 decoder_channels=(32, 16, 8))  # fmt: skip
    ids = np.zeros((32, 32), np.int64)
    ids[4:12, 4:12], ids[20:30, 16:24] = 1, 2
    classes = np.where(ids > 0, 2, 0)
    centre, offset = panoptic_targets(ids, classes, {2})
    out = model(torch.randn(1, 2, 32, 32))
    loss = panoptic_loss(
        out, torch.from_numpy(np.where(ids > 0, 1, 0))[None], torch.from_numpy(centre)[None],
        torch.from_numpy(offset)[None], torch.from_numpy(ids > 0)[None],
    )  # fmt: skip
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    for head in (model.base.segmentation_head, model.centre_head, model.offset_head):
        grad = head[0].weight.grad
        assert grad is not None and grad.abs().sum() > 0


def _predictor(threshold: float = 0.0) -> PanopticPredictor:
    torch.manual_seed(0)
    meta = ModelMeta(
        task="panoptic", arch="unet", encoder="resnet18", bands=("a", "b"),
        normalization=Normalization((0.0, 0.0), (1.0, 1.0)), schema=THING_SCHEMA,
        window=32, margin=4,
    )  # fmt: skip
    module = build_panoptic_model("unet", "resnet18", 2, len(THING_SCHEMA))
    return PanopticPredictor(module, meta, torch.device("cpu"), threshold, min_pixels=1)


def test_predictor_windows_are_well_formed() -> None:
    model = _predictor()
    assert isinstance(model, InstancePredictor)
    x = np.random.default_rng(0).normal(size=(2, 2, 32, 32)).astype(np.float32)
    valid = np.ones((2, 32, 32), bool)
    valid[1, :, :10] = False
    probs = model.predict(x, valid)
    assert probs.shape == (2, 3, 32, 32) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    for (masks, classes, scores), p, v in zip(model.predict_instances(x, valid), probs, valid,
                                              strict=True):  # fmt: skip
        n = len(masks)
        assert n > 0
        assert masks.shape == (n, 32, 32) and masks.dtype == bool
        assert classes.shape == (n,) and classes.dtype == np.int64 and set(classes) <= {2, 5}
        assert scores.shape == (n,) and scores.dtype == np.float32
        assert ((scores > 0) & (scores <= 1)).all()
        assert masks.sum(0).max() <= 1  # disjoint
        # threshold 0 keeps the heatmap's maximum: valid thing pixels have an instance,
        # but each keeps only its component at its centre
        thing = (p.argmax(0) > 0) & v
        assert not (masks.any(0) & ~thing).any() and masks.any(0).sum() > thing.sum() / 4
        assert [ndimage.label(m)[1] for m in masks] == [1] * n


def test_predictor_runs_through_the_stitcher() -> None:
    model = _predictor(threshold=0.1)
    x = np.random.default_rng(1).normal(size=(2, 45, 40)).astype(np.float32)
    stage = np.zeros(x.shape[1:], np.uint32)
    ids = stitch_instances(
        da.from_array(x), da.ones(x.shape[1:], dtype=bool), lambda: model,
        TileSpec(32, 4, 2), stage, scheduler="sync",
    )  # fmt: skip
    assert ids.count > 0 and stage.max() <= max(len(lut) - 1 for lut in ids.luts.values())
    assert set(np.unique(ids.classes[1:])) <= {2, 5}


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = _predictor(threshold=0.1)
    meta = dataclasses.replace(
        model.meta, arch=PANOPTIC_ARCH, options={"body": "unet", "encoder_depth": 5}
    )
    path = save_checkpoint(tmp_path / "p.safetensors", model._base.module.state_dict(), meta)
    loaded = load_panoptic_predictor(path, "cpu")
    loaded.min_pixels = model.min_pixels
    x = np.random.default_rng(2).normal(size=(1, 2, 32, 32)).astype(np.float32)
    valid = np.ones((1, 32, 32), bool)
    for a, b in zip(model.predict_instances(x, valid)[0], loaded.predict_instances(x, valid)[0],
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    wrong = dataclasses.replace(meta, task="instance", arch="unet")
    save_checkpoint(tmp_path / "i.safetensors", model._base.module.state_dict(), wrong)
    with pytest.raises(CheckpointError, match="not a panoptic-deeplab model"):
        load_panoptic_predictor(tmp_path / "i.safetensors", "cpu")


class _PerfectHeads(torch.nn.Module):
    """Emits the exact heads of an oracle scene (band 0 object id, band 1 class id)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for ids, classes in x.numpy().astype(np.int64):
            channel = np.searchsorted(THING_SCHEMA.ids, classes)
            sem = 10.0 * (np.arange(3)[:, None, None] == channel).astype(np.float32)
            centre, offset = panoptic_targets(ids, classes, {2, 5}, sigma_px=4.0)
            logit = np.log(centre + 1e-6) - np.log1p(-np.minimum(centre, 1 - 1e-6))
            out.append(np.concatenate([sem, logit[None], offset]))
        return torch.from_numpy(np.stack(out).astype(np.float32))


def _stitch(model: InstancePredictor, scene: np.ndarray, spec: TileSpec) -> np.ndarray:
    _, h, w = scene.shape
    stage = np.zeros((h, w), np.uint32)
    ids = stitch_instances(
        da.from_array(scene, chunks=(2, 48, 48)), da.ones((h, w), dtype=bool, chunks=48),
        lambda: model, spec, stage, scheduler="sync",
    )  # fmt: skip
    out = np.zeros((2, h, w), np.uint32)
    relabel_blocks(plan_chunks(h, w, spec), lambda key: stage[key], ids, out)
    return out


def test_perfect_heads_stitch_like_the_oracle() -> None:
    """Grouping exact heads gives each window the oracle's masks, so the same scene."""
    scene = object_scene(96, 96, seed=3)
    meta = dataclasses.replace(_predictor().meta, bands=("object", "class"))
    model = PanopticPredictor(_PerfectHeads(), meta, torch.device("cpu"), 0.5, 3, min_pixels=1)
    spec = TileSpec(32, 4, 2)
    ours, truth = _stitch(model, scene, spec), _stitch(OraclePredictor(), scene, spec)
    pairs = np.unique(np.stack([ours[0].ravel(), truth[0].ravel()]), axis=1)
    n = len(np.unique(scene[0])) - 1
    assert pairs.shape[1] == n + 1 and (pairs[0] == 0).sum() == 1 and pairs[0, 0] == 0
    assert len(np.unique(ours[0])) == len(np.unique(truth[0])) == n + 1  # a bijection
    np.testing.assert_array_equal(ours[1], truth[1])
    stuff = np.asarray(THING_SCHEMA.ids, np.uint8)[
        model.predict(scene[None], np.ones((1, 96, 96), bool))[0].argmax(0)
    ]
    pan = panoptic_block(ours, stuff, THING_SCHEMA)
    thing = np.isin(pan[0], [2, 5])
    assert (pan[1][thing] > 0).all() and (pan[1][~thing] == 0).all()
    assert set(np.unique(pan[0])) == {0, 2, 5}  # no void: every thing pixel was found
