"""Scores of predicted label maps against reference labels."""

from geoseg.evaluation.metrics import (
    SegmentationMetrics,
    confusion_from_labels,
    metrics_from_confusion,
)

__all__ = ["SegmentationMetrics", "confusion_from_labels", "metrics_from_confusion"]
