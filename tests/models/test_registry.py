"""Contract tests for the architecture registry (geoseg/models/registry.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geoseg.errors import GeosegError, UnknownModelError
from geoseg.models.registry import (
    ARCHITECTURES,
    SPECTRAL,
    available_models,
    build_model,
    window_multiple,
)

#: The smallest encoder each architecture accepts, to keep the contract test fast.
SMALL_ENCODER = {"segformer": "mit_b0", "fcn": "resnet50"}


def small_encoder(arch: str) -> str:
    return SMALL_ENCODER.get(arch, "resnet18")


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()  # batch-norm on pooled 1x1 features needs eval mode for N=1
    with torch.no_grad():
        out: torch.Tensor = model(x)
    return out


def test_registry_lists_the_documented_architectures() -> None:
    assert set(ARCHITECTURES) == {
        "unet",
        "unetplusplus",
        "deeplabv3plus",
        "pspnet",
        "fpn",
        "segformer",
        "fcn",
    }
    assert available_models() == (SPECTRAL, *ARCHITECTURES)
    assert SPECTRAL == "spectral"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_builds_and_maps_input_to_logits(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, small_encoder(arch), in_channels=3, num_classes=4)

    out = logits(model, torch.randn(1, 3, 64, 64))

    assert isinstance(model, nn.Module)
    assert out.shape == (1, 4, 64, 64)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.std() > 0  # not a constant map


@pytest.mark.parametrize("arch", ["unet", "fcn"])
def test_in_channels_other_than_three(arch: str) -> None:
    model = build_model(arch, small_encoder(arch), in_channels=5, num_classes=2)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))

    out = logits(model, torch.randn(2, 5, 64, 64))

    assert first_conv.in_channels == 5
    assert out.shape == (2, 2, 64, 64)
    assert not torch.equal(out[0], out[1])


def test_arch_names_are_case_insensitive() -> None:
    model = build_model("UNet", "resnet18", in_channels=3, num_classes=2)
    assert logits(model, torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_default_encoders() -> None:
    unet = build_model("unet", None, in_channels=3, num_classes=2)
    fcn = build_model("fcn", None, in_channels=3, num_classes=2)
    # resnet34 has 3 blocks in its first stage (resnet18: 2); resnet50 has 6 in its
    # third (resnet101: 23).
    assert len(unet.encoder.layer1) == 3
    assert len(fcn.net.backbone.layer3) == 6


def test_options_reach_the_smp_builder() -> None:
    plain = build_model("unet", "resnet18", in_channels=3, num_classes=2)
    scse = build_model(
        "unet", "resnet18", in_channels=3, num_classes=2, decoder_attention_type="scse"
    )
    assert sum(p.numel() for p in scse.parameters()) > sum(p.numel() for p in plain.parameters())


def test_unknown_architecture_lists_the_valid_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        build_model("transunet", None, in_channels=3, num_classes=2)

    message = str(info.value)
    assert "transunet" in message
    for name in (*ARCHITECTURES, SPECTRAL):
        assert name in message
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, GeosegError)
    assert not message.startswith(("'", '"'))  # not KeyError's repr()


def test_unknown_smp_encoder_is_refused() -> None:
    with pytest.raises(UnknownModelError, match="unknown encoder 'resnet7'") as info:
        build_model("unet", "resnet7", in_channels=3, num_classes=2)
    assert "resnet18" in str(info.value)


def test_unknown_fcn_encoder_is_refused() -> None:
    with pytest.raises(UnknownModelError, match="resnet50, resnet101") as info:
        build_model("fcn", "resnet18", in_channels=3, num_classes=2)
    assert "'resnet18'" in str(info.value)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_window_multiple(arch: str) -> None:
    assert window_multiple(arch) == (8 if arch == "fcn" else 32)


@pytest.mark.parametrize(("depth", "multiple"), [(3, 8), (4, 16), (5, 32)])
def test_window_multiple_follows_encoder_depth(depth: int, multiple: int) -> None:
    assert window_multiple("unet", {"encoder_depth": depth}) == multiple
    assert window_multiple("fcn", {"encoder_depth": depth}) == 8
