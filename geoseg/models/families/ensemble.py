"""Cross-validation ensembles (``geoseg train --folds K``): members' mean probabilities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geoseg.models.family import Family

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import ModelMeta, Predictor

__all__ = ["FAMILY"]


def _multiple(arch: str, options: Mapping[str, Any]) -> int:
    """The members' window multiple (their architecture is in the ensemble's options)."""
    from geoseg.models.registry import window_multiple

    member = options.get("member_arch")
    if not isinstance(member, str) or member == "ensemble":
        return 1  # no members named: loading refuses the checkpoint with the reason
    return window_multiple(member, options.get("member_options") or {})


def _build(meta: ModelMeta) -> nn.Module:
    from geoseg.models.ensemble import ensemble_model

    return ensemble_model(meta)


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    from geoseg.models.ensemble import load_ensemble

    return load_ensemble(spec, meta)


FAMILY = Family(
    name="ensemble",
    summary="cross-validation ensemble (`geoseg train --folds K`): the mean of its "
    "members' class probabilities",
    tasks=("semantic", "change"),
    archs=("ensemble",),
    load=_load,
    window_multiple=_multiple,
    build=_build,
    encoders="the members' (any smp, fcn, early-fusion or Siamese per-pixel model)",
    details=lambda: ["  made by: geoseg train --folds K (any per-pixel --arch; not an --arch)"],
)
