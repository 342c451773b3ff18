"""Siamese change models (FC-Siam-diff, FC-Siam-conc): one shared encoder for both dates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.models.families import smp
from geoseg.models.family import Family, depth_multiple
from geoseg.types import ModelMeta

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ARCHS", "FAMILY", "siamese_model"]

#: ``--arch`` names: features differenced or concatenated (see :mod:`geoseg.models.siamese`).
ARCHS = ("siam-diff", "siam-conc")


def siamese_model(meta: ModelMeta) -> nn.Module:
    """The untrained Siamese network a checkpoint describes (encoder None: ``resnet34``).

    Raises:
        UnknownModelError: unknown encoder.
        BandMismatchError: the bands are not two dates stacked by ``geoseg stack``.
    """
    from geoseg.models.siamese import FUSIONS, SiameseChange

    encoder = meta.encoder or "resnet34"
    smp.check_encoder(encoder)
    return SiameseChange(
        encoder, meta.bands, len(meta.schema), FUSIONS[meta.arch.lower()], **dict(meta.options)
    )


FAMILY = Family(
    name="siamese-change",
    summary="change / no change from two dates through one shared encoder (FC-Siam-diff/conc)",
    tasks=("change",),
    archs=ARCHS,
    load=smp.load_pixel_predictor,
    window_multiple=depth_multiple,
    build=siamese_model,
    training="geoseg.training.tasks:semantic_setup",
    encoders="smp encoders (resnet18, efficientnet-b0, ...) or tu-<timm model>; a U-Net decoder",
)
