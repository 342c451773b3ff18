"""SOLOv2 training targets and loss (Wang et al. 2020, section 3 and 4).

Each object is assigned to the FPN levels whose scale range holds its scale
(``sqrt(box height x box width)`` px); on each such level's ``S x S`` grid the
cells of its *centre region* are positive: the box around the mask's centre of
mass scaled by ``sigma = 0.2``, at most one cell away from the centre's cell
(as the authors' code does). A positive cell learns the object's class
(sigmoid focal loss over all cells) and a kernel whose dynamic convolution of
the mask features gives the object's mask (Dice loss on the positives). Where
two objects claim a cell the later one keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from geoseg.models.dense_instance import dice_loss
from geoseg.models.solov2_post import dynamic_masks

__all__ = ["GridTargets", "centre_cells", "grid_targets", "solov2_loss"]

#: Centre-region scale of the paper (epsilon = 0.2).
CENTRE_SIGMA = 0.2


@dataclass(frozen=True)
class GridTargets:
    """The targets of one window, grid levels concatenated (row-major per level).

    Attributes:
        classes: ``(L,) int64`` thing index of each grid cell, -1 = none
            (``L = sum S_i^2``).
        positive: ``(P,) int64`` the cells with an object.
        masks: ``(P, H, W) bool`` each positive cell's object mask.
    """

    classes: np.ndarray
    positive: np.ndarray
    masks: np.ndarray


def centre_cells(mask: np.ndarray, grid: int, sigma: float = CENTRE_SIGMA) -> tuple[range, range]:
    """Rows and columns of the ``grid x grid`` cells of an object's centre region.

    Args:
        mask: ``(H, W) bool`` the object (not empty).
        grid: cells per side ``S``.
        sigma: centre region side / box side.
    """
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5  # pixel centres, px from the window corner
    half_h = sigma * (ys.max() - ys.min() + 1) / 2
    half_w = sigma * (xs.max() - xs.min() + 1) / 2
    row, col = int(cy / h * grid), int(cx / w * grid)
    top = max(0, int((cy - half_h) / h * grid), row - 1)
    down = min(grid - 1, int((cy + half_h) / h * grid), row + 1)
    left = max(0, int((cx - half_w) / w * grid), col - 1)
    right = min(grid - 1, int((cx + half_w) / w * grid), col + 1)
    return range(top, down + 1), range(left, right + 1)


def _scale(mask: np.ndarray) -> float:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return float(np.sqrt((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)))


def grid_targets(
    objects: Sequence[tuple[np.ndarray, int]],
    grids: Sequence[int],
    scale_ranges: Sequence[tuple[float, float]],
) -> GridTargets:
    """Category and mask targets of one window's objects.

    Args:
        objects: ``(mask (H, W) bool, thing index)`` of each object.
        grids: ``S`` of each level.
        scale_ranges: ``(low, high)`` object scale in px of each level, inclusive.

    Returns:
        :class:`GridTargets`; a cell claimed twice keeps the later object.
    """
    classes = [np.full(s * s, -1, np.int64) for s in grids]
    owner = [np.full(s * s, -1, np.int64) for s in grids]
    for k, (mask, thing) in enumerate(objects):
        if not mask.any():
            continue
        scale = _scale(mask)
        for level, (s, (low, high)) in enumerate(zip(grids, scale_ranges, strict=True)):
            if not low <= scale <= high:
                continue
            rows, cols = centre_cells(mask, s)
            cells = (np.array(rows)[:, None] * s + np.array(cols)[None, :]).ravel()
            classes[level][cells], owner[level][cells] = thing, k
    flat_owner = np.concatenate(owner)
    positive = np.flatnonzero(flat_owner >= 0)
    shape = objects[0][0].shape if objects else (0, 0)
    masks = np.zeros((len(positive), *shape), bool)
    for i, o in enumerate(flat_owner[positive]):
        masks[i] = objects[o][0]
    return GridTargets(np.concatenate(classes), positive, masks)


def solov2_loss(
    outputs: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor],
    targets: Sequence[GridTargets],
    dice_weight: float = 3.0,
) -> torch.Tensor:
    """Focal loss on the categories + ``dice_weight`` x Dice loss on the positives' masks.

    Args:
        outputs: the model's ``(cates, kernels, features)``: per level ``(B, C, S, S)``
            and ``(B, E, S, S)``, and ``(B, E, h, w)``.
        targets: one :class:`GridTargets` per window (masks at window size; they
            are averaged down to the feature grid).
        dice_weight: the paper's lambda (3).

    Returns:
        Scalar: focal loss summed over cells and classes / (positives + 1), plus
        the weighted mean Dice loss of the positives (0 without any).
    """
    cates, kernels, features = outputs
    flat_c = torch.cat([c.flatten(2) for c in cates], dim=2).transpose(1, 2).float()  # (B,L,C)
    flat_k = torch.cat([k.flatten(2) for k in kernels], dim=2).transpose(1, 2)  # (B, L, E)
    labels = torch.from_numpy(np.stack([t.classes for t in targets])).to(flat_c.device)
    onehot = F.one_hot(labels.clamp(min=0), flat_c.shape[-1]).float() * (labels >= 0)[..., None]
    positives = sum(len(t.positive) for t in targets)
    focal = sigmoid_focal_loss(flat_c, onehot, reduction="sum") / (positives + 1)
    dice = []
    for b, t in enumerate(targets):
        if not len(t.positive):
            continue
        pos = torch.from_numpy(t.positive).to(flat_c.device)
        probs = dynamic_masks(flat_k[b, pos], features[b]).float().sigmoid()
        truth = torch.from_numpy(t.masks).to(flat_c.device).float()[:, None]
        truth = F.adaptive_avg_pool2d(truth, (probs.shape[1], probs.shape[2]))[:, 0]
        dice.append(dice_loss(probs, truth))
    mask_loss = torch.cat(dice).mean() if dice else flat_c.sum() * 0
    return focal + dice_weight * mask_loss
