"""Segment Anything 2 (SAM 2): objects from points and boxes, and objects through time.

A transformers ``Sam2Model`` folder (image) or ``Sam2VideoModel`` folder (image
plus the memory that carries objects from frame to frame), as ``save_pretrained``
writes it, becomes a ``prompt`` checkpoint with ``geoseg import FOLDER -o
sam2.safetensors --bands R,G,B``. ``geoseg prompt`` runs either; ``geoseg track``
(:mod:`geoseg.pipelines.track`) needs the video model. The runtime is
:mod:`geoseg.models.sam2`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.models.family import Family, fixed_multiple

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import ModelMeta, Predictor

__all__ = ["ARCH", "FAMILY", "IMAGE_TYPE", "MODEL_TYPES", "PATCH", "VIDEO_TYPE"]

#: ``config.json`` ``model_type`` of an image ``Sam2Model`` folder.
IMAGE_TYPE = "sam2"
#: ``config.json`` ``model_type`` of a ``Sam2VideoModel`` folder.
VIDEO_TYPE = "sam2_video"
#: The folders this family imports.
MODEL_TYPES = (IMAGE_TYPE, VIDEO_TYPE)
#: ``ModelMeta.arch`` of its checkpoints.
ARCH = "sam2"
#: The prompt encoder's patch side in px: the encoder input is a multiple of it.
PATCH = 16


def _build(meta: ModelMeta) -> nn.Module:
    from geoseg.models.sam2 import build_sam2

    return build_sam2(meta)


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    from geoseg.models.sam2 import load_sam2

    return load_sam2(spec.source, spec.device, spec.scale, spec.threads)


def _details() -> list[str]:
    return [
        "  import: geoseg import SAM2_FOLDER -o sam2.safetensors --bands R,G,B [--scale 10000]",
        "  run: geoseg prompt SCENE -m sam2.safetensors --boxes LAYER | --points LAYER -o "
        "objects.tif",
        "  through time (Sam2VideoModel only): geoseg track T1 T2 ... -m sam2.safetensors "
        "--boxes LAYER -o tracks/",
    ]


FAMILY = Family(
    name="sam2",
    summary="Segment Anything 2 (transformers Sam2Model / Sam2VideoModel, imported): objects "
    "from points and boxes, tracked through dates",
    tasks=("prompt",),
    archs=(ARCH,),
    load=_load,
    window_multiple=fixed_multiple(PATCH),
    build=_build,
    inputs="prompts",
    details=_details,
)
