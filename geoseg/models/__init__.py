"""Model registry, checkpoint-backed predictors and the weights-free spectral model."""

from geoseg.models.cache import ModelSpec, load_predictor, model_spec
from geoseg.models.registry import ARCHITECTURES, SPECTRAL, available_models, build_model

__all__ = [
    "ARCHITECTURES",
    "SPECTRAL",
    "ModelSpec",
    "available_models",
    "build_model",
    "load_predictor",
    "model_spec",
]
