"""End-to-end jobs composed from the lower layers."""

from geoseg.pipelines.predict import PredictOptions, PredictResult, predict_scene

__all__ = ["PredictOptions", "PredictResult", "predict_scene"]
