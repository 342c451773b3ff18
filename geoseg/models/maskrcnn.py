"""torchvision Mask R-CNN for any number of bands behind the instance-window contract.

The backbone is a torchvision ResNet (``resnet18`` ... ``resnet101``, no weights,
trainable BatchNorm) whose first convolution takes ``in_channels`` bands, with an
FPN. torchvision's own input normalization is switched off (mean 0, std 1) because
geoseg normalizes with the checkpoint's statistics, and its resizing is pinned to
the window size, so windows go in at their native ground sample distance. Anchors
default to 8-128 px, one size per FPN level, for small objects such as buildings.

Labels: torchvision class ``j >= 1`` is the ``j``-th thing class of the schema
(schema order); 0 is background. :class:`MaskRCNNPredictor` maps them back to
``ClassInfo.id``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor as MaskHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from geoseg.errors import GeosegError, UnknownModelError
from geoseg.models.runtime import TorchModel, load_module, require_arch, resolve_device
from geoseg.stitching.protocol import WindowInstances
from geoseg.types import ClassSchema, ModelMeta

__all__ = [
    "BACKBONES",
    "DEFAULT_ANCHOR_SIZES",
    "MASKRCNN_ARCH",
    "MaskRCNNPredictor",
    "build_maskrcnn",
    "load_maskrcnn_predictor",
    "maskrcnn_model",
    "maskrcnn_targets",
    "resnet_fpn",
    "thing_ids",
]

#: ``ModelMeta.arch`` of these models (task ``instance``); ``encoder`` is the backbone
#: and ``options`` the other :func:`build_maskrcnn` arguments.
MASKRCNN_ARCH = "maskrcnn"

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")

#: Anchor side in px per FPN level (strides 4, 8, 16, 32, 64).
DEFAULT_ANCHOR_SIZES: tuple[int, ...] = (8, 16, 32, 64, 128)


def resnet_fpn(
    name: str, in_channels: int, fpn_channels: int, model: str = "Mask R-CNN"
) -> BackboneWithFPN:
    """An untrained ResNet-FPN (P2-P6, strides 4-64) whose stem takes ``in_channels`` bands.

    Args:
        name: one of :data:`BACKBONES`.
        in_channels: input bands.
        fpn_channels: FPN width.
        model: the model it serves, named when ``name`` is unknown.

    Raises:
        UnknownModelError: ``name`` is not in :data:`BACKBONES`.
    """
    if name not in BACKBONES:
        raise UnknownModelError(
            f"unknown {model} backbone {name!r}; choose one of {', '.join(BACKBONES)}"
        )
    resnet = getattr(torchvision.models, name)(weights=None)
    resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    stage2 = resnet.inplanes // 8  # 64 for basic blocks, 256 for bottlenecks
    return BackboneWithFPN(
        resnet,
        return_layers={f"layer{i}": str(i - 1) for i in range(1, 5)},
        in_channels_list=[stage2 * 2**i for i in range(4)],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def build_maskrcnn(
    in_channels: int,
    num_things: int,
    backbone: str = "resnet18",
    window: int = 256,
    anchor_sizes: Sequence[int] = DEFAULT_ANCHOR_SIZES,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    fpn_channels: int = 256,
    representation_size: int = 1024,
    **options: Any,
) -> MaskRCNN:
    """An untrained Mask R-CNN.

    Args:
        in_channels: input bands.
        num_things: thing classes; the model has ``num_things + 1`` (background).
        backbone: one of :data:`BACKBONES`.
        window: side in px images are resized to (use the tiling window: no resize).
        anchor_sizes: anchor side in px for each of the 5 FPN levels.
        aspect_ratios: height/width ratios of the anchors, same at every level.
        fpn_channels: FPN and mask-head width (torchvision: 256; smaller is lighter).
        representation_size: box-head MLP width (torchvision: 1024).
        **options: other :class:`~torchvision.models.detection.MaskRCNN` arguments,
            e.g. ``box_detections_per_img`` or ``rpn_post_nms_top_n_test``.

    Returns:
        In train mode ``model(images, targets)`` gives a dict of losses; in eval mode
        ``model(images)`` gives per image ``boxes (n, 4)`` px ``x0, y0, x1, y1``,
        ``labels (n,) int64``, ``scores (n,)`` and ``masks (n, 1, H, W)`` in ``[0, 1]``.
        ``images`` are ``(C, H, W) float32`` normalized tensors.
    """
    if len(anchor_sizes) != 5:
        raise GeosegError(f"give one anchor size per FPN level (5), got {list(anchor_sizes)}")
    if num_things < 1:
        raise GeosegError("Mask R-CNN needs at least one thing class (is_thing in the schema)")
    anchors = AnchorGenerator(
        sizes=tuple((int(s),) for s in anchor_sizes),
        aspect_ratios=(tuple(float(a) for a in aspect_ratios),) * 5,
    )
    n_classes = num_things + 1
    return MaskRCNN(
        resnet_fpn(backbone, in_channels, fpn_channels),
        min_size=window,
        max_size=window,
        image_mean=[0.0] * in_channels,
        image_std=[1.0] * in_channels,
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, n_classes),
        mask_head=MaskRCNNHeads(fpn_channels, (fpn_channels,) * 4, 1),
        mask_predictor=MaskHead(fpn_channels, fpn_channels, n_classes),
        **options,
    )


def maskrcnn_model(meta: ModelMeta) -> MaskRCNN:
    """The untrained Mask R-CNN a checkpoint's metadata describes (backbone = ``encoder``)."""
    things = len(thing_ids(meta.schema))
    options = {"window": meta.window, **meta.options}
    return build_maskrcnn(len(meta.bands), things, meta.encoder or "resnet18", **options)


def thing_ids(schema: ClassSchema) -> np.ndarray:
    """``(T,) int64`` class ids of the thing classes; torchvision label ``j`` is ``[j - 1]``."""
    return np.array([c.id for c in schema.classes if c.is_thing], dtype=np.int64)


def maskrcnn_targets(
    instance_ids: np.ndarray, class_map: np.ndarray, schema: ClassSchema
) -> dict[str, torch.Tensor]:
    """torchvision training target of one window from an instance id raster.

    Args:
        instance_ids: ``(H, W)`` integer ids, 0 = none.
        class_map: ``(H, W)`` class ids; an instance's class is the most common
            one under it; instances of stuff classes are left out.
        schema: which classes are things, and their order.

    Returns:
        ``boxes (n, 4) float32`` px ``x0, y0, x1, y1`` (``x1, y1`` one past the last
        pixel), ``labels (n,) int64`` in ``1..T`` and ``masks (n, H, W) uint8``.
    """
    things = thing_ids(schema)
    h, w = instance_ids.shape
    boxes, labels, masks = [], [], []
    for label in np.unique(instance_ids[instance_ids > 0]):
        mask = instance_ids == label
        cls = np.bincount(class_map[mask].astype(np.int64)).argmax()
        if cls not in things:
            continue
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        labels.append(int(np.flatnonzero(things == cls)[0]) + 1)
        masks.append(mask)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(np.array(masks, dtype=np.uint8).reshape(-1, h, w)),
    }


class MaskRCNNPredictor(TorchModel):
    """A Mask R-CNN module with its metadata, as an :class:`~geoseg.stitching.InstancePredictor`.

    Args:
        module: from :func:`build_maskrcnn`.
        meta: bands, normalization and classes (``is_thing`` in schema order gives
            the labels).
        device: where the module runs (autocast on CUDA).
        score_threshold: detections scoring less are dropped.
        mask_threshold: mask probability above which a pixel is in the instance.
        min_pixels: smallest instance kept, px.
        threads: torch intra-op threads per call on the CPU (None: torch's default).
    """

    def __init__(
        self,
        module: nn.Module,
        meta: ModelMeta,
        device: torch.device,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        min_pixels: int = 4,
        threads: int | None = None,
        precision: str = "auto",
    ) -> None:
        super().__init__(module, meta, device, threads, precision)
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.min_pixels = min_pixels
        self._things = thing_ids(meta.schema)

    def predict_instances(self, batch: np.ndarray, valid: np.ndarray) -> list[WindowInstances]:
        found = self._base.call(self._base.to_device(batch, valid), as_list=True)
        return [self._window(f, v) for f, v in zip(found, valid, strict=True)]

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Class probabilities from the detections (the semantic side of the predictor).

        A thing class's probability at a pixel is the highest ``score x mask
        probability`` of its detections there (kept detections only); the
        non-thing classes share the rest equally. Returns ``(N, K, H, W) float32``
        summing to 1 over ``K``.
        """
        return self._probabilities(self.predict_instances(batch, valid), batch.shape)

    def predict_with_semantic(
        self, batch: np.ndarray, valid: np.ndarray
    ) -> tuple[list[WindowInstances], np.ndarray]:
        """The instances and ``(N, H, W)`` argmax channel of :meth:`predict`, one forward pass."""
        found = self.predict_instances(batch, valid)
        return found, np.argmax(self._probabilities(found, batch.shape), axis=1)

    def _probabilities(self, found: list[WindowInstances], shape: tuple[int, ...]) -> np.ndarray:
        """:meth:`predict`'s ``(N, K, H, W)`` probabilities of the detections ``found``."""
        n, _, h, w = shape
        k = len(self.schema)
        out = np.zeros((n, k, h, w), np.float32)
        index = {c.id: i for i, c in enumerate(self.schema.classes)}
        stuff = [i for i, c in enumerate(self.schema.classes) if not c.is_thing]
        for b, (masks, classes, scores) in enumerate(found):
            for mask, cls, score in zip(masks, classes, scores, strict=True):
                channel = out[b, index[int(cls)]]
                np.maximum(channel, np.where(mask, score, 0.0), out=channel)
        total = out.sum(axis=1, keepdims=True)
        scale = np.where(total > 1, 1 / np.maximum(total, 1e-12), 1.0)
        out *= scale
        rest = np.clip(1 - out.sum(axis=1), 0, 1)
        if stuff:
            out[:, stuff] += rest[:, None] / len(stuff)
        else:
            out /= np.maximum(out.sum(axis=1, keepdims=True), 1e-12)
        return out

    def _window(self, found: dict[str, torch.Tensor], valid: np.ndarray) -> WindowInstances:
        scores = found["scores"].float().cpu().numpy()
        masks = (found["masks"][:, 0].float() > self.mask_threshold).cpu().numpy() & valid
        keep = (scores >= self.score_threshold) & (masks.sum(axis=(1, 2)) >= self.min_pixels)
        labels = found["labels"].cpu().numpy()[keep]
        return masks[keep], self._things[labels - 1], scores[keep].astype(np.float32)


def load_maskrcnn_predictor(
    path: str | os.PathLike[str],
    device: str = "auto",
    scale: float | None = None,
    threads: int | None = None,
    precision: str = "auto",
) -> MaskRCNNPredictor:
    """Build an ``instance``/``maskrcnn`` checkpoint's model and load its weights.

    Args:
        path: a checkpoint with ``meta.task == "instance"`` and ``meta.arch ==
            "maskrcnn"``; ``meta.encoder`` is the backbone (None: ``resnet18``),
            ``meta.options`` the other :func:`build_maskrcnn` arguments.
        device: ``auto``, ``cpu`` or ``cuda``.
        scale: digital number -> model units, replacing the checkpoint's.
        threads: torch intra-op threads for each call (None: torch's default).
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16`` on the device.

    Raises:
        CheckpointError: another kind of checkpoint, or weights that do not fit.
    """

    def build(meta: ModelMeta) -> nn.Module:
        require_arch(path, meta, "instance", MASKRCNN_ARCH, "Mask R-CNN")
        return maskrcnn_model(meta)

    module, meta = load_module(path, build, scale)
    device_ = resolve_device(device)
    return MaskRCNNPredictor(module, meta, device_, threads=threads, precision=precision)
