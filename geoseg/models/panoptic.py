"""A Panoptic-DeepLab-style model on an smp encoder, its targets and its grouping.

One smp architecture (``unet``, ``deeplabv3plus``, ...) gives a shared encoder and
decoder; three heads on the decoder output predict, at input resolution:

- channels ``0..K-1``: semantic logits (softmax), channel ``k`` is ``schema.classes[k]``;
- channel ``K``: instance-centre heatmap logit (sigmoid, 1 at an object's centre);
- channels ``K+1, K+2``: centre offset ``(dy, dx)`` in pixels, ``centre - pixel``.

:func:`group_panoptic` (:mod:`geoseg.models.panoptic_grouping`) turns those fields
into a panoptic map of one window (Cheng et al. 2020): centres are local maxima of
the heatmap (max-pool NMS), and every thing pixel joins the centre nearest to
``pixel + offset``.
:class:`PanopticPredictor` exposes it to the stitcher as an
:class:`~geoseg.stitching.InstancePredictor` and, through ``predict``, as a
semantic :class:`~geoseg.types.Predictor` whose labels give the stuff classes.
Works with ``encoder_weights=None``.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from geoseg.errors import CheckpointError, GeosegError
from geoseg.models.instance import require_things
from geoseg.models.panoptic_grouping import PanopticGrouping, find_centres, group_panoptic
from geoseg.models.registry import build_model
from geoseg.models.runtime import TorchModel, load_module, resolve_device
from geoseg.stitching.protocol import WindowInstances
from geoseg.types import ModelMeta

__all__ = [
    "PANOPTIC_ARCH",
    "PanopticDeepLab",
    "PanopticGrouping",
    "PanopticPredictor",
    "build_panoptic_model",
    "find_centres",
    "group_panoptic",
    "load_panoptic_predictor",
    "panoptic_loss",
    "panoptic_model",
    "panoptic_targets",
]

#: ``ModelMeta.arch`` of these models; ``options["body"]`` names the smp architecture
#: (default ``unet``), the other options go to its builder.
PANOPTIC_ARCH = "panoptic-deeplab"


class PanopticDeepLab(nn.Module):
    """Shared smp encoder-decoder with semantic, centre and offset heads.

    Args:
        base: an smp model (``encoder``, ``decoder``, ``segmentation_head``) built
            with ``classes=K``; its segmentation head becomes the semantic head.

    ``forward``: ``(N, C, H, W) float32`` normalized input -> ``(N, K + 3, H, W)``:
    ``K`` semantic logits, 1 centre logit, offsets ``(dy, dx)`` in px.
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        head = getattr(base, "segmentation_head", None)
        if not isinstance(head, nn.Sequential) or not isinstance(head[0], nn.Conv2d):
            raise GeosegError(
                f"{type(base).__name__} has no smp segmentation head; build the panoptic "
                "model on unet, unetplusplus, deeplabv3plus, fpn or pspnet"
            )
        self.base = base
        conv, upsample = head[0], head[1]
        self.centre_head = nn.Sequential(_head_conv(conv, 1), upsample)
        self.offset_head = nn.Sequential(_head_conv(conv, 2), upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base: Any = self.base  # an smp model: typed attributes torch cannot express
        base.check_input_shape(x)
        decoded = base.decoder(base.encoder(x))
        heads = (base.segmentation_head, self.centre_head, self.offset_head)
        return torch.cat([h(decoded) for h in heads], dim=1)


def _head_conv(like: nn.Conv2d, out_channels: int) -> nn.Conv2d:
    kernel = int(like.kernel_size[0])
    return nn.Conv2d(like.in_channels, out_channels, kernel, padding=kernel // 2)


def build_panoptic_model(
    arch: str, encoder: str | None, in_channels: int, num_classes: int, **options: Any
) -> PanopticDeepLab:
    """An untrained :class:`PanopticDeepLab` on smp architecture ``arch``.

    Args:
        arch: smp registry name, e.g. ``"unet"`` or ``"deeplabv3plus"``.
        encoder: smp encoder, e.g. ``"resnet18"`` (None: ``resnet34``).
        in_channels: input bands.
        num_classes: ``K`` semantic classes (stuff and things).
        **options: extra smp builder arguments (``encoder_depth``, ...).
    """
    return PanopticDeepLab(build_model(arch, encoder, in_channels, num_classes, **options))


def panoptic_model(meta: ModelMeta) -> PanopticDeepLab:
    """The untrained model a checkpoint's metadata describes (``options["body"]``: smp arch)."""
    options = dict(meta.options)
    body = str(options.pop("body", "unet"))
    return build_panoptic_model(body, meta.encoder, len(meta.bands), len(meta.schema), **options)


def panoptic_targets(
    instance_ids: np.ndarray,
    class_map: np.ndarray,
    things: Collection[int],
    sigma_px: float = 8.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Centre heatmap and offset training targets of one labelled window.

    An instance is the set of pixels of one id > 0 whose class is a thing; its
    centre is its centre of mass rounded to the nearest pixel (halves round up),
    so that ``pixel + offset`` lands exactly on the heatmap's peak.

    Args:
        instance_ids: ``(H, W)`` integer instance ids, 0 = none.
        class_map: ``(H, W)`` integer class ids (``ClassInfo.id``).
        things: class ids that are things; ids on other pixels are ignored.
        sigma_px: standard deviation of each centre's Gaussian, px.

    Returns:
        ``centre (H, W) float32`` in ``[0, 1]``: the max over instances of
        ``exp(-d² / (2 sigma²))``, ``d`` the distance in px to the centre (1 there);
        ``offset (2, H, W) float32``: ``(cy - y, cx - x)`` in px on thing pixels,
        0 elsewhere. The offset loss should be taken over thing pixels only.
    """
    if instance_ids.shape != class_map.shape:
        raise GeosegError(
            f"instance ids {instance_ids.shape} and classes {class_map.shape} differ in shape"
        )
    h, w = instance_ids.shape
    ids = np.where(np.isin(class_map, list(things)), instance_ids, 0).astype(np.int64)
    centre = np.zeros((h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    labels = np.unique(ids[ids > 0])
    if labels.size == 0:
        return centre, offset
    yy, xx = np.mgrid[:h, :w]
    for label, (cy, cx) in zip(labels, ndimage.center_of_mass(ids > 0, ids, labels), strict=True):
        ry, rx = np.floor(cy + 0.5), np.floor(cx + 0.5)
        gauss = np.exp(-((yy - ry) ** 2 + (xx - rx) ** 2) / (2.0 * sigma_px**2))
        np.maximum(centre, gauss.astype(np.float32), out=centre)
        mask = ids == label
        offset[0][mask] = ry - yy[mask]
        offset[1][mask] = rx - xx[mask]
    return centre, offset


def panoptic_loss(
    output: torch.Tensor,
    semantic: torch.Tensor,
    centre: torch.Tensor,
    offset: torch.Tensor,
    thing: torch.Tensor,
    weights: tuple[float, float, float] = (1.0, 200.0, 0.01),
) -> torch.Tensor:
    """Panoptic-DeepLab loss: cross-entropy + MSE on the heatmap + L1 on thing offsets.

    Args:
        output: ``(N, K + 3, H, W)`` model output.
        semantic: ``(N, H, W) int64`` class indices (channel numbers), 255 ignored.
        centre: ``(N, H, W) float32`` heatmap target (:func:`panoptic_targets`).
        offset: ``(N, 2, H, W) float32`` offset target, px.
        thing: ``(N, H, W) bool`` pixels whose offset is learned.
        weights: of the three terms (the paper's 1, 200, 0.01).

    Returns:
        The scalar loss.
    """
    k = output.shape[1] - 3
    ce = F.cross_entropy(output[:, :k], semantic, ignore_index=255)
    mse = F.mse_loss(torch.sigmoid(output[:, k]), centre)
    err = (output[:, k + 1 :] - offset).abs().sum(1)
    l1 = (err * thing).sum() / thing.sum().clamp(min=1)
    return weights[0] * ce + weights[1] * mse + weights[2] * l1


class PanopticPredictor(TorchModel):
    """A :class:`PanopticDeepLab` module with its metadata.

    It is both a semantic :class:`~geoseg.types.Predictor` (``predict``: the
    semantic head's probabilities, whose labels give the panoptic map's stuff) and
    an :class:`~geoseg.stitching.InstancePredictor` (``predict_instances``: the
    grouped things, classes as ``ClassInfo.id``), so the instance stitcher and
    :func:`~geoseg.stitching.panoptic_block` build scene panoptic rasters; as a
    :class:`~geoseg.stitching.SemanticInstancePredictor` it gives both from one
    forward pass (``predict_with_semantic``). Thing
    pixels of a window without any centre above ``threshold`` get no instance and
    end up void in the panoptic raster.

    Args:
        module: ``(N, C, H, W)`` normalized input -> ``(N, K + 3, H, W)``.
        meta: bands, normalization and classes (``is_thing`` marks things).
        device: where the module runs (autocast on CUDA).
        threshold, nms_kernel, top_k: centre search, see :func:`group_panoptic`.
        min_pixels: smallest instance kept, px.
        threads: torch intra-op threads per call on the CPU (None: torch's default).
    """

    def __init__(
        self,
        module: nn.Module,
        meta: ModelMeta,
        device: torch.device,
        threshold: float = 0.1,
        nms_kernel: int = 7,
        top_k: int = 200,
        min_pixels: int = 4,
        threads: int | None = None,
        precision: str = "auto",
    ) -> None:
        super().__init__(module, meta, device, threads, precision)
        self.threshold, self.nms_kernel, self.top_k = threshold, nms_kernel, top_k
        self.min_pixels = min_pixels
        self._things = [k for k, c in enumerate(meta.schema.classes) if c.is_thing]
        self._ids = np.array(meta.schema.ids, dtype=np.int64)

    def heads(self, batch: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(N, K, H, W)`` probabilities, ``(N, H, W)`` heatmap, ``(N, 2, H, W)`` offsets px."""
        out = self.outputs(batch, valid)
        k = len(self.schema)
        probs = torch.softmax(out[:, :k], dim=1).cpu().numpy()
        return probs, torch.sigmoid(out[:, k]).cpu().numpy(), out[:, k + 1 :].cpu().numpy()

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(N, K, H, W) float32`` semantic probabilities (the semantic contract)."""
        return self.heads(batch, valid)[0]

    def predict_panoptic(self, batch: np.ndarray, valid: np.ndarray) -> list[PanopticGrouping]:
        """The grouping of each window (channels, not class ids)."""
        return self._groupings(self.heads(batch, valid), valid)

    def predict_instances(self, batch: np.ndarray, valid: np.ndarray) -> list[WindowInstances]:
        return self._instances(self.predict_panoptic(batch, valid))

    def predict_with_semantic(
        self, batch: np.ndarray, valid: np.ndarray
    ) -> tuple[list[WindowInstances], np.ndarray]:
        """The instances and ``(N, H, W)`` argmax channel of :meth:`predict`, one forward pass."""
        heads = self.heads(batch, valid)
        return self._instances(self._groupings(heads, valid)), np.argmax(heads[0], axis=1)

    def _groupings(
        self, heads: tuple[np.ndarray, ...], valid: np.ndarray
    ) -> list[PanopticGrouping]:
        probs, centre, offset = heads
        return [
            group_panoptic(p, c, o, self._things, self.threshold, self.nms_kernel, self.top_k, v)
            for p, c, o, v in zip(probs, centre, offset, valid, strict=True)
        ]

    def _instances(self, groupings: list[PanopticGrouping]) -> list[WindowInstances]:
        out = []
        for g in groupings:
            ids = np.arange(1, len(g.classes) + 1)
            masks = g.instances[None] == ids[:, None, None]
            keep = masks.sum(axis=(1, 2)) >= self.min_pixels
            out.append((masks[keep], self._ids[g.classes[keep]], g.scores[keep]))
        return out


def load_panoptic_predictor(
    path: str | os.PathLike[str],
    device: str = "auto",
    scale: float | None = None,
    threads: int | None = None,
    precision: str = "auto",
) -> PanopticPredictor:
    """Build a ``panoptic`` checkpoint's :class:`PanopticDeepLab` and load its weights.

    Args:
        path: a checkpoint with ``meta.task == "panoptic"`` and ``meta.arch ==
            "panoptic-deeplab"``; its schema marks things with ``is_thing``.
        device: ``auto``, ``cpu`` or ``cuda``.
        scale: digital number -> model units, replacing the checkpoint's.
        threads: torch intra-op threads for each call (None: torch's default).
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16`` on the device.

    Raises:
        CheckpointError: another kind of checkpoint, no thing class, or weights
            that do not fit the architecture.
    """

    def build(meta: ModelMeta) -> nn.Module:
        if meta.task != "panoptic" or meta.arch != PANOPTIC_ARCH:
            raise CheckpointError(
                f"{path}: a {meta.task!r}/{meta.arch!r} checkpoint, not a {PANOPTIC_ARCH} "
                "model; use a checkpoint trained with `geoseg train --task panoptic`"
            )
        require_things(path, meta)
        return panoptic_model(meta)

    module, meta = load_module(path, build, scale)
    device_ = resolve_device(device)
    return PanopticPredictor(module, meta, device_, threads=threads, precision=precision)
