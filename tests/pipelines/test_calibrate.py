"""``geoseg calibrate`` and the temperature at prediction: labels unchanged, probabilities
``softmax(z / T)``, a new checkpoint (never a replaced one), one-line refusals."""

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
from geoseg.io.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.ensemble import ensemble_meta, ensemble_state
from geoseg.models.registry import build_model
from geoseg.models.runtime import load_torch_predictor
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.pipelines.calibrate import calibrate_model
from tests.conftest import (
    TINY_BANDS,
    TINY_SCHEMA,
    make_instance_checkpoint,
    textured_scene,
    write_raster,
)
from tests.models.onnx_graphs import conv_graph
from tests.models.test_ensemble import META, SMALL_UNET
from tests.models.test_onnx import import_graph

T = 2.5


def _run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _with_temperature(src: Path, dst: Path, temperature: float) -> Path:
    tensors, meta = load_checkpoint(src)
    return save_checkpoint(dst, tensors, dataclasses.replace(meta, temperature=temperature))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    data = textured_scene(100, 120, seed=3)
    data[:, :10, :12] = 0  # a nodata corner
    return write_raster(tmp_path / "scene.tif", data, nodata=0, descriptions=TINY_BANDS)


def test_probabilities_are_softmax_of_the_logits_over_t(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    hot = _with_temperature(tiny_checkpoint, tmp_path / "t.safetensors", T)
    batch = textured_scene(64, 64, seed=5)[None].astype(np.float32)
    valid = np.ones((1, 64, 64), bool)
    plain, tempered = (load_torch_predictor(p, "cpu") for p in (tiny_checkpoint, hot))
    with torch.inference_mode():
        z = plain.call(plain.to_device(batch, valid)).float().numpy()
    np.testing.assert_allclose(plain.predict(batch, valid), _softmax(z), atol=1e-6)
    np.testing.assert_allclose(tempered.predict(batch, valid), _softmax(z / T), atol=1e-6)
    np.testing.assert_allclose(
        tempered.log_probabilities(batch, valid), np.log(_softmax(z / T)), atol=1e-5
    )
    top = tempered.predict_top(batch, valid)  # the on-device reduction applies T too
    np.testing.assert_array_equal(top[:, 0], z.argmax(axis=1))
    expected = np.round(_softmax(z / T).max(axis=1) * 254)  # float32 rounding: a step at most
    assert np.abs(top[:, 1] - expected).max() <= 1 and (top[:, 1] == expected).mean() > 0.99


def test_labels_are_byte_identical_with_and_without_t(
    tiny_checkpoint: Path, scene: Path, tmp_path: Path
) -> None:
    hot = _with_temperature(tiny_checkpoint, tmp_path / "t.safetensors", T)
    runs = {}
    for name, model in (("plain", tiny_checkpoint), ("hot", hot)):
        out = tmp_path / f"{name}.tif"
        opts = PredictOptions(chunk=48, device="cpu", probabilities=tmp_path / f"{name}_p.tif")
        predict_scene(scene, str(model), out, opts)
        runs[name] = (_read(out), _read(tmp_path / f"{name}_p.tif"))
    (labels, probs), (labels_t, probs_t) = runs["plain"], runs["hot"]
    assert labels.tobytes() == labels_t.tobytes()  # argmax does not see T
    valid = labels[0] != 255
    # T > 1 softens: every pixel's winning probability is lower or equal, most lower
    top, top_t = probs.max(axis=0)[valid], probs_t.max(axis=0)[valid]
    assert (top_t <= top).all() and (top_t < top).mean() > 0.5


def _noisy_labels(model: Path, scene: Path, tmp_path: Path, flip: float) -> Path:
    """The model's own map with a share ``flip`` of its pixels given a random class."""
    out = tmp_path / "own.tif"
    predict_scene(scene, str(model), out, PredictOptions(device="cpu"))
    labels = _read(out)
    rng = np.random.default_rng(0)
    swap = (rng.random(labels.shape) < flip) & (labels != 255)
    labels[swap] = rng.choice(np.asarray(TINY_SCHEMA.ids, np.uint8), swap.sum())
    return write_raster(tmp_path / "labels.tif", labels, nodata=255)


def test_calibrate_writes_a_new_checkpoint_and_a_second_fit_changes_nothing(
    tiny_checkpoint: Path, scene: Path, tmp_path: Path
) -> None:
    labels = _noisy_labels(tiny_checkpoint, scene, tmp_path, 0.3)
    before = _sha(tiny_checkpoint)
    out = tmp_path / "cal.safetensors"
    code, text = _run("calibrate", "-m", tiny_checkpoint, "--image", scene, "--labels", labels,
                      "-o", out, "--device", "cpu", "--chunk", 48)  # fmt: skip
    assert code == 0, text
    assert _sha(tiny_checkpoint) == before  # the input is never touched
    meta = read_checkpoint_meta(out)
    record = meta.metrics["calibration"]
    assert f"temperature {meta.temperature:.3f} from {record['pixels']:,} labelled px" in text
    assert f"ECE (15 bins) {record['ece_before']:.4f} before, {record['ece_after']:.4f}" in text
    assert record["pixels"] == 100 * 120 - 10 * 12 and meta.temperature != 1.0
    assert record["ece_after"] < record["ece_before"]
    assert load_checkpoint(out)[0].keys() == load_checkpoint(tiny_checkpoint)[0].keys()
    # the calibrated model is calibrated: fitting it again multiplies T by ~1
    again = calibrate_model(str(out), scene, labels, tmp_path / "again.safetensors",
                            PredictOptions(device="cpu", chunk=96))  # fmt: skip
    assert again.previous == meta.temperature
    assert again.fit.temperature == pytest.approx(1.0, abs=2e-3)


def test_an_ensemble_is_tempered_on_its_mean_probabilities(tmp_path: Path) -> None:
    states = []
    for seed in range(2):
        torch.manual_seed(seed)
        states.append(build_model("unet", "resnet18", 4, 3, **SMALL_UNET).state_dict())
    meta = ensemble_meta(META, 2, {})
    plain = save_checkpoint(tmp_path / "e.safetensors", ensemble_state(states), meta)
    assert read_checkpoint_meta(plain).temperature == 1.0  # uncalibrated unless calibrated
    hot = _with_temperature(plain, tmp_path / "e_t.safetensors", T)
    batch = textured_scene(64, 64, seed=5)[None].astype(np.float32)
    valid = np.ones((1, 64, 64), bool)
    p, p_t = (load_predictor(model_spec(str(m), "cpu")).predict(batch, valid) for m in (plain, hot))
    np.testing.assert_allclose(p_t, _softmax(np.log(p) / T), atol=1e-6)
    np.testing.assert_array_equal(p.argmax(axis=1), p_t.argmax(axis=1))


def test_an_onnx_model_calibrates_and_predicts_with_t(tmp_path: Path, scene: Path) -> None:
    model = import_graph(tmp_path, conv_graph(tmp_path / "m.onnx"))
    assert read_checkpoint_meta(model).temperature == 1.0
    labels = _noisy_labels(model, scene, tmp_path, 0.3)
    result = calibrate_model(str(model), scene, labels, tmp_path / "cal.safetensors",
                             PredictOptions(device="cpu"))  # fmt: skip
    t = result.temperature
    batch = textured_scene(32, 32, seed=5)[None].astype(np.float32)
    valid = np.ones((1, 32, 32), bool)
    p, p_t = (load_predictor(model_spec(str(m), "cpu")).predict(batch, valid)
              for m in (model, result.output))  # fmt: skip
    np.testing.assert_allclose(p_t, _softmax(np.log(p) / t), atol=1e-5)
    np.testing.assert_array_equal(p.argmax(axis=1), p_t.argmax(axis=1))


def _no_class_labels(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "lab0.tif", np.full((1, 100, 120), 7, np.uint8), nodata=255)


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("existing output", ["exists", "never replaces"]),
        ("output is the model", ["exists", "never replaces"]),
        ("not safetensors", ["cal.pt", ".safetensors"]),
        ("missing folder", ["does not exist"]),
        ("missing labels", ["nolabels.tif"]),
        ("weights-free model", ["spectral", "no checkpoint"]),
        ("instance model", ["an instance checkpoint", "per-pixel"]),
        ("labels of no class", ["lab0.tif", "model's class ids"]),
    ],
)
def test_refusals_are_one_line_and_write_nothing(
    case: str, words: list[str], tiny_checkpoint: Path, scene: Path, tmp_path: Path
) -> None:
    labels = write_raster(tmp_path / "lab.tif", np.full((1, 100, 120), 4, np.uint8), nodata=255)
    model, out = str(tiny_checkpoint), tmp_path / "cal.safetensors"
    if case == "existing output":
        out.write_bytes(b"keep me")
    elif case == "output is the model":
        out = Path(model)
    elif case == "not safetensors":
        out = tmp_path / "cal.pt"
    elif case == "missing folder":
        out = tmp_path / "nowhere" / "cal.safetensors"
    elif case == "missing labels":
        labels = tmp_path / "nolabels.tif"
    elif case == "weights-free model":
        model = "spectral"
    elif case == "instance model":
        model = str(make_instance_checkpoint(tmp_path / "inst.safetensors"))
    elif case == "labels of no class":
        labels = _no_class_labels(tmp_path)
    before = {p.name: _sha(p) for p in tmp_path.iterdir() if p.is_file()}
    model_sha = _sha(tiny_checkpoint)
    code, text = _run("calibrate", "-m", model, "--image", scene, "--labels", labels,
                      "-o", out, "--device", "cpu")  # fmt: skip
    assert code == 2, text
    assert text.startswith("geoseg: error: ") and text.count("\n") == 1, text
    for word in words:
        assert word in text, text
    assert {p.name: _sha(p) for p in tmp_path.iterdir() if p.is_file()} == before
    assert _sha(tiny_checkpoint) == model_sha
