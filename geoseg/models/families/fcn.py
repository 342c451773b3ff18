"""torchvision FCN-ResNet (:class:`geoseg.models.fcn.FCN`) as a semantic family."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geoseg.models.families.smp import load_pixel_predictor, pixel_model
from geoseg.models.family import Family, fixed_multiple

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ARCHS", "FAMILY", "build_fcn"]

ARCHS = ("fcn",)


def build_fcn(
    arch: str, encoder: str | None, in_channels: int, num_classes: int, **options: Any
) -> nn.Module:
    """An untrained FCN (encoder None: ``resnet50``); ``options`` do not apply to it."""
    from geoseg.models.fcn import FCN

    return FCN(encoder or "resnet50", in_channels, num_classes)


FAMILY = Family(
    name="fcn",
    summary="torchvision FCN-ResNet for land-cover classes",
    tasks=("semantic",),
    archs=ARCHS,
    load=load_pixel_predictor,
    window_multiple=fixed_multiple(8),  # ResNet with dilated last stages: output stride 8
    build=pixel_model,
    net=build_fcn,
    training="geoseg.training.tasks:semantic_setup",
    encoders="resnet50, resnet101",
)
