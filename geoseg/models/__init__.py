"""The model family registry, the torch runtime and one module per family."""

from geoseg.models.cache import ModelSpec, load_predictor, model_spec
from geoseg.models.family import Family
from geoseg.models.registry import (
    ARCHITECTURES,
    SPECTRAL,
    available_models,
    build_model,
    families,
)

__all__ = [
    "ARCHITECTURES",
    "SPECTRAL",
    "Family",
    "ModelSpec",
    "available_models",
    "build_model",
    "families",
    "load_predictor",
    "model_spec",
]
