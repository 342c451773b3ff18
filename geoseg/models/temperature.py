"""The softmax temperature of a calibrated checkpoint, applied where probabilities are made.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks")
divides a model's logits ``z`` by one scalar ``T > 0`` before the softmax:
``softmax(z / T)``. ``T > 1`` softens overconfident probabilities, ``T < 1``
sharpens them; the argmax, and so the label map, is the same for every ``T``. The
fit is :mod:`geoseg.training.calibration`; ``T`` travels in
:attr:`geoseg.types.ModelMeta.temperature`.

A predictor that gives probabilities ``p`` rather than logits (an ensemble's mean,
an ONNX graph exported with its softmax) is tempered as ``softmax(log p / T)``: for
``p = softmax(z)``, ``log p = z - logsumexp(z)`` differs from ``z`` by a constant per
pixel, which the softmax ignores, so this is the same ``softmax(z / T)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # an ONNX model is tempered without torch
    import torch

__all__ = ["TINY", "temper_logits", "temper_probabilities", "temper_probability_array"]

#: Smallest probability taken to the log (float32's smallest normal number): a
#: probability that underflowed to 0 stays a finite, very negative log-probability.
TINY = float(np.finfo(np.float32).tiny)


def temper_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / T`` (the tensor itself when ``T == 1``, so uncalibrated output is unchanged)."""
    return logits if temperature == 1.0 else logits / temperature


def temper_probabilities(prob: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(N, K, ...)`` probabilities -> ``softmax(log p / T)`` over dim 1 (``p`` if ``T == 1``)."""
    if temperature == 1.0:
        return prob
    import torch

    return torch.softmax(torch.log(prob.clamp_min(TINY)) / temperature, dim=1)


def temper_probability_array(prob: np.ndarray, temperature: float) -> np.ndarray:
    """:func:`temper_probabilities` of a ``(N, K, ...) float32`` numpy array."""
    if temperature == 1.0:
        return prob
    z = np.log(np.maximum(prob, TINY)) / np.float32(temperature)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32, copy=False)
