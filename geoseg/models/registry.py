"""Name -> builder registry of semantic segmentation architectures.

Every builder takes ``encoder``, ``in_channels`` and ``num_classes`` and returns
a ``torch.nn.Module`` mapping ``(N, C, H, W) float32`` to ``(N, K, H, W)`` logits.
No pretrained weights are downloaded (``encoder_weights=None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geoseg.errors import UnknownModelError

if TYPE_CHECKING:  # torch is imported only when a model is built (spectral needs none)
    from torch import nn

__all__ = ["ARCHITECTURES", "SPECTRAL", "available_models", "build_model", "window_multiple"]

#: Name of the weights-free band-index model (geoseg.models.spectral).
SPECTRAL = "spectral"

#: registry name -> segmentation-models-pytorch class name.
_SMP = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "deeplabv3plus": "DeepLabV3Plus",
    "pspnet": "PSPNet",
    "fpn": "FPN",
    "segformer": "Segformer",
}


ARCHITECTURES: tuple[str, ...] = (*_SMP, "fcn")


def available_models() -> tuple[str, ...]:
    """Every model name ``-m``/``--arch`` accepts (``spectral`` needs no weights)."""
    return (SPECTRAL, *ARCHITECTURES)


def window_multiple(arch: str, options: Mapping[str, Any] | None = None) -> int:
    """Window sides must be a multiple of this for ``arch`` (its output stride)."""
    if arch == "fcn":
        return 8
    if arch == "maskrcnn":
        return 32  # the FPN's coarsest level
    return int(2 ** int((options or {}).get("encoder_depth", 5)))


def _known_encoder(name: str) -> bool:
    """smp's own encoders, or ``tu-<name>`` for any timm model with features."""
    import segmentation_models_pytorch as smp

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
        from geoseg.models.fcn import FCN

        return FCN(encoder or "resnet50", in_channels, num_classes)
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
    import segmentation_models_pytorch as smp

    builder = getattr(smp, _SMP[key])
    return builder(
        encoder_name=encoder,
        encoder_weights=None,
        in_channels=in_channels,
        classes=num_classes,
        **options,
    )
