"""One connected region per instance: SOLOv2 (the predicting grid cell), CondInst
(the location of the dynamic head), Panoptic-DeepLab (its centre), Mask2Former
(each component an object), and the scene-wide chaining of scattered masks across
window seams that it prevents."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geoseg.models.components import largest_components, nearest_components
from geoseg.models.condinst_post import CondInstThresholds, dynamic_param_count
from geoseg.models.condinst_post import window_objects as condinst_objects
from geoseg.models.hf_masks import HFMaskPredictor
from geoseg.models.panoptic import group_panoptic
from geoseg.models.solov2 import SOLOv2Predictor
from geoseg.models.solov2_post import SOLOv2Thresholds
from geoseg.models.solov2_post import window_objects as solov2_objects
from geoseg.stitching import InstancePredictor
from geoseg.types import ModelMeta, Normalization, TileSpec
from tests.models.mask_query_helpers import stitched
from tests.stitching.oracle import THING_SCHEMA


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def _two_blobs(h: int, w: int) -> np.ndarray:
    """``(h, w) bool``: a small blob at the top left, a larger one at the bottom right."""
    out = np.zeros((h, w), bool)
    out[: h // 4, : w // 4] = True
    out[h // 2 :, w // 2 :] = True
    return out


def test_components_by_hand() -> None:
    masks = np.zeros((3, 6, 6), bool)
    masks[0, 0, 0:2] = masks[0, 3:6, 3:6] = True  # 2 px and 9 px
    masks[1, 0, 0] = masks[1, 1, 1] = True  # diagonal: two components (4-connectivity)
    assert largest_components(masks).sum(axis=(1, 2)).tolist() == [9, 1, 0]
    assert largest_components(masks)[1, 0, 0]  # a tie goes to the first in row-major order
    near = nearest_components(masks, np.array([[0.5, 0.5], [1.9, 1.9], [3.0, 3.0]]))
    assert near[0].sum() == 2 and near[0, 0, :2].all()  # the point lies in the small one
    assert near[1].sum() == 1 and near[1, 1, 1]  # nearest pixel centre (1.5, 1.5)
    assert not near[2].any()
    # outside every component: the one holding the nearest pixel
    far = nearest_components(masks[:1], np.array([[2.0, 5.0]]))
    assert far[0].sum() == 9
    assert nearest_components(masks[:0], np.zeros((0, 2))).shape == (0, 6, 6)


def test_solov2_keeps_the_component_of_its_grid_cell() -> None:
    """Two cells with the same two-blob mask: each keeps the blob around its own cell
    (the old code kept both blobs and decayed the duplicate)."""
    cates = torch.full((1, 4, 4), -10.0)
    cates[0, 0, 0], cates[0, 3, 3] = logit(0.9), logit(0.8)
    kernels = torch.ones(1, 4, 4)
    blobs = torch.from_numpy(_two_blobs(8, 8))
    features = torch.where(blobs, 4.0, -20.0)[None]
    masks, classes, scores = solov2_objects([cates], [kernels], features, SOLOv2Thresholds())
    s4 = 1 / (1 + math.exp(-4))  # maskness: the mean probability inside the mask
    np.testing.assert_allclose(scores.numpy(), [0.9 * s4, 0.8 * s4], rtol=1e-5)
    assert classes.tolist() == [0, 0]
    small, large = masks.numpy() > 0.5
    assert small.sum() == 4 and small[:2, :2].all()  # cell (0, 0): centre (1, 1) px
    assert large.sum() == 16 and large[4:, 4:].all()  # cell (3, 3): centre (7, 7) px
    assert (masks[0][4:, 4:] == 0).all()  # the other blob's probabilities are gone


def test_condinst_keeps_the_component_of_its_location() -> None:
    cls = torch.full((1, 2, 2), -10.0)
    cls[0, 0, 0], cls[0, 1, 1] = logit(0.9), logit(0.6)
    ctr = torch.full((1, 2, 2), logit(0.5))
    params = torch.zeros(dynamic_param_count(3, 2), 2, 2)
    # every head: logit = 4 x relu(feature) - 2 (as test_condinst), ignoring where it is
    params[2, ...], params[6, ...], params[10, ...], params[16, ...] = 1.0, 1.0, 4.0, -2.0
    features = torch.from_numpy(_two_blobs(4, 4)).float()[None]  # stride 8 -> 32 px
    masks, classes, scores = condinst_objects(
        ([cls], [ctr], [params], features), [16], 8, 2, (32, 32), CondInstThresholds()
    )
    np.testing.assert_allclose(scores.numpy(), [math.sqrt(0.45), math.sqrt(0.3)], rtol=1e-5)
    assert classes.tolist() == [0, 0]
    whole = F.interpolate(features[None], size=(32, 32), mode="bilinear")[0, 0] > 0.5
    first, second = masks.numpy() > 0.5
    assert not (first & second).any() and ((first | second) == whole.numpy()).all()
    assert first[:6, :6].all() and not first[16:].any()  # location (8, 8) px
    assert second[20:, 20:].all() and not second[:16].any()  # location (24, 24) px


def _queries_meta(task: str, window: int) -> ModelMeta:
    return ModelMeta(
        task=task, arch="hf-mask2former", encoder=None, bands=("texture", "copy"),
        normalization=Normalization((0.0, 0.0), (1.0, 1.0)), schema=THING_SCHEMA,
        window=window, margin=window // 4, options={"min_pixels": 1},
    )  # fmt: skip


class TextureQueries(torch.nn.Module):
    """A weak mask-query model: one building query whose mask is every bright pixel
    of the window (band 0 > 0.5), one ground query (stuff) for the rest."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bright = x[:, 0] > 0.5
        probs = torch.tensor([[0.01, 0.97, 0.01, 0.01], [0.97, 0.01, 0.01, 0.01]])
        masks = torch.stack([torch.where(bright, 8.0, -8.0), torch.where(bright, -8.0, 8.0)], 1)
        return probs.expand(len(x), 2, 4), masks


@pytest.mark.parametrize("task", ["instance", "panoptic"])
def test_mask2former_components_are_objects_of_their_own(task: str) -> None:
    """No location tells a query's components apart: each is an object, with the
    query's class and score (the larger blob first: the order of their first pixel)."""
    model = HFMaskPredictor(TextureQueries(), _queries_meta(task, 16), torch.device("cpu"))
    x = np.stack([_two_blobs(16, 16)] * 2).astype(np.float32)[None]
    valid = np.ones((1, 16, 16), bool)
    ((masks, classes, scores),) = model.predict_instances(x, valid)
    assert classes.tolist() == [2, 2] and masks.shape == (2, 16, 16)
    assert masks.sum(axis=(1, 2)).tolist() == [16, 64]
    assert masks[0, :4, :4].all() and masks[1, 8:, 8:].all()
    # the score is the query's, unchanged: transformers' instance or panoptic rule
    expected = 0.97 / (1 + math.exp(-8)) if task == "instance" else 0.97
    np.testing.assert_allclose(scores, [expected, expected], rtol=1e-6)
    valid[0, 12] = False  # nodata cuts the larger blob in two
    ((masks, _, _),) = model.predict_instances(x, valid)
    assert masks.sum(axis=(1, 2)).tolist() == [16, 32, 24] and masks[1, 8:12, 8:].all()


class TextureSOLOv2(torch.nn.Module):
    """A weak SOLOv2: one object from the centre cell of a 3 x 3 grid whose mask is
    every bright pixel of the window (band 0 > 0.5, at 1/4 resolution)."""

    def forward(
        self, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        n = len(x)
        cates = torch.full((n, 1, 3, 3), -10.0)
        cates[:, 0, 1, 1] = 4.0
        features = 16 * (F.avg_pool2d(x[:, :1], 4) - 0.5)
        return [cates], [torch.ones(n, 1, 3, 3)], features


def _texture_scene(size: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """``(1, size, size)`` squares of 8 or 12 px on a 16 px lattice (4-px aligned, apart:
    exact at SOLOv2's 1/4 resolution); and the largest square's area, px."""
    rng = np.random.default_rng(seed)
    scene = np.zeros((1, size, size), np.float32)
    largest = 0
    for top in range(0, size, 16):
        for left in range(0, size, 16):
            side = 8 if rng.random() < 0.7 else 12
            scene[0, top : top + side, left : left + side] = 1.0
            largest = max(largest, side * side)
    return scene, largest


@pytest.mark.parametrize("family", ["solov2", "mask2former"])
def test_scattered_masks_no_longer_chain_across_the_scene(family: str) -> None:
    """Every window of a weak model reports one object made of all its bright squares;
    neighbouring windows agree where they overlap, so the seam merge joined them into
    one object the size of the scene. One component per instance: no object larger
    than a square."""
    scene, largest = _texture_scene(192)
    model: InstancePredictor
    if family == "solov2":
        meta = ModelMeta(
            task="instance", arch="solov2", encoder="resnet18", bands=("texture", "copy"),
            normalization=Normalization((0.0, 0.0), (1.0, 1.0)), schema=THING_SCHEMA,
            window=64, margin=16, options={},
        )  # fmt: skip
        model = SOLOv2Predictor(TextureSOLOv2(), meta, torch.device("cpu"))
    else:
        model = HFMaskPredictor(
            TextureQueries(), _queries_meta("instance", 64), torch.device("cpu")
        )
    ids = stitched(model, np.concatenate([scene, scene]), TileSpec(64, 16, 2))[0]
    areas = np.bincount(ids.ravel())[1:]
    areas = areas[areas > 0]
    assert len(areas) > 1 and areas.max() <= largest == 144
    assert (scene[0][ids > 0] == 1).all()  # objects are bright squares only


def test_panoptic_deeplab_keeps_the_component_at_its_centre() -> None:
    """One centre, thing pixels in two blobs: both join it (nearest centre), but only
    the blob at the centre stays an instance; the far, larger one gets none."""
    best = _two_blobs(12, 12).astype(np.int64)  # channel 1: building
    probs = np.stack([best == 0, best == 1, np.zeros_like(best, bool)]).astype(np.float32)
    heat = np.zeros((12, 12), np.float32)
    heat[1, 1] = 0.9
    got = group_panoptic(probs, heat, np.zeros((2, 12, 12), np.float32), (1, 2), 0.1, 3)
    expected = np.zeros((12, 12), np.int32)
    expected[:3, :3] = 1
    np.testing.assert_array_equal(got.instances, expected)
    assert got.classes.tolist() == [1] and got.scores.tolist() == pytest.approx([0.9])


def test_a_mask_query_object_beside_its_mirror_image_is_kept() -> None:
    """A query whose mask also covers the mirror image of its object in the window's
    reflect-padded border (a ghost as large as the object, met first): keeping "the
    largest" component would keep the ghost, whose owner is no window, and lose the
    object; each component an object keeps it."""
    scene = np.zeros((2, 32, 32), np.float32)
    scene[:, 1:9, 12:20] = 1.0  # 8 x 8, its mirror 8 x 8 at rows -8..-1
    model = HFMaskPredictor(TextureQueries(), _queries_meta("instance", 64), torch.device("cpu"))
    ids = stitched(model, scene, TileSpec(64, 16, 1))[0]
    np.testing.assert_array_equal(ids > 0, scene[0] > 0)
    assert len(np.unique(ids[ids > 0])) == 1
