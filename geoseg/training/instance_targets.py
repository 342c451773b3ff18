"""Per-pixel targets and loss of a bottom-up instance model (:mod:`geoseg.models.instance`).

Per pixel the model learns:

* the class: the instance's thing class on instance pixels, the schema's one
  stuff (background) class elsewhere;
* the boundary (:func:`boundary_target`): an instance pixel is a boundary pixel
  when one of its 4 neighbours inside the raster holds another id (another
  instance or no instance). Pixels on the raster edge are not boundary pixels
  because of the edge itself; background pixels are never boundary pixels.

Both travel through the semantic trainer's window sampler as one ``int64``
target, ``class index + K * boundary`` (255 = unlabelled), so class-balanced
sampling also draws windows around boundaries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.errors import GeosegError
from geoseg.types import NODATA_LABEL

__all__ = [
    "boundary_pos_weight",
    "boundary_target",
    "encode_targets",
    "instance_loss",
]


def boundary_target(ids: np.ndarray) -> np.ndarray:
    """``(H, W) bool``: instance pixels with a 4-neighbour of another id (0 included).

    Neighbours outside the array do not count, so an instance cut by the raster
    edge has no boundary along that edge.
    """
    out = np.zeros(ids.shape, bool)
    vertical = ids[1:, :] != ids[:-1, :]
    horizontal = ids[:, 1:] != ids[:, :-1]
    out[1:, :] |= vertical
    out[:-1, :] |= vertical
    out[:, 1:] |= horizontal
    out[:, :-1] |= horizontal
    return out & (ids > 0)


def encode_targets(class_index: np.ndarray, boundary: np.ndarray, k: int) -> np.ndarray:
    """``(H, W) int64`` sampler target ``class_index + k * boundary``; 255 stays 255.

    Args:
        class_index: ``(H, W)`` class index 0..k-1, 255 = unlabelled.
        boundary: ``(H, W) bool`` from :func:`boundary_target`.
        k: number of classes (``2 * k`` must stay below 255).
    """
    if 2 * k >= NODATA_LABEL:
        raise GeosegError(f"an instance model supports at most 127 classes, not {k}")
    c = class_index.astype(np.int64)
    return np.where(c == NODATA_LABEL, NODATA_LABEL, c + k * boundary.astype(np.int64))


def instance_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    k: int,
    pos_weight: float,
    dice: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Cross-entropy (+ Dice) on the ``k`` class channels + BCE on the boundary channel.

    Args:
        logits: ``(B, k + 1, W, W)``.
        target: ``(B, W, W) int64`` from :func:`encode_targets` (255 ignored).
        k: number of classes.
        pos_weight: BCE weight of boundary pixels (they are rare).
        dice: (class logits, class target) -> weighted Dice loss, or None.
    """
    labelled = target != NODATA_LABEL
    cls = torch.where(labelled, target % k, target)
    loss = F.cross_entropy(logits[:, :k].float(), cls, ignore_index=NODATA_LABEL)
    if dice is not None:
        loss = loss + dice(logits[:, :k], cls)
    edge = (target >= k) & labelled
    bce = F.binary_cross_entropy_with_logits(
        logits[:, k].float(), edge.float(), reduction="none",
        pos_weight=torch.tensor(pos_weight, device=logits.device),
    )  # fmt: skip
    return loss + (bce * labelled).sum() / labelled.sum().clamp(min=1)


def boundary_pos_weight(targets: Sequence[np.ndarray], k: int, cap: float = 5.0) -> float:
    """Labelled non-boundary / boundary pixels of the training targets, in ``[1, cap]``."""
    edge = sum(int(np.count_nonzero((t >= k) & (t != NODATA_LABEL))) for t in targets)
    other = sum(int(np.count_nonzero(t < k)) for t in targets)
    return float(np.clip(other / max(edge, 1), 1.0, cap))
