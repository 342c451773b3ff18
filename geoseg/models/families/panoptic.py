"""Panoptic-DeepLab on an smp body (:mod:`geoseg.models.panoptic`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.models.families import smp
from geoseg.models.family import Family, depth_multiple

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import ModelMeta, Predictor

__all__ = ["FAMILY"]


def _build(meta: ModelMeta) -> nn.Module:
    from geoseg.models.panoptic import panoptic_model

    return panoptic_model(meta)


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    from geoseg.models.panoptic import load_panoptic_predictor

    return load_panoptic_predictor(
        spec.source, spec.device, spec.scale, spec.threads, spec.precision
    )


FAMILY = Family(
    name="panoptic-deeplab",
    summary="stuff + things from semantic, centre and offset heads on an smp body (--arch)",
    tasks=("panoptic",),
    archs=smp.ARCHS,
    stored_arch="panoptic-deeplab",
    load=_load,
    window_multiple=depth_multiple,  # of its smp body
    build=_build,
    training="geoseg.training.tasks:panoptic_setup",
    encoders="as for the smp family",
)
