"""Early-fusion change models: a per-pixel network on two dates stacked band-wise."""

from __future__ import annotations

from geoseg.models.families import fcn, smp
from geoseg.models.family import Family

__all__ = ["FAMILY"]

FAMILY = Family(
    name="early-fusion-change",
    summary="change / no change from two dates stacked by `geoseg stack` (one image in)",
    tasks=("change",),
    archs=(*smp.ARCHS, *fcn.ARCHS),
    load=smp.load_pixel_predictor,
    window_multiple=smp.net_multiple,
    build=smp.pixel_model,
    training="geoseg.training.tasks:semantic_setup",
    encoders="as for the smp and fcn families",
)
