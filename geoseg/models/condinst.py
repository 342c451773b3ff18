"""CondInst for any number of bands behind the instance-window contract.

Tian, Shen and Chen 2020, "Conditional Convolutions for Instance Segmentation"
(ECCV), written compactly on torchvision parts (no package provides it for this
torch):

* a torchvision ResNet (no weights, trainable BatchNorm) whose first convolution
  takes ``in_channels`` bands, with an FPN (the builder Mask R-CNN and SOLOv2 use);
* FCOS-style heads shared over P3-P5 (strides 8-32): a classification tower
  (thing logits, focal loss) and a second tower giving each location's
  centerness and, through the *controller*, the parameters of its dynamic mask
  head (169 for 8 mask channels);
* a mask branch fusing P3-P5 into 8 channels at stride 8 (option ``mask_stride``
  4: P2-P4, for objects of a few pixels);
* each object's mask is its dynamic head run on the mask features plus the
  coordinates relative to its location (:mod:`geoseg.models.condinst_post`;
  targets and loss: :mod:`geoseg.models.condinst_targets`).

Departures: no box regression (duplicates are removed by NMS on the boxes of the
masks, which needs none), heads narrower and shallower than the paper's
(options), level size ranges halved for satellite objects. Labels: thing index
``j`` is the ``j``-th thing class of the schema.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN

from geoseg.errors import GeosegError
from geoseg.models.condinst_post import CondInstThresholds, dynamic_param_count, window_objects
from geoseg.models.dense_instance import (
    DenseInstancePredictor,
    MaskFeatureBranch,
    builder_options,
    conv_gn,
    load_dense_predictor,
    thing_count,
)
from geoseg.models.maskrcnn import BACKBONES, resnet_fpn
from geoseg.types import ModelMeta

__all__ = [
    "BACKBONES",
    "CONDINST_ARCH",
    "DEFAULT_SIZE_RANGES",
    "HEAD_STRIDES",
    "CondInst",
    "CondInstPredictor",
    "build_condinst",
    "condinst_model",
    "load_condinst_predictor",
    "size_ranges",
]

#: ``ModelMeta.arch`` of these models (task ``instance``).
CONDINST_ARCH = "condinst"

#: Strides of the head levels P3-P5, px (P6 of a small window is one pixel, too
#: little for GroupNorm when training).
HEAD_STRIDES: tuple[int, ...] = (8, 16, 32)

#: ``[low, high)`` longer box side, px, of each head level: half of FCOS's ranges.
DEFAULT_SIZE_RANGES: tuple[tuple[float, float], ...] = (
    (0, 64), (64, 128), (128, math.inf),
)  # fmt: skip


class CondInst(nn.Module):
    """The network; ``forward(x)`` -> ``(classes, centerness, params, features)``.

    ``x``: ``(N, C, H, W)`` normalized, ``H, W`` multiples of 32. Per head level
    ``(N, T, h, w)`` thing logits, ``(N, 1, h, w)`` centerness logits and
    ``(N, P, h, w)`` dynamic parameters; ``(N, E, H / s, W / s)`` mask features
    (``s`` = :attr:`mask_stride`).
    """

    def __init__(
        self, backbone: BackboneWithFPN, num_things: int, fpn_channels: int,
        head_channels: int, head_convs: int, branch_channels: int, mask_channels: int,
        dynamic_channels: int, mask_stride: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.mask_stride = mask_stride
        self.dynamic_channels = dynamic_channels
        params = dynamic_param_count(mask_channels + 2, dynamic_channels)

        def tower() -> nn.Sequential:
            return nn.Sequential(
                *(conv_gn(fpn_channels if i == 0 else head_channels, head_channels)
                  for i in range(head_convs))
            )  # fmt: skip

        self.cls_tower, self.ctr_tower = tower(), tower()
        self.cls_out = nn.Conv2d(head_channels, num_things, 3, padding=1)
        self.ctr_out = nn.Conv2d(head_channels, 1, 3, padding=1)
        self.controller = nn.Conv2d(head_channels, params, 3, padding=1)
        # class prior 0.01 (focal loss practice): background does not swamp early steps
        nn.init.constant_(self.cls_out.bias, -math.log((1 - 0.01) / 0.01))  # type: ignore[arg-type]
        nn.init.normal_(self.controller.weight, std=0.01)
        nn.init.zeros_(self.controller.bias)  # type: ignore[arg-type]
        self.mask_branch = MaskFeatureBranch(fpn_channels, branch_channels, levels=3, coords=False)
        self.mask_out = nn.Conv2d(branch_channels, mask_channels, 1)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        feats = list(self.backbone(x).values())  # P2..P6
        cls, ctr, params = [], [], []
        for f in feats[1 : 1 + len(HEAD_STRIDES)]:
            cls.append(self.cls_out(self.cls_tower(f)))
            t = self.ctr_tower(f)
            ctr.append(self.ctr_out(t))
            params.append(self.controller(t))
        first = 0 if self.mask_stride == 4 else 1
        return cls, ctr, params, self.mask_out(self.mask_branch(feats[first : first + 3]))


def build_condinst(
    in_channels: int,
    num_things: int,
    backbone: str = "resnet18",
    fpn_channels: int = 64,
    head_channels: int = 64,
    head_convs: int = 2,
    branch_channels: int = 64,
    mask_channels: int = 8,
    dynamic_channels: int = 8,
    mask_stride: int = 8,
) -> CondInst:
    """An untrained CondInst.

    Args:
        in_channels: input bands.
        num_things: thing classes.
        backbone: one of :data:`BACKBONES`.
        fpn_channels: FPN width (paper: 256).
        head_channels, head_convs: width and depth of the two towers (paper: 256, 4).
        branch_channels: width of the mask branch (paper: 128).
        mask_channels: mask feature channels fed to the dynamic head (paper: 8).
        dynamic_channels: hidden width of the dynamic head (paper: 8).
        mask_stride: 8 (P3-P5, the paper's) or 4 (P2-P4), px.
    """
    if num_things < 1:
        raise GeosegError("CondInst needs at least one thing class (is_thing in the schema)")
    if mask_stride not in (4, 8):
        raise GeosegError(f"CondInst mask_stride must be 4 or 8 px, not {mask_stride!r}")
    body = resnet_fpn(backbone, in_channels, fpn_channels, "CondInst")
    return CondInst(
        body, num_things, fpn_channels, head_channels, head_convs, branch_channels,
        mask_channels, dynamic_channels, mask_stride,
    )  # fmt: skip


#: ``ModelMeta.options`` read at inference (the rest go to :func:`build_condinst`).
_INFERENCE_OPTIONS = frozenset(CondInstThresholds.__dataclass_fields__)
#: ``ModelMeta.options`` read by training only.
_TRAINING_OPTIONS = frozenset({"size_ranges", "dice_weight", "max_proposals"})


def condinst_model(meta: ModelMeta) -> CondInst:
    """The untrained CondInst a checkpoint's metadata describes (backbone = ``encoder``)."""
    options = builder_options(
        meta, build_condinst, _INFERENCE_OPTIONS | _TRAINING_OPTIONS, "CondInst"
    )
    return build_condinst(len(meta.bands), thing_count(meta), meta.encoder or "resnet18",
                          **options)  # fmt: skip


class CondInstPredictor(DenseInstancePredictor):
    """A CondInst module with its metadata, as an :class:`~geoseg.stitching.InstancePredictor`.

    Inference settings come from :class:`CondInstThresholds`, each overridden by
    the checkpoint option of the same name (see :class:`DenseInstancePredictor`).
    """

    settings_type = CondInstThresholds

    def window_objects(
        self, outputs: tuple[list[torch.Tensor], ...], b: int, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        module: Any = self._base.module
        cls, ctr, params, features = outputs
        one = ([c[b].float() for c in cls], [c[b].float() for c in ctr],
               [p[b].float() for p in params], features[b].float())  # fmt: skip
        return window_objects(one, HEAD_STRIDES, module.mask_stride, module.dynamic_channels,
                              size, self.settings)  # fmt: skip


def load_condinst_predictor(
    path: str | os.PathLike[str],
    device: str = "auto",
    scale: float | None = None,
    threads: int | None = None,
    precision: str = "auto",
) -> CondInstPredictor:
    """Build an ``instance``/``condinst`` checkpoint's model and load its weights.

    Raises:
        CheckpointError: another kind of checkpoint, or weights that do not fit.
    """
    found: CondInstPredictor = load_dense_predictor(
        path, CONDINST_ARCH, "CondInst", condinst_model, CondInstPredictor, device, scale,
        threads, precision,
    )  # fmt: skip
    return found


def size_ranges(options: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    """The head levels' ``[low, high)`` box sides in px: option ``size_ranges`` (3 pairs)."""
    given: Sequence[Any] = options.get("size_ranges", DEFAULT_SIZE_RANGES)
    ranges = tuple((float(r[0]), float(r[1])) for r in given
                   if isinstance(r, (list, tuple)) and len(r) == 2)  # fmt: skip
    if (
        len(ranges) != len(HEAD_STRIDES)
        or len(given) != len(ranges)
        or any(low >= high for low, high in ranges)
    ):
        raise GeosegError(
            f"give CondInst {len(HEAD_STRIDES)} size ranges [low, high] in px "
            f"(longer box side), not {given}"
        )
    return ranges
