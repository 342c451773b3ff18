"""A checkpoint's input normalization applied to raw window batches (numpy only).

The torch runtime (:mod:`geoseg.models.runtime`) and the onnxruntime one
(:mod:`geoseg.models.onnx_runtime`) normalize windows the same way; this module
is that one way, free of torch so that ONNX models run without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.types import Normalization

__all__ = ["BatchNormalizer"]


@dataclass(frozen=True, eq=False)
class BatchNormalizer:
    """``(x * scale`` [clipped] ``- mean) / std`` per band of ``(N, C, H, W)`` batches.

    Attributes:
        mean: ``(1, C, 1, 1) float32`` band means, model units.
        inv_std: ``(1, C, 1, 1) float32`` reciprocal band standard deviations.
        scale: digital number -> model units.
        clip: ``(1, C, 1, 1) float32`` low and high bounds of the scaled values
            (percentile-clipped normalizations), or None.
    """

    mean: np.ndarray
    inv_std: np.ndarray
    scale: np.float32
    clip: tuple[np.ndarray, np.ndarray] | None

    @classmethod
    def of(cls, norm: Normalization, scale: float | None = None) -> BatchNormalizer:
        """The arrays of ``norm``; ``scale`` replaces its scale (None: keep it)."""
        shape = (1, len(norm.mean), 1, 1)
        return cls(
            np.asarray(norm.mean, np.float32).reshape(shape),
            (1.0 / np.asarray(norm.std, np.float32)).reshape(shape),
            np.float32(norm.scale if scale is None else scale),
            norm.clip_arrays(shape),
        )

    def __call__(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` raw values -> normalized float32; nodata pixels -> 0 (the mean).

        Args:
            batch: ``(N, C, H, W)`` raw values, any numeric dtype.
            valid: ``(N, H, W) bool``, False on nodata pixels.
        """
        x = batch.astype(np.float32) * self.scale
        if self.clip is not None:
            np.clip(x, *self.clip, out=x)
        x = (x - self.mean) * self.inv_std
        x[np.broadcast_to(~valid[:, None], x.shape)] = 0.0
        return x
