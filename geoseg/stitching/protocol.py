"""What an instance model looks like to the stitcher."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from geoseg.types import ClassSchema

__all__ = ["InstancePredictor", "SemanticInstancePredictor", "WindowInstances"]

#: One window's detections: ``masks (n, W, W) bool``, ``classes (n,) int``,
#: ``scores (n,) float32``.
WindowInstances = tuple[np.ndarray, np.ndarray, np.ndarray]


@runtime_checkable
class InstancePredictor(Protocol):
    """A loaded model that finds object instances in windows of a scene.

    Attributes:
        schema: the classes; ``classes`` returned by :meth:`predict_instances` are
            class ids of this schema (``ClassInfo.id``), normally ``is_thing`` ones.
        bands: names of the input bands the model expects, in order.
    """

    schema: ClassSchema
    bands: tuple[str, ...]

    def predict_instances(self, batch: np.ndarray, valid: np.ndarray) -> list[WindowInstances]:
        """Instances of each window of a batch.

        Args:
            batch: ``(N, C, W, W) float32`` band values as stored in the scene.
            valid: ``(N, W, W) bool``, False where the scene has no data.

        Returns:
            One ``(masks (n, W, W) bool, classes (n,) int, scores (n,) float32)`` per
            window; masks are the parts of the objects visible in that window.
        """
        ...


@runtime_checkable
class SemanticInstancePredictor(InstancePredictor, Protocol):
    """An :class:`InstancePredictor` whose forward pass also gives per-pixel classes.

    The instances and the semantic labels of a panoptic map come from the same
    forward pass, so the stitcher runs each window once for both.
    """

    def predict_with_semantic(
        self, batch: np.ndarray, valid: np.ndarray
    ) -> tuple[list[WindowInstances], np.ndarray]:
        """:meth:`predict_instances` of a batch and its semantic channels, from one forward pass.

        Args:
            batch: ``(N, C, W, W) float32`` band values as stored in the scene.
            valid: ``(N, W, W) bool``, False where the scene has no data.

        Returns:
            The instances of each window, and ``(N, W, W) int`` the index of the most
            probable semantic channel (``schema.classes[k]``) at each pixel: exactly
            ``np.argmax`` over the channels of the model's ``predict`` for the batch.
        """
        ...
