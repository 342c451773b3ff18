"""Segment Anything (SAM): objects from point and box prompts, imported from a transformers folder.

A ``SamModel`` folder (``config.json`` + ``model.safetensors``, as
``save_pretrained`` writes it) becomes a ``prompt`` checkpoint with
``geoseg import FOLDER -o sam.safetensors --bands R,G,B``; ``geoseg prompt`` runs
it (:mod:`geoseg.pipelines.prompt`), and ``geoseg predict --task instance`` segments
everything (a point grid per window, :mod:`geoseg.models.sam_everything`, stitched as
any instance model's objects). The runtime is :mod:`geoseg.models.sam`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.models.family import Family, fixed_multiple

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import ModelMeta, Predictor

__all__ = ["ARCH", "FAMILY", "MODEL_TYPE", "PATCH"]

#: ``config.json`` ``model_type`` of the folders this family imports.
MODEL_TYPE = "sam"
#: ``ModelMeta.arch`` of its checkpoints.
ARCH = "sam"
#: The ViT's patch side in px: the encoder input is a multiple of it.
PATCH = 16


def _build(meta: ModelMeta) -> nn.Module:
    from geoseg.models.sam import build_sam

    return build_sam(meta)


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    from geoseg.models.sam import load_sam

    return load_sam(spec.source, spec.device, spec.scale, spec.threads)


def _details() -> list[str]:
    return [
        "  import: geoseg import SAM_FOLDER -o sam.safetensors --bands R,G,B [--scale 10000]",
        "  run: geoseg prompt SCENE -m sam.safetensors --boxes LAYER | --points LAYER | "
        "--point X,Y -o objects.tif",
        "  segment everything: geoseg predict SCENE -m sam.safetensors --task instance "
        "[--points-per-side 16] -o objects.tif",
    ]


FAMILY = Family(
    name="sam",
    summary="Segment Anything (transformers SamModel, imported): objects from points and "
    "boxes, or everything",
    tasks=("prompt",),
    archs=(ARCH,),
    load=_load,
    window_multiple=fixed_multiple(PATCH),
    build=_build,
    inputs="prompts",
    details=_details,
)
