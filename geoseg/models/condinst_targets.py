"""CondInst training targets and loss (Tian et al. 2020, with FCOS's assignment).

An object belongs to the FPN levels whose size range holds the longer side of
its box, px. On such a level, a head location is positive for it when it lies in
its box and within ``radius`` strides of its centre of mass (FCOS's centre
sampling). Boxes smaller than a stride are widened to one stride around their
centre first, so every object has at least one location (small buildings
would otherwise fall between the locations). A location claimed twice keeps
the smaller object, as FCOS does. Positives learn the object's class (sigmoid
focal loss over every location), their centerness (binary cross-entropy) and a
dynamic mask head whose mask matches the object's (Dice loss, at 1/4 of the
window's resolution as the authors' code; at most ``max_proposals`` positives
per window).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from geoseg.models.condinst_post import instance_mask_logits, level_locations
from geoseg.models.dense_instance import dice_loss

__all__ = ["LocationTargets", "condinst_loss", "location_targets"]

#: Centre sampling radius of FCOS, in strides.
CENTRE_RADIUS = 1.5


@dataclass(frozen=True)
class LocationTargets:
    """The targets of one window, levels concatenated (row-major per level).

    Attributes:
        classes: ``(L,) int64`` thing index of each location, -1 = background.
        positive: ``(P,) int64`` the locations with an object.
        owner: ``(P,) int64`` each positive's object (row of ``masks``).
        centerness: ``(P,) float32`` FCOS centerness of each positive in its box.
        masks: ``(K, H, W) bool`` the objects.
    """

    classes: np.ndarray
    positive: np.ndarray
    owner: np.ndarray
    centerness: np.ndarray
    masks: np.ndarray


def _box(mask: np.ndarray, stride: int) -> np.ndarray:
    """``(x0, y0, x1, y1)`` pixel-edge box of ``mask``, each side widened to >= ``stride``."""
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
    for lo, hi in ((0, 2), (1, 3)):
        grow = max(0.0, stride - (box[hi] - box[lo])) / 2
        box[lo], box[hi] = box[lo] - grow, box[hi] + grow
    return box


def _centerness(locs: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``(n,)`` FCOS centerness ``sqrt(min(l,r)/max(l,r) x min(t,b)/max(t,b))``.

    Distances are at least 1 px: a location on the box's left or top edge (inside
    the half-open box) is not scored zero.
    """
    left, top = locs[:, 0] - box[0], locs[:, 1] - box[1]
    right, bottom = box[2] - locs[:, 0], box[3] - locs[:, 1]
    lr = np.maximum(np.stack([left, right]), 1.0)
    tb = np.maximum(np.stack([top, bottom]), 1.0)
    return np.sqrt(lr.min(0) / lr.max(0) * tb.min(0) / tb.max(0)).astype(np.float32)


def location_targets(
    objects: Sequence[tuple[np.ndarray, int]],
    shapes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    size_ranges: Sequence[tuple[float, float]],
    radius: float = CENTRE_RADIUS,
) -> LocationTargets:
    """Class, centerness and mask targets of one window's objects.

    Args:
        objects: ``(mask (H, W) bool, thing index)`` of each object.
        shapes: ``(h, w)`` of each level's head output.
        strides: each level's stride, px.
        size_ranges: ``[low, high)`` of each level: longer box side, px.
        radius: centre sampling radius, strides.
    """
    locs_t, level_t = level_locations(shapes, strides)
    locs, level = locs_t.numpy().astype(np.float64), level_t.numpy()
    classes = np.full(len(locs), -1, np.int64)
    owner = np.full(len(locs), -1, np.int64)
    centre = np.zeros(len(locs), np.float32)
    kept = [(m, t) for m, t in objects if m.any()]
    for k in np.argsort([-int(m.sum()) for m, _ in kept], kind="stable"):  # smallest last
        mask, thing = kept[k]
        ys, xs = np.nonzero(mask)
        mass = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
        side = max(np.ptp(xs), np.ptp(ys)) + 1
        for s, (low, high) in zip(strides, size_ranges, strict=True):
            if not low <= side < high:
                continue
            box = _box(mask, s)
            near = np.abs(locs - mass).max(1) <= radius * s
            inside = (locs >= box[:2]).all(1) & (locs < box[2:]).all(1)
            hit = np.flatnonzero((level == s) & near & inside)
            classes[hit], owner[hit] = thing, k
            centre[hit] = _centerness(locs[hit], box)
    positive = np.flatnonzero(owner >= 0)
    shape = objects[0][0].shape if objects else (0, 0)
    masks = np.stack([m for m, _ in kept]) if kept else np.zeros((0, *shape), bool)
    return LocationTargets(classes, positive, owner[positive], centre[positive], masks)


def _mask_loss(
    outputs: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor],
    targets: Sequence[LocationTargets], strides: Sequence[int], feature_stride: int,
    channels: int, max_proposals: int,
) -> torch.Tensor | None:  # fmt: skip
    """Mean Dice loss of the positives' masks at 1/4 scale (None without positives)."""
    cls, _, params, features = outputs
    locs, level = level_locations(
        [(c.shape[-2], c.shape[-1]) for c in cls], strides, features.device
    )
    flat_p = torch.cat([p.flatten(2) for p in params], dim=2).transpose(1, 2)  # (B, L, P)
    dice = []
    for b, t in enumerate(targets):
        if not len(t.positive):
            continue
        pick = torch.randperm(len(t.positive))[:max_proposals]  # the authors' sampling
        pos = torch.from_numpy(t.positive)[pick].to(features.device)
        logits = instance_mask_logits(features[b].float(), flat_p[b, pos].float(), locs[pos],
                                      level[pos], feature_stride, channels)  # fmt: skip
        h, w = t.masks.shape[1] // 4, t.masks.shape[2] // 4
        logits = F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=False)
        truth = torch.from_numpy(t.masks[t.owner[pick.numpy()]]).to(features.device).float()
        truth = F.adaptive_avg_pool2d(truth[:, None], (h, w))[:, 0]
        dice.append(dice_loss(logits[0].sigmoid(), truth))
    return torch.cat(dice).mean() if dice else None


def condinst_loss(
    outputs: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor],
    targets: Sequence[LocationTargets], strides: Sequence[int], feature_stride: int,
    channels: int, dice_weight: float = 1.0, max_proposals: int = 500,
) -> torch.Tensor:  # fmt: skip
    """Focal loss on classes + centerness BCE + ``dice_weight`` x Dice loss on masks.

    Args:
        outputs: the model's ``(classes, centerness, params, features)``: per level
            ``(B, T, h, w)``, ``(B, 1, h, w)``, ``(B, P, h, w)``; ``(B, C, h', w')``.
        targets: one :class:`LocationTargets` per window.
        strides: the levels' strides; ``feature_stride`` the mask features', px.
        channels: hidden width of the dynamic head.
        dice_weight: weight of the mask loss.
        max_proposals: most positives per window whose masks are computed.

    Returns:
        Scalar: focal loss summed over locations and classes / max(positives, 1),
        plus the mean centerness BCE and the weighted mean Dice loss of the positives.
    """
    cls, ctr = outputs[0], outputs[1]
    flat_c = torch.cat([c.flatten(2) for c in cls], dim=2).transpose(1, 2).float()  # (B, L, T)
    flat_ctr = torch.cat([c.flatten(1) for c in ctr], dim=1).float()  # (B, L)
    labels = torch.from_numpy(np.stack([t.classes for t in targets])).to(flat_c.device)
    onehot = F.one_hot(labels.clamp(min=0), flat_c.shape[-1]).float() * (labels >= 0)[..., None]
    positives = sum(len(t.positive) for t in targets)
    loss = sigmoid_focal_loss(flat_c, onehot, reduction="sum") / max(positives, 1)
    if not positives:
        return loss
    windows = torch.cat([torch.full((len(t.positive),), b) for b, t in enumerate(targets)])
    pos = torch.from_numpy(np.concatenate([t.positive for t in targets]))
    truth = torch.from_numpy(np.concatenate([t.centerness for t in targets]))
    ctr_logits = flat_ctr[windows.to(flat_ctr.device), pos.to(flat_ctr.device)]
    loss = loss + F.binary_cross_entropy_with_logits(ctr_logits, truth.to(flat_ctr.device))
    dice = _mask_loss(outputs, targets, strides, feature_stride, channels, max_proposals)
    return loss + dice_weight * dice if dice is not None else loss
