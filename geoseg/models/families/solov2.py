"""SOLOv2: grid-cell objects with dynamic mask kernels (:mod:`geoseg.models.solov2`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.models.family import Family, fixed_multiple

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import ModelMeta, Predictor

__all__ = ["FAMILY"]


def _build(meta: ModelMeta) -> nn.Module:
    from geoseg.models.solov2 import solov2_model

    return solov2_model(meta)


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    from geoseg.models.solov2 import load_solov2_predictor

    return load_solov2_predictor(spec.source, spec.device, spec.scale, spec.threads, spec.precision)


FAMILY = Family(
    name="solov2",
    summary="SOLOv2 (ResNet-FPN) objects: grid cells, dynamic mask kernels, Matrix NMS",
    tasks=("instance",),
    archs=("solov2",),
    load=_load,
    window_multiple=fixed_multiple(32),  # the backbone's output stride
    build=_build,
    training="geoseg.training.tasks:solov2_setup",
    encoders="resnet18, resnet34, resnet50, resnet101 (the backbone)",
)
