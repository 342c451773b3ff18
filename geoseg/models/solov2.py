"""SOLOv2 for any number of bands behind the instance-window contract.

Wang et al. 2020, "SOLOv2: Dynamic and Fast Instance Segmentation" (NeurIPS),
written compactly on torchvision parts (no package provides it for this torch):

* a torchvision ResNet (no weights, trainable BatchNorm) whose first convolution
  takes ``in_channels`` bands, with an FPN: P2-P6 (strides 4-64);
* per level ``i`` the FPN map is resized to an ``S_i x S_i`` grid; a shared
  *category branch* gives ``(C, S, S)`` thing logits and a shared *kernel branch*
  (input + normalized x, y coordinates, "CoordConv") ``(E, S, S)`` dynamic 1 x 1
  kernels;
* a *mask feature branch* fuses P2-P5 at 1/4 scale (one conv per level, P5 with
  coordinates, upsampled and summed, then a 1 x 1 conv) into ``E`` channels;
* an object's mask is the dynamic convolution of the mask features with the
  kernel of a grid cell it owns (targets and loss:
  :mod:`geoseg.models.solov2_targets`; inference: :mod:`geoseg.models.solov2_post`).

Departures, for small windows of satellite images: grids default to the paper's
``(40, 36, 24, 16, 12)`` scaled by ``window / 512`` and scale ranges to half the
paper's (objects of a few to a few hundred px); heads are narrower and shallower
(options). Labels: thing index ``j`` is the ``j``-th thing class of the schema.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN

from geoseg.errors import GeosegError
from geoseg.models.dense_instance import (
    DenseInstancePredictor,
    MaskFeatureBranch,
    builder_options,
    conv_gn,
    load_dense_predictor,
    thing_count,
    with_coords,
)
from geoseg.models.maskrcnn import BACKBONES, resnet_fpn
from geoseg.models.solov2_post import SOLOv2Thresholds, window_objects
from geoseg.types import ModelMeta

__all__ = [
    "BACKBONES",
    "DEFAULT_SCALE_RANGES",
    "PAPER_GRIDS",
    "SOLOV2_ARCH",
    "SOLOv2",
    "SOLOv2Predictor",
    "build_solov2",
    "default_grids",
    "load_solov2_predictor",
    "scale_ranges",
    "solov2_model",
]

#: ``ModelMeta.arch`` of these models (task ``instance``).
SOLOV2_ARCH = "solov2"


#: Grid cells per side of the paper's five levels (for 800-1333 px images).
PAPER_GRIDS: tuple[int, ...] = (40, 36, 24, 16, 12)

#: Object scale ``sqrt(box area)`` in px of each level: half the paper's ranges.
DEFAULT_SCALE_RANGES: tuple[tuple[float, float], ...] = (
    (1, 48), (24, 96), (48, 192), (96, 384), (192, 4096),
)  # fmt: skip


def default_grids(window: int) -> tuple[int, ...]:
    """:data:`PAPER_GRIDS` scaled by ``window / 512``, at least 2 cells per side."""
    return tuple(max(2, round(g * window / 512)) for g in PAPER_GRIDS)


class SOLOv2(nn.Module):
    """The network; ``forward(x)`` -> ``(cates, kernels, features)``.

    ``x``: ``(N, C, H, W)`` normalized, ``H, W`` multiples of 32. ``cates``: per
    level ``(N, T, S, S)`` thing logits; ``kernels``: per level ``(N, E, S, S)``;
    ``features``: ``(N, E, H/4, W/4)``.
    """

    def __init__(
        self, backbone: BackboneWithFPN, num_things: int, grids: Sequence[int],
        fpn_channels: int, head_channels: int, head_convs: int, mask_channels: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.grids = tuple(int(g) for g in grids)

        def stack(cin: int) -> nn.Sequential:
            return nn.Sequential(
                *(conv_gn(cin if i == 0 else head_channels, head_channels)
                  for i in range(head_convs))
            )  # fmt: skip

        self.cate_convs = stack(fpn_channels)
        self.kernel_convs = stack(fpn_channels + 2)
        self.cate_out = nn.Conv2d(head_channels, num_things, 3, padding=1)
        self.kernel_out = nn.Conv2d(head_channels, mask_channels, 3, padding=1)
        # category prior 0.01 (focal loss practice): background does not swamp early steps
        prior = -math.log((1 - 0.01) / 0.01)
        nn.init.constant_(self.cate_out.bias, prior)  # type: ignore[arg-type]
        nn.init.normal_(self.kernel_out.weight, std=0.01)
        self.mask_branch = MaskFeatureBranch(fpn_channels, mask_channels)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        feats = list(self.backbone(x).values())  # P2..P6
        cates, kernels = [], []
        for f, s in zip(feats, self.grids, strict=True):
            g = F.interpolate(f, size=(s, s), mode="bilinear", align_corners=False)
            kernels.append(self.kernel_out(self.kernel_convs(with_coords(g))))
            cates.append(self.cate_out(self.cate_convs(g)))
        return cates, kernels, self.mask_branch(feats[:4])


def build_solov2(
    in_channels: int,
    num_things: int,
    backbone: str = "resnet18",
    window: int = 256,
    grids: Sequence[int] | None = None,
    fpn_channels: int = 64,
    head_channels: int = 128,
    head_convs: int = 3,
    mask_channels: int = 64,
) -> SOLOv2:
    """An untrained SOLOv2.

    Args:
        in_channels: input bands.
        num_things: thing classes (category channels).
        backbone: one of :data:`BACKBONES`.
        window: training window side, px (sets the default grids).
        grids: cells per side of the 5 levels (None: :func:`default_grids`).
        fpn_channels: FPN width (paper: 256).
        head_channels, head_convs: width and depth of the category and kernel
            branches (paper: 512 and 4).
        mask_channels: ``E``, mask feature channels = dynamic kernel length (paper: 256).
    """
    grids = tuple(grids) if grids is not None else default_grids(window)
    if len(grids) != 5 or min(grids) < 1:
        raise GeosegError(f"give SOLOv2 5 grid sizes of at least 1 (one per level), not {grids}")
    if num_things < 1:
        raise GeosegError("SOLOv2 needs at least one thing class (is_thing in the schema)")
    body = resnet_fpn(backbone, in_channels, fpn_channels, "SOLOv2")
    return SOLOv2(body, num_things, grids, fpn_channels, head_channels, head_convs, mask_channels)


#: ``ModelMeta.options`` read at inference (the rest go to :func:`build_solov2`).
_INFERENCE_OPTIONS = frozenset(SOLOv2Thresholds.__dataclass_fields__)
#: ``ModelMeta.options`` read by training only.
_TRAINING_OPTIONS = frozenset({"scale_ranges", "dice_weight"})


def solov2_model(meta: ModelMeta) -> SOLOv2:
    """The untrained SOLOv2 a checkpoint's metadata describes (backbone = ``encoder``)."""
    skip = _INFERENCE_OPTIONS | _TRAINING_OPTIONS
    options = builder_options(meta, build_solov2, skip, "SOLOv2")
    return build_solov2(
        len(meta.bands), thing_count(meta), meta.encoder or "resnet18",
        **{"window": meta.window, **options},
    )  # fmt: skip


class SOLOv2Predictor(DenseInstancePredictor):
    """A SOLOv2 module with its metadata, as an :class:`~geoseg.stitching.InstancePredictor`.

    Inference settings come from :class:`SOLOv2Thresholds`, each overridden by the
    checkpoint option of the same name (see :class:`DenseInstancePredictor`).
    """

    settings_type = SOLOv2Thresholds

    def window_objects(
        self, outputs: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor], b: int,
        size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        cates, kernels, features = outputs
        return window_objects(
            [c[b].float() for c in cates], [k[b].float() for k in kernels],
            features[b].float(), self.settings,
        )  # fmt: skip


def load_solov2_predictor(
    path: str | os.PathLike[str],
    device: str = "auto",
    scale: float | None = None,
    threads: int | None = None,
    precision: str = "auto",
) -> SOLOv2Predictor:
    """Build an ``instance``/``solov2`` checkpoint's model and load its weights.

    Raises:
        CheckpointError: another kind of checkpoint, or weights that do not fit.
    """
    found: SOLOv2Predictor = load_dense_predictor(
        path, SOLOV2_ARCH, "SOLOv2", solov2_model, SOLOv2Predictor, device, scale, threads,
        precision,
    )  # fmt: skip
    return found


def scale_ranges(options: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    """The levels' object scale ranges in px: option ``scale_ranges`` (5 ``[low, high]``)."""
    given = options.get("scale_ranges", DEFAULT_SCALE_RANGES)
    ranges = tuple((float(r[0]), float(r[1])) for r in given if len(r) == 2)
    if len(ranges) != 5 or len(given) != 5 or any(low > high for low, high in ranges):
        raise GeosegError(f"give SOLOv2 5 scale ranges [low, high] in px, not {given}")
    return ranges
