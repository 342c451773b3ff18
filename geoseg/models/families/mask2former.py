"""Mask2Former trained by geoseg (:mod:`geoseg.models.mask2former`): every task as mask
classification, on a ``transformers`` model built from a config (the ``hf`` extra)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.models.family import TASKS, Family, fixed_multiple

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import ModelMeta, Predictor

__all__ = ["FAMILY"]


def _build(meta: ModelMeta) -> nn.Module:
    from geoseg.models.mask2former import mask2former_model

    return mask2former_model(meta)


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    from geoseg.models.mask2former import load_mask2former_predictor

    objects = meta is not None and TASKS[meta.task].objects
    return load_mask2former_predictor(
        spec.source, spec.device, spec.scale, spec.threads, spec.precision, objects
    )


FAMILY = Family(
    name="mask2former",
    summary="Mask2Former (transformers, random init): masked-attention mask queries",
    tasks=("semantic", "instance", "panoptic"),
    archs=("mask2former",),
    load=_load,
    window_multiple=fixed_multiple(32),  # the backbone's output stride
    build=_build,
    training="geoseg.training.mask2former:mask2former_setup",
    encoders="resnet18, resnet34, resnet50, resnet101, swin-tiny, swin-small, swin-base",
)
