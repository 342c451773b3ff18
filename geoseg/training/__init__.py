"""Fit segmentation models to labelled rasters (``geoseg train``)."""

from geoseg.training.config import TrainConfig, load_class_schema, load_train_config
from geoseg.training.loop import TrainResult, train_model

__all__ = ["TrainConfig", "TrainResult", "load_class_schema", "load_train_config", "train_model"]
