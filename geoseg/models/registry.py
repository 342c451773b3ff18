"""Name -> builder registry of semantic segmentation architectures.

Every builder takes ``encoder``, ``in_channels`` and ``num_classes`` and returns
a ``torch.nn.Module`` mapping ``(N, C, H, W) float32`` to ``(N, K, H, W)`` logits.
No pretrained weights are downloaded (``encoder_weights=None``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from geoseg.errors import UnknownModelError

__all__ = ["ARCHITECTURES", "SPECTRAL", "available_models", "build_model", "window_multiple"]

#: Name of the weights-free band-index model (geoseg.models.spectral).
SPECTRAL = "spectral"

_SMP: dict[str, Callable[..., nn.Module]] = {
    "unet": smp.Unet,
    "unetplusplus": smp.UnetPlusPlus,
    "deeplabv3plus": smp.DeepLabV3Plus,
    "pspnet": smp.PSPNet,
    "fpn": smp.FPN,
    "segformer": smp.Segformer,
}


class _FCN(nn.Module):
    """torchvision FCN-ResNet with ``in_channels`` inputs, returning logits only."""

    def __init__(self, encoder: str, in_channels: int, num_classes: int) -> None:
        super().__init__()
        from torchvision.models import segmentation as tvs

        builders = {"resnet50": tvs.fcn_resnet50, "resnet101": tvs.fcn_resnet101}
        if encoder not in builders:
            raise UnknownModelError(f"fcn supports encoders {', '.join(builders)}, not {encoder!r}")
        self.net = builders[encoder](
            weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
        )
        conv = self.net.backbone.conv1
        self.net.backbone.conv1 = nn.Conv2d(
            in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)["out"]
        return out


ARCHITECTURES: tuple[str, ...] = (*_SMP, "fcn")


def available_models() -> tuple[str, ...]:
    """Every model name ``-m``/``--arch`` accepts (``spectral`` needs no weights)."""
    return (SPECTRAL, *ARCHITECTURES)


def window_multiple(arch: str, options: Mapping[str, Any] | None = None) -> int:
    """Window sides must be a multiple of this for ``arch`` (its output stride)."""
    if arch == "fcn":
        return 8
    return int(2 ** int((options or {}).get("encoder_depth", 5)))


def _known_encoder(name: str) -> bool:
    """smp's own encoders, or ``tu-<name>`` for any timm model with features."""
    if name.startswith("tu-"):
        import timm

        return bool(timm.is_model(name[3:]))
    return name in smp.encoders.get_encoder_names()


def build_model(
    arch: str, encoder: str | None, in_channels: int, num_classes: int, **options: Any
) -> nn.Module:
    """Build an untrained model.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        encoder: smp encoder name (e.g. ``"resnet18"``, ``"efficientnet-b0"``) or,
            for ``fcn``, ``"resnet50"``/``"resnet101"``. None picks ``resnet34`` /
            ``resnet50``.
        in_channels: input bands.
        num_classes: output classes.
        **options: extra keyword arguments of the smp builder.

    Raises:
        UnknownModelError: unknown architecture or encoder; the message lists the
            valid names.
    """
    key = arch.lower()
    if key == "fcn":
        return _FCN(encoder or "resnet50", in_channels, num_classes)
    if key not in _SMP:
        raise UnknownModelError(
            f"unknown architecture {arch!r}; choose one of {', '.join(available_models())}"
        )
    encoder = encoder or "resnet34"
    if not _known_encoder(encoder):
        raise UnknownModelError(
            f"unknown encoder {encoder!r}; valid smp encoders include resnet18, resnet34, "
            "resnet50, efficientnet-b0, mobilenet_v2, mit_b0, or tu-<timm model> such as "
            "tu-resnet18 (full list: segmentation_models_pytorch.encoders.get_encoder_names())"
        )
    return _SMP[key](
        encoder_name=encoder,
        encoder_weights=None,
        in_channels=in_channels,
        classes=num_classes,
        **options,
    )
