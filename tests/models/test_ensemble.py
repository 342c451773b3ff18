"""Ensemble checkpoints (``geoseg train --folds K``): the mean of the members' probabilities."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.io.checkpoint import save_checkpoint
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.ensemble import ensemble_meta, ensemble_state
from geoseg.models.registry import build_model
from geoseg.pipelines.predict import PredictOptions, predict_scene
from geoseg.types import ClassInfo, ClassSchema, ModelMeta, Normalization
from tests.conftest import TINY_BANDS, textured_scene, write_raster

CLASSES = ClassSchema(
    (ClassInfo(1, "forest", (0, 120, 0)), ClassInfo(4, "water", (0, 0, 200)),
     ClassInfo(9, "urban", (200, 0, 0)))
)  # fmt: skip
SMALL_UNET = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
WINDOW, MARGIN = 64, 8
STRIDE = WINDOW - 2 * MARGIN
META = ModelMeta(
    task="semantic", arch="unet", encoder="resnet18", bands=TINY_BANDS,
    normalization=Normalization((0.2,) * 4, (0.1,) * 4, scale=1e-4), schema=CLASSES,
    window=WINDOW, margin=MARGIN, gsd_m=10.0, options=SMALL_UNET,
)  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """Three members with different random weights, each in its own checkpoint, and
    the ensemble checkpoint holding all three."""
    folder = tmp_path_factory.mktemp("ensemble")
    states, paths = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        net = build_model("unet", "resnet18", 4, len(CLASSES), **SMALL_UNET)
        states.append(net.state_dict())
        paths.append(save_checkpoint(folder / f"member{seed}.safetensors", states[-1], META))
    whole = ensemble_meta(META, 3, {"cv_mIoU": 0.5})
    return paths, save_checkpoint(folder / "ensemble.safetensors", ensemble_state(states), whole)


def _map(model: Path, image: Path, out: Path, chunk: int) -> np.ndarray:
    predict_scene(image, str(model), out, PredictOptions(chunk=chunk, device="cpu", batch_size=3))
    with rasterio.open(out) as src:
        return np.asarray(src.read(1))


def test_the_map_is_the_argmax_of_the_members_mean_probabilities(
    models: tuple[list[Path], Path], tmp_path: Path
) -> None:
    members, ensemble = models
    # one stride: the scene is a single window, reflect-padded by the margin
    scene = textured_scene(STRIDE, STRIDE, seed=7)
    image = write_raster(tmp_path / "s.tif", scene, descriptions=TINY_BANDS)
    window = np.pad(scene, ((0, 0), (MARGIN, MARGIN), (MARGIN, MARGIN)), mode="reflect")
    batch, valid = window[None].astype(np.float32), np.ones((1, WINDOW, WINDOW), bool)
    probs = [load_predictor(model_spec(str(m), "cpu")).predict(batch, valid) for m in members]
    mean = (probs[0] + probs[1] + probs[2]) / np.float32(3)
    together = load_predictor(model_spec(str(ensemble), "cpu")).predict(batch, valid)
    assert np.array_equal(together, mean)
    expected = np.asarray(CLASSES.ids)[mean[0].argmax(axis=0)][MARGIN:-MARGIN, MARGIN:-MARGIN]
    got = _map(ensemble, image, tmp_path / "map.tif", STRIDE)
    assert np.array_equal(got, expected)
    # the members disagree somewhere, so the mean is not any one member's answer
    alone = [p[0].argmax(axis=0)[MARGIN:-MARGIN, MARGIN:-MARGIN] for p in probs]
    assert not all(np.array_equal(a, alone[0]) for a in alone[1:])


def test_tiled_equals_one_chunk(models: tuple[list[Path], Path], tmp_path: Path) -> None:
    _, ensemble = models
    image = write_raster(tmp_path / "s.tif", textured_scene(150, 173), descriptions=TINY_BANDS)
    whole = _map(ensemble, image, tmp_path / "one.tif", 4 * STRIDE)  # 192 px: one chunk
    tiled = _map(ensemble, image, tmp_path / "tiled.tif", STRIDE)
    assert np.array_equal(whole, tiled) and set(np.unique(whole)) <= set(CLASSES.ids)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"members": 1, "member_arch": "unet"}, "needs options members"),
        ({"members": 2, "member_arch": "ensemble"}, "needs options members"),
        ({"members": 2, "member_arch": "hf-segformer"}, "must be per-pixel class models"),
        ({"members": 2, "member_arch": "yolact"}, "unknown architecture 'yolact'"),
    ],
)
def test_a_malformed_ensemble_is_refused_in_one_line(
    models: tuple[list[Path], Path], tmp_path: Path, options: dict[str, object], message: str
) -> None:
    bad = dataclasses.replace(META, arch="ensemble", options=options)
    model = save_checkpoint(tmp_path / "bad.safetensors", {}, bad)
    image = write_raster(tmp_path / "s.tif", textured_scene(48, 48), descriptions=TINY_BANDS)
    result = CliRunner().invoke(cli, ["predict", str(image), "-m", str(model), "-o",
                                      str(tmp_path / "o.tif"), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "o.tif").exists()
