"""Hostile cases of ``geoseg calibrate`` and of ``train``'s temperature fit: NaN/inf
scores, a locked or interrupted output, models that cannot be calibrated, scenes
without a CRS, and ``train --folds`` ensembles fitted on validation rasters."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.io.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from geoseg.io.lock import OutputLock, lock_path
from geoseg.io.training_data import LabelledRaster
from geoseg.models.cache import load_predictor, model_spec
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.pipelines import calibrate as calibrate_pipeline
from geoseg.pipelines.calibrate import calibrate_model
from geoseg.synthetic import TRUTH_SCHEMA, write_sample_data
from geoseg.tiling import log_probabilities
from geoseg.training.calibration import calibrate_checkpoint
from tests.conftest import TINY_BANDS, TINY_SCHEMA, textured_scene, write_raster

SMALL_NET = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}


def _run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    data = textured_scene(100, 120, seed=3)
    data[:, :10, :12] = 0  # a nodata corner: 120 px that are not labelled pixels with data
    return write_raster(tmp_path / "scene.tif", data, nodata=0, descriptions=TINY_BANDS)


def _noisy_labels(model: Path, scene: Path, out: Path, crs: str | None = "EPSG:32633") -> Path:
    """The model's own map with 30 % of its pixels given a random class."""
    predict_scene(scene, str(model), out.with_name("own.tif"), PredictOptions(device="cpu"))
    labels = _read(out.with_name("own.tif"))
    rng = np.random.default_rng(0)
    swap = (rng.random(labels.shape) < 0.3) & (labels != 255)
    labels[swap] = rng.choice(np.asarray(TINY_SCHEMA.ids, np.uint8), swap.sum())
    return write_raster(out, labels, nodata=255, crs=crs)


# --- 1. NaN/inf at some labelled pixels: a warning with the share, or a refusal ---

#: (share of the labelled pixels with data given NaN, what happens, words said)
NON_FINITE = [
    (0.0005, "silent", []),
    (0.01, "warns", ["gave NaN or inf at {counts}", "left out of the temperature fit"]),
    (0.7, "refuses", ["tiny.safetensors: gave NaN or inf at {counts}", "--precision fp32"]),
]


@pytest.mark.parametrize(("share", "outcome", "words"), NON_FINITE, ids=lambda v: str(v))
def test_nan_scores_at_some_labelled_pixels_warn_or_refuse(
    share: float, outcome: str, words: list[str], tiny_checkpoint: Path, scene: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    labels = _noisy_labels(tiny_checkpoint, scene, tmp_path / "labels.tif")
    band = _read(scene)[0].astype(np.float32)
    cut = np.quantile(band[band > 0], 1 - share)  # NaN at the brightest `share` of band 1
    own = log_probabilities._scorer

    def overflowing(predictor: Any) -> Any:
        score = own(predictor)

        def nan_where_bright(x: np.ndarray, v: np.ndarray) -> np.ndarray:
            out = score(x, v).copy()
            out[np.broadcast_to((x[:, :1] > cut), out.shape)] = np.nan
            return out

        return nan_where_bright

    monkeypatch.setattr(log_probabilities, "_scorer", overflowing)
    out = tmp_path / "cal.safetensors"
    with caplog.at_level(logging.WARNING):
        code, text = _run("calibrate", "-m", tiny_checkpoint, "--image", scene, "--labels",
                          labels, "-o", out, "--device", "cpu", "--chunk", 48)  # fmt: skip
    said = text + caplog.text
    dropped = int((band > cut).sum())  # the nodata corner is 0, never above the cut
    with_data = 100 * 120 - 120
    counts = f"{dropped:,} of {with_data:,} labelled px ({dropped / with_data:.2%})"
    if outcome == "refuses":
        assert code == 2 and not out.exists(), text
        assert text.startswith("geoseg: error: ") and text.count("\n") == 1, text
    else:
        assert code == 0, text
        pixels = read_checkpoint_meta(out).metrics["calibration"]["pixels"]
        assert pixels == with_data - dropped
    assert ("NaN or inf" in said) == (outcome != "silent"), said
    for word in words:
        assert word.format(counts=counts) in said, said


# --- 2. the output: locked against a second run, nothing left by a failure or Ctrl-C ---


@pytest.mark.parametrize("case", ["another run holds the lock", "ctrl-c in the fit", "fit fails"])
def test_a_locked_or_interrupted_calibrate_writes_nothing(
    case: str, tiny_checkpoint: Path, scene: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    labels = _noisy_labels(tiny_checkpoint, scene, tmp_path / "labels.tif")
    out = tmp_path / "cal.safetensors"
    before = sorted(p.name for p in tmp_path.iterdir())
    held = OutputLock.take(out) if case == "another run holds the lock" else None
    if case != "another run holds the lock":
        error = KeyboardInterrupt if case == "ctrl-c in the fit" else MemoryError

        def broken(*args: Any, **kw: Any) -> Any:
            raise error

        monkeypatch.setattr(calibrate_pipeline, "fit_calibration", broken)
    try:
        with pytest.raises(BaseException) as caught:
            calibrate_model(str(tiny_checkpoint), scene, labels, out, PredictOptions(device="cpu"))
    finally:
        if held is not None:
            held.release()
    assert not out.exists() and not lock_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if held is not None:
        assert "another geoseg run is writing it" in str(caught.value)


def test_the_cli_refuses_a_locked_output_in_one_line(
    tiny_checkpoint: Path, scene: Path, tmp_path: Path
) -> None:
    labels = _noisy_labels(tiny_checkpoint, scene, tmp_path / "labels.tif")
    out = tmp_path / "cal.safetensors"
    held = OutputLock.take(out)
    try:
        code, text = _run("calibrate", "-m", tiny_checkpoint, "--image", scene, "--labels",
                          labels, "-o", out, "--device", "cpu")  # fmt: skip
    finally:
        held.release()
    assert code == 2 and text.count("\n") == 1 and "another geoseg run" in text, text
    assert not out.exists()


# --- 3. which models can be calibrated ---


def test_a_model_without_a_temperature_is_told_which_kinds_can_be(
    tiny_checkpoint: Path, scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = _noisy_labels(tiny_checkpoint, scene, tmp_path / "labels.tif")
    monkeypatch.setattr(calibrate_pipeline, "load_predictor", lambda spec: object())
    code, text = _run("calibrate", "-m", tiny_checkpoint, "--image", scene, "--labels", labels,
                      "-o", tmp_path / "cal.safetensors", "--device", "cpu")  # fmt: skip
    assert code == 2 and text.count("\n") == 1, text
    for word in ["tiny.safetensors: a semantic unet checkpoint of the smp family",
                 "cannot be calibrated", "smp, fcn, early-fusion-change, siamese-change",
                 "ensembles", "ONNX"]:  # fmt: skip
        assert word in text, text


def test_a_semantic_mask2former_import_is_calibrated_on_its_log_scores(tmp_path: Path) -> None:
    from tests.models.hf_folders import MASK2FORMER, model_folder

    folder, _ = model_folder(tmp_path / "m2f", MASK2FORMER, ["a", "b", "c"])
    model = tmp_path / "m2f.safetensors"
    code, text = _run("import", folder, "-o", model, "--bands", "B04,B03,B02")
    assert code == 0, text
    image = write_raster(tmp_path / "s.tif", textured_scene(64, 64, bands=3, seed=2), nodata=0)
    predict_scene(image, str(model), tmp_path / "own.tif", PredictOptions(device="cpu"))
    own = _read(tmp_path / "own.tif")
    rng = np.random.default_rng(1)
    swap = rng.random(own.shape) < 0.2
    own[swap] = rng.integers(0, 3, swap.sum())
    labels = write_raster(tmp_path / "l.tif", own, nodata=255)
    result = calibrate_model(str(model), image, labels, tmp_path / "cal.safetensors",
                             PredictOptions(device="cpu"))  # fmt: skip
    batch = textured_scene(64, 64, bands=3, seed=5)[None].astype(np.float32)
    valid = np.ones((1, 64, 64), bool)
    p, p_t = (load_predictor(model_spec(str(m), "cpu")).predict(batch, valid)
              for m in (model, result.output))  # fmt: skip
    np.testing.assert_allclose(p_t, _softmax(np.log(p) / result.temperature), atol=1e-5)


# --- 5. --assume-crs, as the other commands that read scenes ---


@pytest.mark.parametrize("command", ["calibrate", "evaluate"])
def test_a_scene_without_a_crs_is_read_with_assume_crs(
    command: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = textured_scene(100, 120, seed=3)
    scene = write_raster(tmp_path / "nocrs.tif", data, nodata=0, descriptions=TINY_BANDS,
                         crs=None)  # fmt: skip
    georef = write_raster(tmp_path / "georef.tif", data, nodata=0, descriptions=TINY_BANDS)
    labels = _noisy_labels(tiny_checkpoint, georef, tmp_path / "labels.tif", crs=None)
    out = tmp_path / ("cal.safetensors" if command == "calibrate" else "ev")
    args = ["-m", tiny_checkpoint, "--image", scene, "--labels", labels, "-o", out,
            "--device", "cpu"]  # fmt: skip
    code, text = _run(command, *args)
    assert code == 2 and "has no CRS" in text and "--assume-crs" in text, text
    code, text = _run(command, *args, "--assume-crs", "EPSG:32633")
    assert code == 0, text
    if command == "calibrate":
        assert read_checkpoint_meta(out).metrics["calibration"]["pixels"] == 100 * 120
    else:
        assert "mIoU" in text and (out / "metrics.json").is_file()


# --- 4. train --folds K with validation rasters: the ensemble's temperature ---


def test_an_ensemble_is_calibrated_on_its_mean_probabilities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``calibrate_checkpoint`` (what ``train`` runs) fits what ``calibrate`` fits: the
    log of the ensemble's mean probabilities, not a softmax of them."""
    import torch

    from geoseg.models.ensemble import ensemble_meta, ensemble_state
    from geoseg.models.registry import build_model
    from tests.models.test_ensemble import META, SMALL_UNET

    states = []
    for seed in range(2):
        torch.manual_seed(seed)
        states.append(build_model("unet", "resnet18", 4, 3, **SMALL_UNET).state_dict())
    path = save_checkpoint(tmp_path / "e.safetensors", ensemble_state(states),
                           ensemble_meta(META, 2, {}))  # fmt: skip
    image = textured_scene(64, 96, seed=4)
    scene = write_raster(tmp_path / "s.tif", image, descriptions=list(META.bands))
    labels = _noisy_labels(path, scene, tmp_path / "labels.tif")
    expected = calibrate_model(str(path), scene, labels, tmp_path / "cal.safetensors",
                               PredictOptions(device="cpu")).fit  # fmt: skip
    val = LabelledRaster(
        path=str(scene), image=image.astype(np.float32), valid=np.ones((64, 96), bool),
        labels=_read(labels)[0].astype(np.int64), band_names=tuple(META.bands),
        dtype=np.dtype("uint16"), gsd_m=10.0,
    )  # fmt: skip
    fit = calibrate_checkpoint(path, [val], "cpu")
    assert fit is not None
    assert fit.temperature == pytest.approx(expected.temperature, rel=1e-4)
    assert read_checkpoint_meta(path).temperature == pytest.approx(fit.temperature)


def test_train_folds_with_validation_rasters_stores_the_ensembles_temperature(
    tmp_path: Path,
) -> None:
    sample = write_sample_data(tmp_path / "sample", height=96, width=128, seed=5)
    classes, config = tmp_path / "classes.yaml", tmp_path / "net.yaml"
    classes.write_text(yaml.safe_dump(TRUTH_SCHEMA.to_json()))
    config.write_text(yaml.safe_dump({"options": SMALL_NET, "encoder": "tu-resnet18"}))
    out = tmp_path / "cv.safetensors"
    code, text = _run(
        "train", "--image", sample["before"], "--labels", sample["truth_before"], "--classes",
        classes, "--config", config, "-o", out, "--epochs", "2", "--steps-per-epoch", "3",
        "--batch-size", "2", "--window", "32", "--margin", "4", "--device", "cpu",
        "--folds", "2", "--val-image", sample["after"], "--val-labels", sample["truth_after"],
    )  # fmt: skip
    assert code == 0, text
    meta = read_checkpoint_meta(out)
    record = meta.metrics["calibration"]
    assert meta.arch == "ensemble" and meta.temperature != 1.0
    assert record["fitted_on"] == "validation rasters"
    assert record["images"] == [str(sample["after"])]
    assert record["temperature"] == round(meta.temperature, 4)
    assert f"temperature {meta.temperature:.3f}" in text
    assert meta.metrics["folds"] == 2  # the cross-validation scores are kept beside it
    # labels unchanged by T; probabilities are softmax(log p / T) of the mean probabilities
    tensors, stored = load_checkpoint(out)
    plain = save_checkpoint(tmp_path / "t1.safetensors", tensors,
                            dataclasses.replace(stored, temperature=1.0))  # fmt: skip
    maps = {}
    for name, model in (("t", out), ("plain", plain)):
        opts = PredictOptions(device="cpu", probabilities=tmp_path / f"{name}_p.tif")
        predict_scene(sample["after"], str(model), tmp_path / f"{name}.tif", opts)
        maps[name] = _read(tmp_path / f"{name}.tif")
    assert maps["t"].tobytes() == maps["plain"].tobytes()
    batch = _read(sample["after"])[None, :, :64, :64].astype(np.float32)
    valid = np.ones((1, 64, 64), bool)
    p, p_t = (load_predictor(model_spec(str(m), "cpu")).predict(batch, valid)
              for m in (plain, out))  # fmt: skip
    np.testing.assert_allclose(p_t, _softmax(np.log(p) / meta.temperature), atol=1e-5)
