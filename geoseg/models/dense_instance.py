"""Pieces shared by the proposal-free instance families, SOLOv2 and CondInst.

Both predict, at every location of a dense grid over FPN levels, thing-class
scores and the parameters of a small *dynamic* network that turns one set of
mask features (shared by the whole window) into that location's object mask.
Shared here: the GroupNorm convolution of their heads, the mask feature branch
that fuses FPN levels, the Dice loss, reading a checkpoint's build options, and
the predictor that turns a window's ``(mask probabilities, classes, scores)``
into the instance-window contract.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.errors import GeosegError
from geoseg.models.components import largest_components
from geoseg.models.maskrcnn import MaskRCNNPredictor
from geoseg.models.runtime import load_module, require_arch, resolve_device
from geoseg.stitching.protocol import WindowInstances
from geoseg.types import ModelMeta

__all__ = [
    "DenseInstancePredictor",
    "MaskFeatureBranch",
    "builder_options",
    "conv_gn",
    "dice_loss",
    "load_dense_predictor",
    "thing_count",
    "with_coords",
]

#: Window objects: ``masks (n, h, w)`` probabilities, ``classes (n,) int64`` thing
#: indices, ``scores (n,)``, best first.
Objects = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def conv_gn(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """Conv + GroupNorm + ReLU (GroupNorm: batch-independent, as in both papers)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(math.gcd(32, cout), cout),
        nn.ReLU(inplace=True),
    )


def with_coords(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W) -> (N, C + 2, H, W)``: x and y in ``[-1, 1]`` appended (CoordConv)."""
    n, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.cat([x, torch.stack([grid_x, grid_y]).expand(n, 2, h, w)], dim=1)


class MaskFeatureBranch(nn.Module):
    """Mask features: ``levels`` FPN maps -> ``(N, E, h, w)`` at the first one's scale.

    One conv per level (the coarsest with absolute coordinates if ``coords``),
    upsampled and summed, then a 1 x 1 conv (SOLOv2's unified mask feature
    branch; CondInst's mask branch fuses P3-P5 the same way, without coordinates:
    its masks are told where they are by relative ones).
    """

    def __init__(
        self, fpn_channels: int, mask_channels: int, levels: int = 4, coords: bool = True
    ) -> None:
        super().__init__()
        self.coords = coords
        extra = 2 if coords else 0
        self.levels = nn.ModuleList(
            conv_gn(fpn_channels + (extra if i == levels - 1 else 0), mask_channels)
            for i in range(levels)
        )
        self.out = conv_gn(mask_channels, mask_channels, kernel=1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        total = self.levels[0](feats[0])
        for i in range(1, len(self.levels)):
            last = self.coords and i == len(self.levels) - 1
            f = with_coords(feats[i]) if last else feats[i]
            total = total + F.interpolate(
                self.levels[i](f), size=size, mode="bilinear", align_corners=False
            )
        out: torch.Tensor = self.out(total)
        return out


def dice_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(P,)`` Dice loss ``1 - 2 sum(pq) / (sum p^2 + sum q^2)`` of ``(P, h, w)`` maps."""
    p, q = probs.flatten(1), target.flatten(1)
    return 1 - 2 * (p * q).sum(1) / ((p * p).sum(1) + (q * q).sum(1) + 1e-3)


def thing_count(meta: ModelMeta) -> int:
    """Thing classes of a checkpoint's schema (category channels)."""
    return sum(1 for c in meta.schema.classes if c.is_thing)


def builder_options(
    meta: ModelMeta, builder: Callable[..., nn.Module], skip: Collection[str], model: str
) -> dict[str, Any]:
    """``meta.options`` that go to ``builder``: all but ``skip`` (read elsewhere).

    Raises:
        GeosegError: an option neither ``builder`` nor ``skip`` knows; the message
            lists the valid ones.
    """
    options = {k: v for k, v in meta.options.items() if k not in skip}
    fixed = {"in_channels", "num_things", "backbone", "window"}
    known = set(inspect.signature(builder).parameters) - fixed
    unknown = sorted(set(options) - known)
    if unknown:
        raise GeosegError(
            f"unknown {model} options {unknown}; choose from {', '.join(sorted(known | set(skip)))}"
        )
    return options


class DenseInstancePredictor(MaskRCNNPredictor):
    """A proposal-free instance module with its metadata, as an ``InstancePredictor``.

    Subclasses name their inference settings (:attr:`settings_type`, a frozen
    dataclass with ``score_threshold`` and ``mask_threshold``; checkpoint options
    of the same names override them) and find one window's objects
    (:meth:`window_objects`). Class probabilities (:meth:`predict`) follow Mask
    R-CNN's rule from the detections.

    Args:
        module: the network.
        meta: bands, normalization, classes, options.
        device: where the module runs.
        min_pixels: smallest object kept, px.
        threads: torch intra-op threads per call on the CPU (None: torch's default).
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16``.
    """

    settings_type: ClassVar[type[Any]]

    def __init__(
        self, module: nn.Module, meta: ModelMeta, device: torch.device, min_pixels: int = 4,
        threads: int | None = None, precision: str = "auto",
    ) -> None:  # fmt: skip
        fields = self.settings_type.__dataclass_fields__
        self.settings = self.settings_type(**{k: v for k, v in meta.options.items() if k in fields})
        super().__init__(
            module, meta, device, self.settings.score_threshold, self.settings.mask_threshold,
            min_pixels, threads, precision,
        )  # fmt: skip

    def window_objects(self, outputs: Any, b: int, size: tuple[int, int]) -> Objects:
        """Window ``b``'s objects from the module's batch ``outputs`` (masks at any size)."""
        raise NotImplementedError

    def predict_instances(self, batch: np.ndarray, valid: np.ndarray) -> list[WindowInstances]:
        outputs = self._base.call(self._base.to_device(batch, valid))
        size = (int(batch.shape[-2]), int(batch.shape[-1]))
        out = []
        for b, v in enumerate(valid):
            probs, cls, scores = self.window_objects(outputs, b, size)
            masks = np.zeros((0, *size), bool)
            if len(probs):  # interpolate refuses an empty stack
                coarse = probs.shape[-2:] != size
                if coarse:
                    probs = F.interpolate(probs[None], size=size, mode="bilinear",
                                          align_corners=False)[0]  # fmt: skip
                masks = (probs > self.mask_threshold).cpu().numpy() & v
                if coarse:  # upsampling may cut a thin neck of the one component
                    masks = largest_components(masks)
            keep = masks.sum(axis=(1, 2)) >= self.min_pixels
            out.append((
                masks[keep], self._things[cls.cpu().numpy()[keep]],
                scores.float().cpu().numpy()[keep].astype(np.float32),
            ))  # fmt: skip
        return out


def load_dense_predictor(
    path: str | os.PathLike[str], arch: str, model: str,
    build: Callable[[ModelMeta], nn.Module], predictor: type[DenseInstancePredictor],
    device: str = "auto", scale: float | None = None, threads: int | None = None,
    precision: str = "auto",
) -> Any:  # fmt: skip
    """Build an ``instance``/``arch`` checkpoint's model, load its weights, wrap it.

    Raises:
        CheckpointError: another kind of checkpoint (``model`` names the expected
            one), or weights that do not fit.
    """

    def checked(meta: ModelMeta) -> nn.Module:
        require_arch(path, meta, "instance", arch, model)
        return build(meta)

    module, meta = load_module(path, checked, scale)
    return predictor(module, meta, resolve_device(device), threads=threads, precision=precision)
