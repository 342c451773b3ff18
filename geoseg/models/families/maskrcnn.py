"""torchvision Mask R-CNN for any number of bands (:mod:`geoseg.models.maskrcnn`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.models.family import Family, fixed_multiple

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import ModelMeta, Predictor

__all__ = ["FAMILY"]


def _build(meta: ModelMeta) -> nn.Module:
    from geoseg.models.maskrcnn import maskrcnn_model

    return maskrcnn_model(meta)


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    from geoseg.models.maskrcnn import load_maskrcnn_predictor

    return load_maskrcnn_predictor(
        spec.source, spec.device, spec.scale, spec.threads, spec.precision
    )


FAMILY = Family(
    name="maskrcnn",
    summary="Mask R-CNN (ResNet-FPN) objects: boxes, masks, scores",
    tasks=("instance",),
    archs=("maskrcnn",),
    load=_load,
    window_multiple=fixed_multiple(32),  # the FPN's coarsest level
    build=_build,
    training="geoseg.training.tasks:maskrcnn_setup",
    encoders="resnet18, resnet34, resnet50, resnet101 (the backbone)",
)
