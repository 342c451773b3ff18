"""CondInst: FCOS locations with dynamic mask heads (:mod:`geoseg.models.condinst`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.models.family import Family, fixed_multiple

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import ModelMeta, Predictor

__all__ = ["FAMILY"]


def _build(meta: ModelMeta) -> nn.Module:
    from geoseg.models.condinst import condinst_model

    return condinst_model(meta)


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    from geoseg.models.condinst import load_condinst_predictor

    return load_condinst_predictor(
        spec.source, spec.device, spec.scale, spec.threads, spec.precision
    )


FAMILY = Family(
    name="condinst",
    summary="CondInst (ResNet-FPN) objects: FCOS locations, dynamic mask heads, relative coords",
    tasks=("instance",),
    archs=("condinst",),
    load=_load,
    window_multiple=fixed_multiple(32),  # the backbone's output stride
    build=_build,
    training="geoseg.training.condinst:condinst_setup",
    encoders="resnet18, resnet34, resnet50, resnet101 (the backbone)",
)
