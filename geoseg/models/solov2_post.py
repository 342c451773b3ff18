"""SOLOv2 inference on one window: thresholds, maskness rescoring, Matrix NMS, top-k.

Follows Wang et al. 2020 ("SOLOv2: Dynamic and Fast Instance Segmentation",
NeurIPS), section 4 and Algorithm 1: grid locations whose category score passes
a threshold (after a 2 x 2 local-maximum test, "point NMS") each give a mask by
dynamic convolution; the mask is thresholded at 0.5 and its score multiplied by
its *maskness* (mean foreground probability inside the mask); Matrix NMS then
decays every score by its overlap with the higher-scoring masks of its class,
all in one matrix product, and the best ``max_objects`` stay. Before rescoring,
each mask keeps only its connected component nearest the centre of the grid
cell that predicted it (the cell holding the object's centre, as the model is
trained): the dynamic kernel's mask covers the whole window, and a weak model's
other blobs elsewhere are not this object (see :mod:`geoseg.models.components`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geoseg.errors import GeosegError
from geoseg.models.components import nearest_components

__all__ = ["SOLOv2Thresholds", "cell_centres", "dynamic_masks", "matrix_nms", "window_objects"]


@dataclass(frozen=True)
class SOLOv2Thresholds:
    """Inference settings (checkpoint ``options`` of the same names override them).

    Attributes:
        score_threshold: category probability a grid location needs to give a mask.
        mask_threshold: mask probability above which a pixel is in the object.
        update_threshold: score an object needs after Matrix NMS to be kept.
        nms_pre: most candidates (by rescored score) that enter Matrix NMS.
        max_objects: most objects kept per window.
        nms_kernel: ``"gaussian"`` or ``"linear"`` decay (the paper's Eqn. 4).
        nms_sigma: the Gaussian's sigma as in the paper's Algorithm 1,
            ``exp(-(iou^2 - cmax^2) / sigma)`` (mmdetection's ``sigma=2.0`` is 1 / 0.5).
    """

    score_threshold: float = 0.1
    mask_threshold: float = 0.5
    update_threshold: float = 0.05
    nms_pre: int = 500
    max_objects: int = 100
    nms_kernel: str = "gaussian"
    nms_sigma: float = 0.5

    def __post_init__(self) -> None:
        if self.nms_kernel not in ("gaussian", "linear"):
            raise GeosegError(
                f"SOLOv2 nms_kernel must be 'gaussian' or 'linear', not {self.nms_kernel!r}"
            )


def matrix_nms(
    masks: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor,
    kernel: str = "gaussian",
    sigma: float = 0.5,
) -> torch.Tensor:
    """Matrix NMS (the paper's Algorithm 1, class-aware): every decayed score at once.

    Args:
        masks: ``(n, H, W) bool``, sorted by ``scores`` descending.
        labels: ``(n,) int`` classes; masks decay only masks of their own class.
        scores: ``(n,) float`` descending.
        kernel: ``"gaussian"``: ``f(iou) = exp(-iou^2 / sigma)``; ``"linear"``:
            ``f(iou) = 1 - iou``.
        sigma: the Gaussian's sigma.

    Returns:
        ``(n,) float`` scores times ``min_i f(iou_ij) / f(cmax_i)`` over the
        higher-scoring masks ``i`` of ``j``'s class, ``cmax_i`` being the largest
        IoU of ``i`` with a mask scoring above it (the best mask keeps its score).
    """
    n = len(scores)
    if n == 0:
        return scores
    flat = masks.reshape(n, -1).float()
    inter = flat @ flat.T
    area = flat.sum(dim=1).expand(n, n)
    iou = (inter / (area + area.T - inter).clamp(min=1)).triu(diagonal=1)
    same = (labels[:, None] == labels[None, :]).float().triu(diagonal=1)
    iou = iou * same
    cmax = iou.max(dim=0).values.expand(n, n).T  # row i: i's largest IoU with a better mask
    if kernel == "gaussian":
        decay = torch.exp(-(iou**2 - cmax**2) / sigma)
    elif kernel == "linear":
        decay = (1 - iou) / (1 - cmax).clamp(min=1e-6)
    else:
        raise GeosegError(f"Matrix NMS kernel must be 'gaussian' or 'linear', not {kernel!r}")
    return scores * decay.min(dim=0).values


def dynamic_masks(kernels: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Mask logits: a dynamic 1 x 1 convolution of the mask features with each kernel.

    Args:
        kernels: ``(n, E)`` one kernel per grid location.
        features: ``(E, h, w)`` unified mask features of the window (1/4 scale).

    Returns:
        ``(n, h, w)`` logits.
    """
    e, h, w = features.shape
    return (kernels @ features.reshape(e, h * w)).reshape(-1, h, w)


def _candidates(cates: list[torch.Tensor], threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat location and class of every local-maximum category score above ``threshold``.

    ``cates``: per level ``(C, S, S)`` logits. Returns ``(m,)`` location indices
    (levels concatenated, row-major) and ``(m,)`` class indices.
    """
    flat = []
    for c in cates:
        heat = c.sigmoid()[None]
        peak = F.max_pool2d(heat, 2, stride=1, padding=1)[..., :-1, :-1]
        flat.append((heat * (peak == heat))[0].flatten(1).T)  # (S*S, C)
    scores = torch.cat(flat)
    loc, cls = torch.nonzero(scores > threshold, as_tuple=True)
    return loc, cls


def cell_centres(cates: list[torch.Tensor], h: int, w: int) -> torch.Tensor:
    """``(L, 2)`` ``(y, x)`` centre of every grid cell (levels concatenated, row-major),
    in px of an ``h x w`` mask grid; ``cates``: per level ``(C, S, S)``."""
    centres = []
    for c in cates:
        rows, cols = c.shape[-2], c.shape[-1]
        ys = (torch.arange(rows, dtype=torch.float64) + 0.5) * (h / rows)
        xs = (torch.arange(cols, dtype=torch.float64) + 0.5) * (w / cols)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        centres.append(torch.stack([grid_y, grid_x], -1).reshape(-1, 2))
    return torch.cat(centres)


def _own_component(
    probs: torch.Tensor, binary: torch.Tensor, points: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks cut to their component nearest ``points`` (probabilities 0 elsewhere)."""
    kept = nearest_components(binary.cpu().numpy(), points.cpu().numpy())
    binary = torch.from_numpy(kept).to(binary.device)
    return probs * binary, binary


def window_objects(
    cates: list[torch.Tensor],
    kernels: list[torch.Tensor],
    features: torch.Tensor,
    settings: SOLOv2Thresholds,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The objects of one window.

    Args:
        cates: per level ``(C, S, S)`` category logits.
        kernels: per level ``(E, S, S)`` dynamic kernels.
        features: ``(E, h, w)`` mask features.
        settings: thresholds and NMS.

    Returns:
        ``masks (n, h, w)`` foreground probabilities (0 outside the mask's own
        component), ``classes (n,) int64`` thing indices and ``scores (n,)``, best first.
    """
    loc, cls = _candidates(cates, settings.score_threshold)
    flat_k = torch.cat([k.flatten(1).T for k in kernels])  # (L, E)
    flat_c = torch.cat([c.sigmoid().flatten(1).T for c in cates])  # (L, C)
    probs = dynamic_masks(flat_k[loc], features).sigmoid()
    binary = probs > settings.mask_threshold
    area = binary.sum(dim=(1, 2))
    keep = area > 0
    probs, binary, loc, cls = probs[keep], binary[keep], loc[keep], cls[keep]
    centres = cell_centres(cates, features.shape[-2], features.shape[-1])
    probs, binary = _own_component(probs, binary, centres[loc.cpu()])
    area = binary.sum(dim=(1, 2))
    maskness = (probs * binary).sum(dim=(1, 2)) / area.clamp(min=1)
    scores = flat_c[loc, cls] * maskness
    order = torch.argsort(scores, descending=True, stable=True)[: settings.nms_pre]
    decayed = matrix_nms(
        binary[order], cls[order], scores[order], settings.nms_kernel, settings.nms_sigma
    )
    kept = decayed >= settings.update_threshold
    best = torch.argsort(decayed[kept], descending=True, stable=True)[: settings.max_objects]
    pick = order[kept][best]
    return probs[pick], cls[pick], decayed[kept][best]
