"""A light bottom-up instance model behind :class:`~geoseg.stitching.InstancePredictor`.

Any smp semantic architecture with one extra output channel: channels ``0..K-1``
are class logits (softmax), channel ``K`` a boundary logit (sigmoid). Grouping
(:func:`group_instances`) is plain image processing: for each thing class, the
pixels of that class away from boundaries are split into 8-connected components,
then every component grows back over the boundary pixels of its class that touch
it (one step of a label dilation). A component's score is the mean probability
of its class over its pixels. Works with ``encoder_weights=None``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from geoseg.errors import CheckpointError
from geoseg.models.registry import build_model
from geoseg.models.runtime import TorchModel, load_module, resolve_device
from geoseg.stitching.protocol import WindowInstances
from geoseg.types import ClassSchema, ModelMeta

__all__ = [
    "BottomUpInstancePredictor",
    "build_instance_model",
    "group_instances",
    "instance_model",
    "load_instance_predictor",
    "require_things",
]

_EIGHT = np.ones((3, 3), dtype=bool)


def build_instance_model(
    arch: str, encoder: str | None, in_channels: int, num_classes: int, **options: Any
) -> nn.Module:
    """An untrained semantic + boundary model: ``num_classes + 1`` output channels.

    ``options`` go to :func:`~geoseg.models.registry.build_model` (e.g.
    ``encoder_depth``), as a checkpoint's ``meta.options``.
    """
    return build_model(arch, encoder, in_channels, num_classes + 1, **options)


def instance_model(meta: ModelMeta) -> nn.Module:
    """The untrained ``K + 1``-channel module an ``instance`` checkpoint's metadata describes."""
    return build_instance_model(
        meta.arch, meta.encoder, len(meta.bands), len(meta.schema), **dict(meta.options)
    )


def group_instances(
    probs: np.ndarray,
    boundary: np.ndarray,
    valid: np.ndarray,
    schema: ClassSchema,
    min_pixels: int = 4,
) -> WindowInstances:
    """Instances of one window from class probabilities and a boundary map.

    Args:
        probs: ``(K, H, W) float32`` class probabilities, channel ``k`` is
            ``schema.classes[k]``.
        boundary: ``(H, W) float32`` boundary probability.
        valid: ``(H, W) bool``; nodata pixels belong to no instance.
        schema: classes; only ``is_thing`` ones become instances.
        min_pixels: smaller components are dropped as noise.

    Returns:
        ``masks (n, H, W) bool``, ``classes (n,) int64``, ``scores (n,) float32``.
    """
    best = np.argmax(probs, axis=0)
    masks, classes, scores = [], [], []
    for k, info in enumerate(schema.classes):
        if not info.is_thing:
            continue
        region = (best == k) & valid
        labels, n = ndimage.label(region & (boundary < 0.5), structure=_EIGHT)
        grown = ndimage.grey_dilation(labels, footprint=_EIGHT)
        labels = np.where((labels == 0) & region, grown, labels)
        for i in range(1, n + 1):
            mask = labels == i
            if np.count_nonzero(mask) < min_pixels:
                continue
            masks.append(mask)
            classes.append(info.id)
            scores.append(float(probs[k][mask].mean()))
    shape = (len(masks), *probs.shape[1:])
    return (
        np.array(masks, dtype=bool).reshape(shape),
        np.array(classes, dtype=np.int64),
        np.array(scores, dtype=np.float32),
    )


class BottomUpInstancePredictor(TorchModel):
    """A semantic + boundary torch module with its metadata.

    Args:
        module: ``(N, C, H, W)`` normalized input -> ``(N, K + 1, H, W)`` logits.
        meta: bands, normalization and classes (``is_thing`` marks instance classes).
        device: where the module runs (autocast on CUDA).
        min_pixels: smallest instance kept, px.
        threads: torch intra-op threads per call on the CPU (None: torch's default).
    """

    def __init__(
        self,
        module: nn.Module,
        meta: ModelMeta,
        device: torch.device,
        min_pixels: int = 4,
        threads: int | None = None,
        precision: str = "auto",
    ) -> None:
        super().__init__(module, meta, device, threads, precision)
        self.min_pixels = min_pixels

    def heads(self, batch: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, K, H, W)`` class probabilities and ``(N, H, W)`` boundary probability."""
        logits = self.outputs(batch, valid)
        k = len(self.schema)
        probs = torch.softmax(logits[:, :k], dim=1).cpu().numpy()
        return probs, torch.sigmoid(logits[:, k]).cpu().numpy()

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(N, K, H, W) float32`` class probabilities of the semantic head
        (:class:`~geoseg.types.Predictor`), e.g. for stuff classes or a semantic map."""
        return self.heads(batch, valid)[0]

    def predict_instances(self, batch: np.ndarray, valid: np.ndarray) -> list[WindowInstances]:
        return self._instances(*self.heads(batch, valid), valid)

    def predict_with_semantic(
        self, batch: np.ndarray, valid: np.ndarray
    ) -> tuple[list[WindowInstances], np.ndarray]:
        """The instances and ``(N, H, W)`` argmax channel of :meth:`predict`, one forward pass."""
        probs, boundary = self.heads(batch, valid)
        return self._instances(probs, boundary, valid), np.argmax(probs, axis=1)

    def _instances(
        self, probs: np.ndarray, boundary: np.ndarray, valid: np.ndarray
    ) -> list[WindowInstances]:
        return [
            group_instances(p, b, v, self.schema, self.min_pixels)
            for p, b, v in zip(probs, boundary, valid, strict=True)
        ]


def require_things(path: str | os.PathLike[str], meta: ModelMeta) -> None:
    """Refuse a checkpoint whose schema marks no class as a thing (it finds no objects)."""
    if not any(c.is_thing for c in meta.schema.classes):
        raise CheckpointError(
            f"{path}: no class of the {meta.task} model's schema has is_thing=true, so it "
            "can find no objects; re-save it with its object classes marked as things"
        )


def load_instance_predictor(
    path: str | os.PathLike[str],
    device: str = "auto",
    scale: float | None = None,
    threads: int | None = None,
    precision: str = "auto",
) -> BottomUpInstancePredictor:
    """Build an ``instance`` checkpoint's ``K + 1``-channel module and load its weights.

    Args:
        path: a checkpoint written by :func:`~geoseg.io.checkpoint.save_checkpoint`
            with ``meta.task == "instance"``; its schema marks things with ``is_thing``.
        device: ``auto``, ``cpu`` or ``cuda``.
        scale: digital number -> model units, replacing the checkpoint's.
        threads: torch intra-op threads for each call (None: torch's default).
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16`` on the device.

    Raises:
        CheckpointError: the file is not an instance checkpoint, has no thing class,
            or its weights do not fit the architecture.
    """

    def build(meta: ModelMeta) -> nn.Module:
        if meta.task != "instance":
            raise CheckpointError(
                f"{path}: a {meta.task!r} checkpoint, not an instance model; "
                "use a checkpoint trained with `geoseg train --task instance`"
            )
        require_things(path, meta)
        return instance_model(meta)

    module, meta = load_module(path, build, scale)
    device_ = resolve_device(device)
    return BottomUpInstancePredictor(module, meta, device_, threads=threads, precision=precision)
