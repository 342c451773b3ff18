"""Tests for checkpoint-backed torch predictors (geoseg/models/runtime.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from geoseg.errors import CheckpointError
from geoseg.io.checkpoint import save_checkpoint
from geoseg.models.registry import build_model
from geoseg.models.runtime import (
    TorchPredictor,
    load_torch_predictor,
    resolve_device,
    resolve_precision,
)
from geoseg.tiling.infer import confidence_to_uint8
from geoseg.types import ClassInfo, ClassSchema, ModelMeta, Normalization, Predictor

SCHEMA = ClassSchema(
    (
        ClassInfo(0, "water", (31, 120, 180)),
        ClassInfo(1, "forest", (51, 160, 44)),
        ClassInfo(2, "crop", (255, 255, 100)),
        ClassInfo(5, "urban", (227, 26, 28)),
    )
)
META = ModelMeta(
    task="semantic",
    arch="unet",
    encoder="resnet18",
    bands=("B04", "B03", "B02"),
    normalization=Normalization(mean=(0.10, 0.12, 0.08), std=(0.05, 0.04, 0.03), scale=1e-4),
    schema=SCHEMA,
    window=64,
    margin=8,
)


def trained_unet() -> nn.Module:
    """A unet/resnet18 with non-trivial weights and batch-norm statistics."""
    torch.manual_seed(7)
    module = build_model("unet", "resnet18", in_channels=3, num_classes=4)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return module.eval()


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    return trained_unet()


@pytest.fixture(scope="module")
def checkpoint(unet: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "unet.safetensors"
    return save_checkpoint(path, unet.state_dict(), META)


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> TorchPredictor:
    return load_torch_predictor(checkpoint, "cpu")


def random_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(2, 3, 64, 64) float32`` digital numbers and ``(2, 64, 64) bool`` validity."""
    rng = np.random.default_rng(seed)
    batch = rng.uniform(0, 3000, size=(2, 3, 64, 64)).astype(np.float32)
    valid = np.ones((2, 64, 64), dtype=bool)
    valid[0, :20, :30] = False
    valid[1, 40:, :] = False
    batch[~np.broadcast_to(valid[:, None], batch.shape)] = 65535.0  # nodata fill
    return batch, valid


def by_hand(module: nn.Module, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Reference: ``softmax(module((x * scale - mean) / std))`` with nodata set to 0."""
    norm = META.normalization
    mean = np.array(norm.mean, np.float64)[None, :, None, None]
    std = np.array(norm.std, np.float64)[None, :, None, None]
    x = (batch.astype(np.float64) * norm.scale - mean) / std
    x = np.where(valid[:, None], x, 0.0).astype(np.float32)
    with torch.no_grad():
        return torch.softmax(module.eval()(torch.from_numpy(x)), dim=1).numpy()


def test_round_trip_predicts_like_the_saved_module(
    unet: nn.Module, predictor: TorchPredictor
) -> None:
    batch, valid = random_batch()

    probs = predictor.predict(batch, valid)

    assert isinstance(predictor, TorchPredictor)
    assert isinstance(predictor, Predictor)
    assert predictor.device == torch.device("cpu")
    assert predictor.schema == SCHEMA
    assert predictor.bands == ("B04", "B03", "B02")
    assert predictor.meta == META
    assert probs.shape == (2, 4, 64, 64)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, by_hand(unet, batch, valid), rtol=1e-4, atol=1e-5)


def test_probabilities_sum_to_one(predictor: TorchPredictor) -> None:
    probs = predictor.predict(*random_batch(1))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert probs.min() >= 0.0
    assert probs.argmax(axis=1).std() > 0  # not one class everywhere


def test_loaded_weights_are_the_saved_ones(unet: nn.Module, predictor: TorchPredictor) -> None:
    loaded = predictor.module.state_dict()
    saved = unet.state_dict()
    assert loaded.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key


def test_normalize_applies_scale_mean_std_and_zeroes_nodata(predictor: TorchPredictor) -> None:
    batch = np.full((1, 3, 2, 2), 1000.0, np.float32)  # 0.1 after scaling
    valid = np.array([[[True, False], [True, True]]])

    x = predictor.normalize(batch, valid)

    expected = np.array([(0.1 - 0.10) / 0.05, (0.1 - 0.12) / 0.04, (0.1 - 0.08) / 0.03])
    np.testing.assert_allclose(x[0, :, 0, 0], expected, atol=1e-5)
    np.testing.assert_array_equal(x[0, :, 0, 1], 0.0)
    assert batch[0, 0, 0, 1] == 1000.0  # the caller's array is not modified


def test_nodata_values_do_not_change_predictions(predictor: TorchPredictor) -> None:
    batch, valid = random_batch(2)
    other = batch.copy()
    other[~np.broadcast_to(valid[:, None], batch.shape)] = -9999.0
    np.testing.assert_array_equal(predictor.predict(batch, valid), predictor.predict(other, valid))


# --- tampered checkpoints ------------------------------------------------------------


def test_missing_tensor_is_refused(unet: nn.Module, tmp_path: Path) -> None:
    state = dict(unet.state_dict())
    del state["segmentation_head.0.bias"]
    path = save_checkpoint(tmp_path / "m.safetensors", state, META)

    with pytest.raises(CheckpointError, match="missing") as info:
        load_torch_predictor(path, "cpu")

    assert "segmentation_head.0.bias" in str(info.value)
    assert str(path) in str(info.value)


def test_unexpected_tensor_is_refused(unet: nn.Module, tmp_path: Path) -> None:
    state = {**unet.state_dict(), "extra.weight": torch.zeros(3)}
    path = save_checkpoint(tmp_path / "m.safetensors", state, META)

    with pytest.raises(CheckpointError, match="unexpected") as info:
        load_torch_predictor(path, "cpu")

    assert "extra.weight" in str(info.value)


@pytest.mark.filterwarnings("ignore::UserWarning")  # smp warns about the mismatched key
def test_wrong_tensor_shape_is_refused(unet: nn.Module, tmp_path: Path) -> None:
    state = dict(unet.state_dict())
    state["segmentation_head.0.weight"] = torch.zeros(5, 16, 3, 3)  # 5 classes, not 4
    path = save_checkpoint(tmp_path / "m.safetensors", state, META)

    with pytest.raises(CheckpointError, match="do not fit") as info:
        load_torch_predictor(path, "cpu")

    assert isinstance(info.value, ValueError)


def test_wrong_tensor_shape_in_a_torchvision_model_is_refused(tmp_path: Path) -> None:
    # Plain nn.Module.load_state_dict raises on a shape mismatch (smp models warn).
    fcn = build_model("fcn", "resnet50", in_channels=3, num_classes=4)
    state = dict(fcn.state_dict())
    state["net.classifier.4.bias"] = torch.zeros(6)
    meta = ModelMeta(
        task="semantic", arch="fcn", encoder="resnet50", bands=META.bands,
        normalization=META.normalization, schema=SCHEMA,
    )  # fmt: skip
    path = save_checkpoint(tmp_path / "m.safetensors", state, meta)

    with pytest.raises(
        CheckpointError, match=r"do not fit a fcn/resnet50 model .*wrong shape"
    ) as info:
        load_torch_predictor(path, "cpu")

    assert "net.classifier.4.bias" in str(info.value)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    fpn = build_model("fpn", "resnet18", in_channels=3, num_classes=4)
    path = save_checkpoint(tmp_path / "m.safetensors", fpn.state_dict(), META)

    with pytest.raises(CheckpointError, match="do not fit a unet/resnet18"):
        load_torch_predictor(path, "cpu")


# --- devices ---------------------------------------------------------------------------


def test_cuda_without_a_gpu_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CheckpointError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(CheckpointError, match="no CUDA GPU"):
        resolve_device("cuda:1")


def test_auto_device_without_a_gpu_is_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_device_with_a_gpu_is_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_loading_for_cuda_without_a_gpu_is_refused(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CheckpointError, match="no CUDA GPU"):
        load_torch_predictor(checkpoint, "cuda")


def top_by_hand(probs: np.ndarray) -> np.ndarray:
    """``(N, 2, H, W) uint8``: first argmax and ``round(254 p)`` of ``(N, K, H, W)`` probs."""
    best = np.argmax(probs, axis=1)
    top = np.take_along_axis(probs, best[:, None], axis=1)[:, 0]
    return np.stack([best.astype(np.uint8), confidence_to_uint8(top)], axis=1)


def test_predict_top_is_the_argmax_of_predict(predictor: TorchPredictor) -> None:
    batch, valid = random_batch(5)
    probs = predictor.predict(batch, valid)

    top = predictor.predict_top(batch, valid)

    assert top.shape == (2, 2, 64, 64) and top.dtype == np.uint8
    np.testing.assert_array_equal(top, top_by_hand(probs))
    assert len(np.unique(top[:, 0])) > 1  # the test sees more than one class win


def test_predict_tops_takes_raw_integers_and_keeps_order(predictor: TorchPredictor) -> None:
    batches = [random_batch(seed) for seed in (1, 2, 3, 4)]
    raw = [(np.rint(b).astype(np.uint16), v) for b, v in batches]

    tops = list(predictor.predict_tops(iter(raw)))

    assert len(tops) == 4
    for (b, v), top in zip(raw, tops, strict=True):
        np.testing.assert_array_equal(top, top_by_hand(predictor.predict(b.astype(np.float32), v)))


class Flat(nn.Module):
    """Equal logits for every class: every pixel is a four-way tie."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((x.shape[0], 4, *x.shape[2:]))


def test_predict_top_breaks_ties_like_numpy() -> None:
    model = TorchPredictor(Flat(), META, torch.device("cpu"))
    batch, valid = random_batch()

    top = model.predict_top(batch, valid)

    assert (top[:, 0] == 0).all()  # np.argmax: the first of equal values
    assert (top[:, 1] == 64).all()  # round(254 / 4) = round(63.5) = 64 (half to even)


def test_precision_defaults_and_refusals() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("auto", cuda) == torch.float16
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("fp32", cuda) is None
    with pytest.raises(CheckpointError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(CheckpointError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", cuda)


def test_bf16_on_the_cpu_is_close_to_fp32(checkpoint: Path, predictor: TorchPredictor) -> None:
    batch, valid = random_batch(2)
    full = predictor.predict(batch, valid)

    half = load_torch_predictor(checkpoint, "cpu", precision="bf16").predict(batch, valid)

    assert not np.array_equal(half, full)  # it did run in bfloat16
    assert np.abs(half - full).mean() < 0.01  # bf16 keeps ~3 significant digits
    agree = (half.argmax(axis=1) == full.argmax(axis=1)).mean()
    assert agree > 0.9


@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-4), ("fp16", 0.02), ("bf16", 0.1)])
def test_cuda_predictions_match_cpu(checkpoint: Path, precision: str, atol: float) -> None:
    batch, valid = random_batch(3)
    cpu = load_torch_predictor(checkpoint, "cpu").predict(batch, valid)
    model = load_torch_predictor(checkpoint, "cuda", precision=precision)

    gpu = model.predict(batch, valid)

    np.testing.assert_allclose(gpu, cpu, atol=atol)
    np.testing.assert_array_equal(model.predict_top(batch, valid), top_by_hand(gpu))
    raw = [(np.rint(batch * k).astype(np.uint16), valid) for k in (0.5, 1.0, 1.5, 2.0)]
    tops = list(model.predict_tops(iter(raw)))  # queued on the GPU, uint16 across
    for (b, v), top in zip(raw, tops, strict=True):
        np.testing.assert_array_equal(top, top_by_hand(model.predict(b.astype(np.float32), v)))
