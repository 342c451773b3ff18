"""Hugging Face ``transformers`` segmentation models imported with ``geoseg import FOLDER``.

SegFormer, UperNet and DPT (per-pixel heads) and Mask2Former / MaskFormer /
OneFormer (mask queries) for land-cover classes; the mask-query models also as
``instance`` and ``panoptic`` checkpoints (``geoseg import --task``). The runtime is
:mod:`geoseg.models.hf` (:mod:`geoseg.models.hf_masks` for objects).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.models.family import TASKS, Family, fixed_multiple

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import ModelMeta, Predictor

__all__ = ["ARCHS", "FAMILY", "MODEL_TYPES"]

#: ``config.json`` ``model_type`` values geoseg runs (mirrors ``geoseg.models.hf.HF_MODELS``,
#: which needs torch; a test checks the two agree).
MODEL_TYPES: tuple[str, ...] = (
    "segformer", "upernet", "dpt", "mask2former", "maskformer", "oneformer"
)  # fmt: skip
#: Their ``ModelMeta.arch``: prefixed, as smp has its own ``segformer``.
ARCHS: tuple[str, ...] = tuple(f"hf-{t}" for t in MODEL_TYPES)


def _build(meta: ModelMeta) -> nn.Module:
    from geoseg.models.hf import build_hf

    return build_hf(meta)


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    if meta is not None and TASKS[meta.task].objects:
        from geoseg.models.hf_masks import load_hf_mask_predictor

        return load_hf_mask_predictor(
            spec.source, spec.device, spec.scale, spec.threads, spec.precision
        )
    from geoseg.models.hf import load_hf_predictor

    return load_hf_predictor(spec.source, spec.device, spec.scale, spec.threads, spec.precision)


def _details() -> list[str]:
    return [
        "  import: geoseg import FOLDER -o model.safetensors --bands ... [--classes ...]",
        "  (FOLDER as save_pretrained writes it: config.json + model.safetensors)",
        "  mask2former, maskformer, oneformer also --task instance|panoptic --things NAMES",
        "  (oneformer: the folder needs its CLIP tokenizer files for the task input)",
    ]


FAMILY = Family(
    name="transformers",
    summary="Hugging Face SegFormer, UperNet, DPT, Mask2Former, MaskFormer, OneFormer (imported)",
    tasks=("semantic", "instance", "panoptic"),
    archs=ARCHS,
    load=_load,
    # the backbones' output stride (patch embeddings / Swin stages: 4 * 2 * 2 * 2)
    window_multiple=fixed_multiple(32),
    build=_build,
    details=_details,
)
