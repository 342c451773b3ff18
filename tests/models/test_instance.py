"""The bottom-up instance model: grouping by hand, and the predictor contract.

(Belongs in tests/models/test_instance.py; kept here while that folder is not ours.)
"""

from __future__ import annotations

from collections.abc import Iterator

import dask.array as da
import numpy as np
import pytest
import torch

from geoseg.models.instance import (
    BottomUpInstancePredictor,
    build_instance_model,
    group_instances,
)
from geoseg.stitching import InstancePredictor, stitch_instances
from geoseg.types import ModelMeta, Normalization, TileSpec
from tests.stitching.oracle import THING_SCHEMA


def _probs(best: np.ndarray) -> np.ndarray:
    """One-hot-ish probabilities (0.9 for the class index in ``best``)."""
    p = np.full((3, *best.shape), 0.05, np.float32)
    np.put_along_axis(p, best[None], 0.9, axis=0)
    return p


def test_boundary_splits_touching_objects_and_grows_back() -> None:
    best = np.zeros((10, 12), np.int64)
    best[2:8, 1:11] = 1  # one "building" region ...
    boundary = np.zeros((10, 12), np.float32)
    boundary[:, 6] = 0.9  # ... cut in two by a boundary line
    best[0, 0] = 2  # a one-pixel "tree": below min_pixels
    masks, classes, scores = group_instances(
        _probs(best), boundary, np.ones((10, 12), bool), THING_SCHEMA
    )
    assert masks.shape == (2, 10, 12) and masks.dtype == bool
    assert classes.tolist() == [2, 2]
    np.testing.assert_allclose(scores, 0.9, rtol=1e-5)
    assert (masks.sum(0)[best == 1] >= 1).all()  # boundary pixels went back to objects
    assert not masks[:, best == 0].any()  # stuff class 0 has no instances


def test_nodata_is_no_instance() -> None:
    best = np.ones((8, 8), np.int64)
    valid = np.ones((8, 8), bool)
    valid[:, :4] = False
    masks, _, _ = group_instances(_probs(best), np.zeros((8, 8), np.float32), valid, THING_SCHEMA)
    assert len(masks) == 1 and not masks[0][~valid].any()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """The shared 2-core test machine is oversubscribed with torch's default threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_torch_thread")
def test_random_model_runs_through_the_stitcher() -> None:
    torch.manual_seed(0)
    meta = ModelMeta(
        task="instance", arch="unet", encoder="resnet18", bands=("a", "b"),
        normalization=Normalization((0.0, 0.0), (1.0, 1.0)), schema=THING_SCHEMA,
        window=32, margin=4,
    )  # fmt: skip
    model = BottomUpInstancePredictor(
        build_instance_model("unet", "resnet18", 2, len(THING_SCHEMA)), meta, torch.device("cpu")
    )
    assert isinstance(model, InstancePredictor)
    x = np.random.default_rng(0).normal(size=(2, 45, 40)).astype(np.float32)
    stage = np.zeros(x.shape[1:], np.uint32)
    ids = stitch_instances(
        da.from_array(x), da.ones(x.shape[1:], dtype=bool), lambda: model,
        TileSpec(32, 4, 2), stage, scheduler="sync",
    )  # fmt: skip
    assert stage.max() <= max(len(lut) - 1 for lut in ids.luts.values())
    assert set(np.unique(ids.classes[1:])) <= {2, 5}
