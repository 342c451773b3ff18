"""segmentation-models-pytorch semantic architectures (U-Net, DeepLabV3+, SegFormer, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geoseg.errors import UnknownModelError
from geoseg.models.family import Family, depth_multiple
from geoseg.types import ModelMeta

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import Predictor

__all__ = [
    "ARCHS",
    "FAMILY",
    "build_smp",
    "check_encoder",
    "load_pixel_predictor",
    "net_multiple",
    "pixel_model",
]

#: ``--arch`` name -> segmentation-models-pytorch class name.
SMP_CLASSES = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "deeplabv3plus": "DeepLabV3Plus",
    "pspnet": "PSPNet",
    "fpn": "FPN",
    "segformer": "Segformer",
}
ARCHS: tuple[str, ...] = tuple(SMP_CLASSES)


def _known_encoder(name: str) -> bool:
    """smp's own encoders, or ``tu-<name>`` for any timm model with features."""
    import segmentation_models_pytorch as smp

    if name.startswith("tu-"):
        import timm

        return bool(timm.is_model(name[3:]))
    return name in smp.encoders.get_encoder_names()


def check_encoder(name: str) -> None:
    """Raise :class:`UnknownModelError` (listing valid names) unless smp can build ``name``."""
    if not _known_encoder(name):
        raise UnknownModelError(
            f"unknown encoder {name!r}; valid smp encoders include resnet18, resnet34, "
            "resnet50, efficientnet-b0, mobilenet_v2, mit_b0, or tu-<timm model> such as "
            "tu-resnet18 (full list: segmentation_models_pytorch.encoders.get_encoder_names())"
        )


def build_smp(
    arch: str, encoder: str | None, in_channels: int, num_classes: int, **options: Any
) -> nn.Module:
    """An untrained smp ``arch`` (no pretrained weights; encoder None: ``resnet34``).

    Returns a module mapping ``(N, C, H, W) float32`` to ``(N, num_classes, H, W)`` logits.

    Raises:
        UnknownModelError: unknown encoder; the message lists valid ones.
    """
    encoder = encoder or "resnet34"
    check_encoder(encoder)
    import segmentation_models_pytorch as smp

    builder = getattr(smp, SMP_CLASSES[arch.lower()])
    return builder(
        encoder_name=encoder,
        encoder_weights=None,
        in_channels=in_channels,
        classes=num_classes,
        **options,
    )


def pixel_model(meta: ModelMeta, extra_channels: int = 0) -> nn.Module:
    """The per-pixel network a checkpoint describes: ``len(schema) + extra_channels`` outputs."""
    from geoseg.models.registry import build_model  # smp or fcn, by meta.arch

    return build_model(
        meta.arch, meta.encoder, len(meta.bands), len(meta.schema) + extra_channels,
        **dict(meta.options),
    )  # fmt: skip


def net_multiple(arch: str, options: Mapping[str, Any]) -> int:
    """The window multiple of the per-pixel network ``arch`` (for families wrapping one)."""
    from geoseg.models.registry import window_multiple

    return window_multiple(arch, options)


def load_pixel_predictor(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    """A :class:`~geoseg.models.runtime.TorchPredictor` of a per-pixel class checkpoint."""
    from geoseg.models.runtime import load_torch_predictor

    return load_torch_predictor(spec.source, spec.device, spec.scale, spec.threads, spec.precision)


FAMILY = Family(
    name="smp",
    summary="segmentation-models-pytorch encoder-decoders for land-cover classes",
    tasks=("semantic",),
    archs=ARCHS,
    load=load_pixel_predictor,
    window_multiple=depth_multiple,
    build=pixel_model,
    net=build_smp,
    training="geoseg.training.tasks:semantic_setup",
    encoders="smp encoders (resnet18, efficientnet-b0, mit_b0, ...) or tu-<timm model>",
)
