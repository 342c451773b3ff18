"""The contract every semantic model meets (defined in :mod:`geoseg.types`)."""

from geoseg.types import Predictor

__all__ = ["Predictor"]
