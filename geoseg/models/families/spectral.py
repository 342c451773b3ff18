"""The weights-free band-index family (``-m spectral``; rules in :mod:`geoseg.models.spectral`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.errors import GeosegError
from geoseg.models.family import Family, fixed_multiple
from geoseg.models.spectral import SPECTRAL_SCHEMA
from geoseg.types import ModelMeta

if TYPE_CHECKING:
    from geoseg.models.cache import ModelSpec
    from geoseg.types import Predictor

__all__ = ["FAMILY"]


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    """A :class:`~geoseg.models.spectral.SpectralPredictor` on ``spec.roles`` (scale 1 if unset)."""
    from geoseg.models.spectral import SpectralPredictor

    if spec.roles is None:
        raise GeosegError("the spectral model needs band roles; pass --bands red=3,nir=4,...")
    return SpectralPredictor(spec.roles, 1.0 if spec.scale is None else spec.scale)


def _details() -> list[str]:
    from geoseg.models.bands import BAND_ROLES, SENSORS

    return [
        f"  bands: roles {', '.join(BAND_ROLES)}; needs red+green+blue or red+green+nir,",
        "         found from band descriptions, colour interpretation, --sensor "
        f"({', '.join(SENSORS)}) or --bands red=3,nir=4,...",
        "  classes:",
        *[f"    {c.id:3d}  {c.name}  rgb{c.colour}" for c in SPECTRAL_SCHEMA.classes],
    ]


FAMILY = Family(
    name="spectral",
    summary="weights-free band-index rules (NDVI, NDWI/MNDWI, NDBI); use `-m spectral`",
    tasks=("semantic",),
    archs=("spectral",),
    load=_load,
    window_multiple=fixed_multiple(1),  # pixel-wise: any window, no margin needed
    source="numpy",
    weights_free=True,
    schema=SPECTRAL_SCHEMA,
    details=_details,
)
