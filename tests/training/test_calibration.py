"""Temperature scaling (Guo et al. 2017): the fit, the ECE, and the fit at the end of training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import GeosegError
from geoseg.io.checkpoint import load_checkpoint, read_checkpoint_meta
from geoseg.training import load_train_config, train_model
from geoseg.training.calibration import (
    T_RANGE,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    negative_log_likelihood,
)
from tests.conftest import TINY_BANDS, TINY_SCHEMA, textured_scene, write_raster


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _draw(t_true: float, n: int = 20_000, k: int = 5, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Logits ``z`` and labels drawn from ``softmax(z / t_true)``: ``t_true`` calibrates them."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=4.0, size=(n, k))
    p = _softmax(z / t_true)
    target = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return z, np.minimum(target, k - 1)


@pytest.mark.parametrize("t_true", [0.5, 1.0, 2.0, 3.5])
def test_the_fit_recovers_a_known_temperature(t_true: float) -> None:
    z, target = _draw(t_true)
    t = fit_temperature(z, target)
    assert abs(t - t_true) < 0.05 * t_true, (t, t_true)
    # it is the NLL minimum: 2 % either side is worse
    nll = negative_log_likelihood(z, target, t)
    assert nll < negative_log_likelihood(z, target, 1.02 * t)
    assert nll < negative_log_likelihood(z, target, t / 1.02)


def test_log_probabilities_fit_the_same_temperature_as_logits() -> None:
    """log p = z - logsumexp(z): a constant per pixel, which the softmax ignores."""
    z, target = _draw(2.0, n=5000)
    logp = np.log(_softmax(z))
    assert fit_temperature(logp, target) == pytest.approx(fit_temperature(z, target), rel=1e-9)


def test_an_overconfident_model_is_softened_and_its_ece_falls() -> None:
    z, target = _draw(3.0)  # the logits are 3x too sharp for their labels
    fit = fit_calibration(z, target)
    assert fit.temperature == pytest.approx(3.0, rel=0.05)
    assert fit.ece_before > 0.1 and fit.ece_after < 0.02, fit
    assert fit.nll_after < fit.nll_before and fit.pixels == 20_000


def test_ece_of_a_hand_computed_example() -> None:
    # confidences 0.9 (right) and 0.6 (wrong) land in separate bins of 15:
    # (|1 - 0.9| + |0 - 0.6|) / 2 = 0.35; one 0.75-confident right pixel alone: 0.25
    prob = np.array([[0.9, 0.1], [0.6, 0.4]])
    assert expected_calibration_error(prob, np.array([0, 1])) == pytest.approx(0.35)
    assert expected_calibration_error(np.array([[0.75, 0.25]]), np.array([0])) == 0.25
    # two pixels in one bin average before the gap: conf 0.81 and 0.85, one right -> |0.5 - 0.83|
    both = np.array([[0.81, 0.19], [0.85, 0.15]])
    assert expected_calibration_error(both, np.array([0, 1])) == pytest.approx(0.33)


def test_a_model_that_is_always_right_ends_at_the_lowest_temperature() -> None:
    z = np.array([[2.0, 0.0, -1.0]] * 20)
    assert fit_temperature(z, np.zeros(20, np.int64)) == T_RANGE[0]
    assert fit_temperature(z, np.full(20, 2)) == T_RANGE[1]  # always wrong: flatten


def test_too_few_pixels_are_refused() -> None:
    with pytest.raises(GeosegError, match="at least 10 labelled pixels"):
        fit_temperature(np.zeros((3, 2)), np.zeros(3, np.int64))


def _training_pair(tmp_path: Path, name: str, seed: int) -> tuple[Path, Path]:
    data = textured_scene(96, 96, seed=seed)
    image = write_raster(tmp_path / f"{name}.tif", data, descriptions=TINY_BANDS)
    ids = np.asarray(TINY_SCHEMA.ids, np.uint8)
    labels = ids[np.digitize(data[3], np.quantile(data[3], [1 / 3, 2 / 3]))][None]
    return image, write_raster(tmp_path / f"{name}_labels.tif", labels, nodata=255)


def _train(tmp_path: Path, validated: bool) -> tuple[Path, object]:
    image, labels = _training_pair(tmp_path, "train", 0)
    val = _training_pair(tmp_path, "val", 1) if validated else None
    out = tmp_path / f"m{int(validated)}.safetensors"
    cfg = load_train_config(
        None, images=[str(image)], labels=[str(labels)], classes=TINY_SCHEMA.to_json(),
        val_images=[str(val[0])] if val else None, val_labels=[str(val[1])] if val else None,
        output=str(out), arch="unet", encoder="resnet18", window=32, margin=4, epochs=1,
        steps_per_epoch=3, batch_size=4, device="cpu", seed=0,
        options={"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
    )  # fmt: skip
    return out, train_model(cfg).calibration


def test_training_fits_the_temperature_on_its_validation_rasters(tmp_path: Path) -> None:
    out, fit = _train(tmp_path, validated=True)
    meta = read_checkpoint_meta(out)
    record = meta.metrics["calibration"]
    assert fit is not None and meta.temperature == pytest.approx(fit.temperature)  # type: ignore[attr-defined]
    assert meta.temperature != 1.0 and record["pixels"] == 96 * 96
    assert record["fitted_on"] == "validation rasters" and record["images"][0].endswith("val.tif")
    assert record["ece_after"] <= record["ece_before"] + 1e-3
    load_checkpoint(out)  # the weights' digest still holds


def test_training_without_validation_rasters_stays_uncalibrated(tmp_path: Path) -> None:
    out, fit = _train(tmp_path, validated=False)
    meta = read_checkpoint_meta(out)
    assert fit is None and meta.temperature == 1.0 and "calibration" not in meta.metrics
