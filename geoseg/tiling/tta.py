"""Test-time augmentation: average a model's class probabilities over flips and rotations.

Each batch of windows ``(N, C, H, W)`` goes through the model once per transform of
the chosen set; each output ``(N, K, H', W')`` is mapped back by the inverse
transform and the K-class probabilities are averaged, in a fixed order, so the
result is still a probability per pixel and everything downstream (argmax,
confidence, ``--probabilities``, stitching) is unchanged. The wrapper only needs
the :class:`~geoseg.types.Predictor` protocol, so torch, ONNX and weights-free
predictors all get it. A transform is ``(k, flip)``: a flip of the columns (when
``flip``) followed by ``k`` quarter turns (``np.rot90`` in the ``(H, W)`` plane);
odd ``k`` swaps H and W, so the model must take a ``(W, H)`` window (the tiled
windows are square).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from geoseg.errors import GeosegError
from geoseg.types import ClassSchema, Predictor

__all__ = ["TTA_MODES", "TtaPredictor", "check_tta", "tta_loader", "tta_transforms"]

#: ``--tta`` values: no augmentation, the 4 flips (identity, horizontal, vertical,
#: both), or the 8 elements of the dihedral group D4 (4 rotations, each also flipped).
TTA_MODES = ("none", "flips", "d4")

#: ``(k, flip)`` of each mode, identity first.
_TRANSFORMS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    # horizontal flip; vertical flip = horizontal flip then a half turn; both = a half turn
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    "d4": tuple((k, flip) for k in range(4) for flip in (False, True)),
}


def check_tta(mode: str, option: str = "--tta") -> str:
    """``mode`` if it is one of :data:`TTA_MODES`.

    Raises:
        GeosegError: another value; the message names ``option`` and the valid ones.
    """
    if mode not in TTA_MODES:
        raise GeosegError(f"{option} must be one of {', '.join(TTA_MODES)}, not {mode!r}")
    return mode


def tta_transforms(mode: str) -> tuple[tuple[int, bool], ...]:
    """The ``(quarter turns, column flip)`` of each transform of ``mode``, identity first."""
    return _TRANSFORMS[check_tta(mode)]


def _forward(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """``x`` ``(..., H, W)`` flipped (columns) then turned ``k`` quarter turns, contiguous."""
    if flip:
        x = x[..., ::-1]
    return np.ascontiguousarray(np.rot90(x, k, axes=(-2, -1)))


def _inverse(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """The inverse of :func:`_forward`: ``k`` quarter turns back, then the flip."""
    x = np.rot90(x, -k, axes=(-2, -1))
    return x[..., ::-1] if flip else x


class TtaPredictor:
    """A :class:`~geoseg.types.Predictor` whose probabilities are the mean over transforms.

    Args:
        inner: the model; its ``predict`` is called once per transform.
        mode: one of :data:`TTA_MODES`.

    Attributes:
        schema, bands: the inner model's.
        fixed_batch: the inner model's (callers fill batches to one size when True).
    """

    def __init__(self, inner: Predictor, mode: str) -> None:
        self.inner = inner
        self.transforms = tta_transforms(mode)
        self.schema: ClassSchema = inner.schema
        self.bands: tuple[str, ...] = inner.bands
        self.fixed_batch: bool = bool(getattr(inner, "fixed_batch", False))

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Mean class probabilities ``(N, K, H, W) float32`` of raw windows ``(N, C, H, W)``
        with validity ``(N, H, W) bool``."""
        outs = (self._back(batch, valid, k, flip) for k, flip in self.transforms)
        total = next(outs).copy()  # the identity
        for prob in outs:
            total += prob
        return total / np.float32(len(self.transforms))

    def _back(self, batch: np.ndarray, valid: np.ndarray, k: int, flip: bool) -> np.ndarray:
        """The probabilities of the windows under ``(k, flip)``, mapped back."""
        prob = self.inner.predict(_forward(batch, k, flip), _forward(valid, k, flip))
        return _inverse(np.asarray(prob, np.float32), k, flip)


def _loaded(load: Callable[[], Predictor], mode: str) -> Predictor:
    return TtaPredictor(load(), mode)


def tta_loader(load: Callable[[], Predictor], mode: str) -> Callable[[], Predictor]:
    """``load`` (a picklable per-process model loader) with ``mode`` applied; ``load``
    itself for ``"none"`` (the model's own fast paths stay in use)."""
    if check_tta(mode) == "none":
        return load
    return functools.partial(_loaded, load, mode)
