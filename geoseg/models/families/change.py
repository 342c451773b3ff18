"""Early-fusion change models: a per-pixel network on two dates stacked band-wise.

``--arch early`` is early fusion with a U-Net (the ``unet`` of the smp family); any
smp or fcn architecture name picks that network instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geoseg.models.families import fcn, smp
from geoseg.models.family import Family
from geoseg.types import ModelMeta

if TYPE_CHECKING:
    from torch import nn

__all__ = ["EARLY", "FAMILY"]

#: The ``--arch`` of early fusion with its default network, a U-Net.
EARLY = "early"


def _network(arch: str) -> str:
    return "unet" if arch.lower() == EARLY else arch


def _multiple(arch: str, options: Mapping[str, Any]) -> int:
    return smp.net_multiple(_network(arch), options)


def _build(meta: ModelMeta) -> nn.Module:
    return smp.pixel_model(dataclasses.replace(meta, arch=_network(meta.arch)))


FAMILY = Family(
    name="early-fusion-change",
    summary="change / no change from two dates stacked by `geoseg stack` (one image in)",
    tasks=("change",),
    archs=(EARLY, *smp.ARCHS, *fcn.ARCHS),
    load=smp.load_pixel_predictor,
    window_multiple=_multiple,
    build=_build,
    training="geoseg.training.tasks:semantic_setup",
    encoders="as for the smp and fcn families (early: a U-Net)",
)
