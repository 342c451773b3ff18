"""Panoptic prediction runs each window through the model once: the stuff classes come
from the forward passes that find the instances, and equal a separate semantic pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from geoseg.io.raster import open_scene
from geoseg.models.hf_masks import HFMaskPredictor
from geoseg.models.instance import BottomUpInstancePredictor, build_instance_model
from geoseg.models.maskrcnn import MaskRCNNPredictor, build_maskrcnn
from geoseg.models.panoptic import PanopticPredictor, build_panoptic_model
from geoseg.models.runtime import TorchModel
from geoseg.pipelines.instances import InstanceOptions, segment_instances
from geoseg.stitching import SemanticInstancePredictor, panoptic_block
from geoseg.tiling.infer import predict_blocks
from geoseg.types import NODATA_LABEL, ModelMeta, Normalization, TileSpec
from tests.conftest import textured_scene, write_raster
from tests.models.mask_query_helpers import PerfectQueries
from tests.stitching.oracle import THING_SCHEMA, object_scene


def _meta(task: str, arch: str, window: int, **options: Any) -> ModelMeta:
    return ModelMeta(
        task=task, arch=arch, encoder="resnet18", bands=("a", "b"),
        normalization=Normalization((0.0, 0.0), (1.0, 1.0), scale=1e-3), schema=THING_SCHEMA,
        window=window, margin=window // 8, options=options,
    )  # fmt: skip


def _panoptic() -> TorchModel:
    module = build_panoptic_model("unet", "resnet18", 2, len(THING_SCHEMA))
    return PanopticPredictor(module, _meta("panoptic", "unet", 32), torch.device("cpu"), 0.0,
                             min_pixels=1)  # fmt: skip


def _bottom_up() -> TorchModel:
    module = build_instance_model("unet", "resnet18", 2, len(THING_SCHEMA))
    return BottomUpInstancePredictor(module, _meta("instance", "unet", 32), torch.device("cpu"))


def _maskrcnn() -> TorchModel:
    module = build_maskrcnn(2, 2, "resnet18", window=64, fpn_channels=32, representation_size=64)
    meta = _meta("instance", "maskrcnn", 64)
    return MaskRCNNPredictor(module, meta, torch.device("cpu"), score_threshold=0.0)


def _hf() -> TorchModel:
    meta = dataclasses.replace(_meta("panoptic", "hf-mask2former", 32, min_pixels=1), encoder=None,
                               normalization=Normalization((0.0, 0.0), (1.0, 1.0)))  # fmt: skip
    return HFMaskPredictor(PerfectQueries(), meta, torch.device("cpu"))


#: name -> (predictor, window, margin); every in-tree model with a semantic side
MODELS: dict[str, tuple[Callable[[], TorchModel], int, int]] = {
    "panoptic-deeplab": (_panoptic, 32, 4),
    "bottom-up": (_bottom_up, 32, 4),
    "maskrcnn": (_maskrcnn, 64, 8),
    "mask2former": (_hf, 32, 4),
}


def _scene(tmp_path: Path, name: str) -> Path:
    """A 2-band scene of 72 x 96 px whose left 6 columns and a corner (rows 40+, columns 48+)
    are nodata."""
    h, w = 72, 96
    if name == "mask2former":  # PerfectQueries reads object ids and classes
        data, nodata = object_scene(h, w, seed=3, big=False).astype(np.uint16), 65535
    else:
        data, nodata = textured_scene(h, w, bands=2, seed=5), 0
    data[:, :, :6] = nodata
    data[:, 40:, 48:] = nodata
    return write_raster(tmp_path / "scene.tif", data, nodata=nodata)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _run(scene: Path, model: TorchModel, out: Path, **kw: Any) -> tuple[np.ndarray, np.ndarray]:
    opts = InstanceOptions(panoptic=out.with_suffix(".pan.tif"), scheduler="sync", **kw)
    result = segment_instances(scene, lambda: model, out, opts)
    assert result.panoptic is not None
    return _read(result.output), _read(result.panoptic)


@pytest.fixture(autouse=True)
def _seeded() -> Iterator[None]:
    """Fixed weights, and one torch thread (the tests measure calls, not speed)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(MODELS))
def test_panoptic_runs_each_window_once(tmp_path: Path, name: str) -> None:
    make, window, margin = MODELS[name]
    model = make()
    assert isinstance(model, SemanticInstancePredictor)
    scene = _scene(tmp_path, name)
    windows: list[int] = []
    hook = model._base.module.register_forward_hook(lambda _m, x, _y: windows.append(len(x[0])))
    try:
        _run(scene, model, tmp_path / "inst.tif", window=window, margin=margin, chunk=2 * 24)
    finally:
        hook.remove()
    with rasterio.open(scene) as src:
        valid = src.read_masks(1) > 0
    s = window - 2 * margin
    (h, w), rows, cols = valid.shape, -(-valid.shape[0] // s), -(-valid.shape[1] // s)
    valid = np.pad(valid, ((0, rows * s - h), (0, cols * s - w)), mode="reflect")  # as tiled
    with_data = sum(
        valid[i * s : i * s + s, j * s : j * s + s].any() for i in range(rows) for j in range(cols)
    )
    assert with_data < rows * cols  # the nodata corner's windows are not run at all
    assert sum(windows) == with_data  # each window once, for the instances and the stuff


@pytest.mark.parametrize("name", list(MODELS))
def test_stuff_equals_a_semantic_pass_and_does_not_depend_on_chunks(
    tmp_path: Path, name: str
) -> None:
    make, window, margin = MODELS[name]
    model = make()
    scene = _scene(tmp_path, name)
    kw = {"window": window, "margin": margin, "batch_size": 1}
    inst, pan = _run(scene, model, tmp_path / "tiled.tif", chunk=window - 2 * margin, **kw)
    # what the panoptic raster's stuff was before: predict_blocks' labels, fused per pixel
    tile = TileSpec(window, margin, 1, "trim", 1)
    data = open_scene(str(scene), None, tile.chunk)
    semantic = predict_blocks(data.data.data, data.valid, lambda: model, tile, THING_SCHEMA.ids)
    labels = np.asarray(semantic[0].compute(scheduler="sync"))
    assert (labels == NODATA_LABEL).sum() == (~np.asarray(data.valid)).sum()
    assert len(np.unique(labels)) > 2  # stuff and things: the test sees the labels
    expected = panoptic_block(inst[::-1], labels, THING_SCHEMA)
    np.testing.assert_array_equal(pan, expected)
    whole = _run(scene, model, tmp_path / "whole.tif", chunk=1024, **kw)
    np.testing.assert_array_equal(whole[0], inst)
    np.testing.assert_array_equal(whole[1], pan)
