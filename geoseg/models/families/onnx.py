"""Imported ONNX graphs run by onnxruntime (:mod:`geoseg.models.onnx_runtime`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geoseg.errors import CheckpointError
from geoseg.models.family import Family

if TYPE_CHECKING:
    from geoseg.models.cache import ModelSpec
    from geoseg.types import ModelMeta, Predictor

__all__ = ["FAMILY"]


def _load(spec: ModelSpec, meta: ModelMeta | None) -> Predictor:
    from geoseg.models.onnx_runtime import load_onnx_predictor

    if meta is None:
        raise CheckpointError(f"{spec.source}: an ONNX model needs its checkpoint")
    return load_onnx_predictor(spec.source, meta, spec.device, spec.scale, spec.threads)


def _window_multiple(arch: str, options: Mapping[str, Any]) -> int:
    """A graph with a fixed spatial size takes windows of that size (its multiple); else any."""
    return int(options.get("onnx_fixed_window") or 1)


def _details() -> list[str]:
    return [
        "  import: geoseg import model.onnx -o model.safetensors --bands B02,B03,B04,B08 "
        "--classes classes.yaml --window 256",
        "  needs: pip install 'geoseg[onnx]' (onnxruntime; CUDA provider used when present)",
    ]


FAMILY = Family(
    name="onnx",
    summary="ONNX segmentation graphs brought in with `geoseg import` (run by onnxruntime)",
    tasks=("semantic",),
    archs=("onnx",),
    load=_load,
    window_multiple=_window_multiple,
    source="onnx",
    details=_details,
)
