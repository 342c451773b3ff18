"""Hostile inputs to ``geoseg calibrate`` found in review: refusals that name the file at
fault, fits the labels cannot pin, and change masks read as ``evaluate`` reads them."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import GeosegError
from geoseg.io.checkpoint import read_checkpoint_meta, save_checkpoint
from geoseg.models.registry import build_model
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.pipelines.calibrate import calibrate_model
from geoseg.pipelines.evaluate import CHANGE_SCHEMA
from geoseg.training.calibration import fit_calibration
from geoseg.types import ModelMeta, Normalization
from tests.conftest import TINY_BANDS, textured_scene, write_raster


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _own_map(model: Path, scene: Path, out: Path) -> np.ndarray:
    """``(1, H, W) uint8`` label map ``model`` predicts for ``scene`` (255 = nodata)."""
    predict_scene(scene, str(model), out, PredictOptions(device="cpu"))
    with rasterio.open(out) as src:
        return src.read()


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    data = textured_scene(100, 120, seed=3)
    data[:, :10, :12] = 0  # a nodata corner
    return write_raster(tmp_path / "scene.tif", data, nodata=0, descriptions=TINY_BANDS)


def _labels(case: str, model: Path, scene: Path, tmp_path: Path) -> Path:
    lab = np.full((1, 100, 120), 255, np.uint8)
    if case == "too few labelled pixels":
        lab[0, 50, 50:53] = 4  # two classes: only the count is at fault
        lab[0, 50, 53:55] = 1
    elif case == "labels are the model's own map":  # always right: T runs to 0.01
        lab = _own_map(model, scene, tmp_path / "own_pred.tif")
    elif case == "labels only where the image is nodata":
        lab[0, :10, :12] = 4
    return write_raster(tmp_path / "labels.tif", lab, nodata=255)


@pytest.mark.parametrize(
    ("case", "blamed", "words"),
    [
        ("too few labelled pixels", "labels", ["at least 10 labelled pixels", "got 5"]),
        ("labels are the model's own map", "labels", ["pin no temperature", "T = 0.01"]),
        ("labels only where the image is nodata", "image", ["nodata under all 120 labelled px"]),
    ],
)
def test_calibrate_refusals_name_the_file_at_fault_and_write_nothing(
    case: str, blamed: str, words: list[str], tiny_checkpoint: Path, scene: Path, tmp_path: Path
) -> None:
    labels = _labels(case, tiny_checkpoint, scene, tmp_path)
    out = tmp_path / "cal.safetensors"
    before = {p.name: _sha(p) for p in tmp_path.iterdir() if p.is_file()}
    result = CliRunner().invoke(cli, ["calibrate", "-m", str(tiny_checkpoint), "--image",
                                      str(scene), "--labels", str(labels), "-o", str(out),
                                      "--device", "cpu"])  # fmt: skip
    text = result.output
    assert result.exit_code == 2, text
    assert text.count("\n") == 1, text
    assert text.startswith(f"geoseg: error: {labels if blamed == 'labels' else scene}: "), text
    for word in words:
        assert word in text, text
    assert {p.name: _sha(p) for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(
    ("corner", "blamed", "words"),
    [
        (True, "image", ["nodata under all 120 px of", "that hold a class"]),
        (False, "labels", ["no pixel has both a reference class and a prediction"]),
    ],
)
def test_evaluate_blames_the_image_when_it_has_no_data_under_the_labels(
    corner: bool, blamed: str, words: list[str], tiny_checkpoint: Path, scene: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    lab = np.full((1, 100, 120), 255, np.uint8)
    if corner:
        lab[0, :10, :12] = 4  # only where the scene is nodata
    labels = write_raster(tmp_path / "labels.tif", lab, nodata=255)
    result = CliRunner().invoke(cli, ["evaluate", "-m", str(tiny_checkpoint), "--image",
                                      str(scene), "--labels", str(labels), "-o",
                                      str(tmp_path / "ev"), "--device", "cpu"])  # fmt: skip
    text = result.output
    assert result.exit_code == 2 and text.count("\n") == 1, text
    assert text.startswith(f"geoseg: error: {labels if blamed == 'labels' else scene}: "), text
    for word in words:
        assert word in text, text
    assert not (tmp_path / "ev").exists() or not any((tmp_path / "ev").iterdir())


@pytest.mark.parametrize(
    ("case", "target"),
    [("always right", np.zeros(50, np.int64)), ("always wrong", np.full(50, 2))],
)
def test_a_fit_at_a_temperature_bound_is_no_calibration(case: str, target: np.ndarray) -> None:
    # geoseg train catches this and leaves the checkpoint at T = 1 with a warning
    scores = np.tile([[2.0, 0.0, -1.0]], (50, 1))
    with pytest.raises(GeosegError, match="pin no temperature"):
        fit_calibration(scores, target)


def test_a_change_mask_of_0_and_255_calibrates_a_change_model_on_both_classes(
    scene: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    module = build_model("unet", "resnet18", len(TINY_BANDS), 2)
    meta = ModelMeta(
        task="change", arch="unet", encoder="resnet18", bands=TINY_BANDS,
        normalization=Normalization((0.2,) * 4, (0.1,) * 4, scale=1e-4), schema=CHANGE_SCHEMA,
        window=64, margin=8, gsd_m=10.0,
    )  # fmt: skip
    model = save_checkpoint(tmp_path / "change.safetensors", module.state_dict(), meta)
    own = _own_map(model, scene, tmp_path / "own.tif")[0]
    rng = np.random.default_rng(0)
    flip = (rng.random(own.shape) < 0.3) & (own != 255)
    change = np.where(own == 255, 0, own ^ flip)  # the corner: labelled, the image has no data
    mask = write_raster(tmp_path / "mask.tif", (change * 255).astype(np.uint8)[None])  # 0/255
    result = calibrate_model(str(model), scene, mask, tmp_path / "cal.safetensors",
                             PredictOptions(device="cpu"))  # fmt: skip
    assert result.fit.pixels == 100 * 120 - 10 * 12  # 255 = change counts, as in evaluate
    record = read_checkpoint_meta(result.output).metrics["calibration"]
    assert record["pixels"] == result.fit.pixels and 0.01 < result.temperature < 100


def test_calibrate_fits_a_change_model_on_the_dates_predict_normalises(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from geoseg.io.checkpoint import load_checkpoint
    from geoseg.io.stack import stack_dates

    tensors, meta = load_checkpoint(tiny_checkpoint)
    pair_bands = ("t1_B02", "t1_B03", "t2_B02", "t2_B03")
    model = save_checkpoint(tmp_path / "change.safetensors", tensors,
                            dataclasses.replace(meta, task="change", bands=pair_bands))  # fmt: skip
    a = textured_scene(96, 96, bands=2, seed=1).astype(float)
    b = (a - 150) / 0.7 + np.random.default_rng(2).normal(0, 3, a.shape)  # darker, flatter
    dates = [write_raster(tmp_path / f"d{i}.tif", d.round().astype(np.uint16),
                          descriptions=("B02", "B03")) for i, d in enumerate((a, b))]  # fmt: skip
    pair = stack_dates(dates, tmp_path / "pair.tif")
    predict_scene(pair, str(model), tmp_path / "own.tif",
                  PredictOptions(device="cpu", normalize_dates="irmad"))  # fmt: skip
    with rasterio.open(tmp_path / "own.tif") as src:
        own = src.read()
    flip = np.random.default_rng(0).random(own.shape) < 0.3
    own[flip] = np.random.default_rng(1).choice(np.array([1, 4, 9], np.uint8), flip.sum())
    labels = write_raster(tmp_path / "labels.tif", own, nodata=255)
    out = tmp_path / "cal.safetensors"
    args = [
        "calibrate",
        "-m",
        str(model),
        "--image",
        str(pair),
        "--labels",
        str(labels),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--normalize-dates",
        "irmad",
        "--precision",
        "fp32",
    ]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    normalised, raw = (
        calibrate_model(str(model), pair, labels, tmp_path / f"{n}.safetensors",
                        PredictOptions(device="cpu", normalize_dates=how)).temperature
        for n, how in (("n", "irmad"), ("r", None))
    )  # fmt: skip
    assert read_checkpoint_meta(out).temperature == pytest.approx(normalised, rel=1e-9)
    assert abs(normalised - raw) > 1e-3  # the radiometry moves the fit


def test_labels_on_another_grid_are_read_over_the_image_only(tmp_path: Path) -> None:
    """A label raster far larger than the scene (a national product) is not read whole:
    same values as reprojecting all of it, a small fraction of its memory."""
    import tracemalloc

    from affine import Affine
    from rasterio.warp import Resampling, reproject

    from geoseg.io.training_data import LABEL_NODATA, read_labels_on_grid

    image = write_raster(tmp_path / "img.tif", textured_scene(100, 120), nodata=0)
    big = np.random.default_rng(0).integers(0, 10, (1, 3000, 3000), dtype=np.uint8)
    big[0, :, :50] = 255  # some nodata too
    wgs = Affine(1e-4, 0, 14.85, 0, -1e-4, 46.2)  # ~10 m px around the scene (15 E, 46.05 N)
    labels = write_raster(tmp_path / "big.tif", big, crs="EPSG:4326", transform=wgs, nodata=255,
                          compress="deflate")  # fmt: skip
    expected = np.full((100, 120), LABEL_NODATA, np.float64)
    reproject(big[0].astype(np.float64), expected, src_transform=wgs, src_crs="EPSG:4326",
              dst_transform=Affine(10, 0, 500000, 0, -10, 5100000), dst_crs="EPSG:32633",
              resampling=Resampling.nearest, src_nodata=255, dst_nodata=LABEL_NODATA)  # fmt: skip
    tracemalloc.start()
    try:
        got = read_labels_on_grid(str(labels), str(image))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, expected.astype(np.int64))
    assert (got != LABEL_NODATA).all()
    assert peak < 8e6, peak  # the whole raster as int64 alone is 72 MB
