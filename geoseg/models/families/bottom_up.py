"""Bottom-up instances: a per-pixel network plus a boundary channel (models.instance)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.models.families import fcn, smp
from geoseg.models.family import Family

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import ModelMeta, Predictor

__all__ = ["FAMILY"]


def _build(meta: ModelMeta) -> nn.Module:
    from geoseg.models.instance import instance_model

    return instance_model(meta)


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    from geoseg.models.instance import load_instance_predictor

    return load_instance_predictor(
        spec.source, spec.device, spec.scale, spec.threads, spec.precision
    )


FAMILY = Family(
    name="bottom-up",
    summary="objects from class + boundary maps (connected components; light, any smp/fcn arch)",
    tasks=("instance",),
    archs=(*smp.ARCHS, *fcn.ARCHS),
    load=_load,
    window_multiple=smp.net_multiple,
    build=_build,
    training="geoseg.training.tasks:instance_setup",
    encoders="as for the smp and fcn families",
)
