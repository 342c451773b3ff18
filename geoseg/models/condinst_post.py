"""CondInst's dynamic mask head and its inference on one window.

Tian, Shen and Chen 2020, "Conditional Convolutions for Instance Segmentation"
(ECCV), section 3: every location of the FCOS heads carries the parameters of a
tiny fully convolutional network (three 1 x 1 convolutions, 8 channels, ReLU
between them); run on the window's mask features with two more channels, the
coordinates of every mask-feature pixel *relative to that location*, it gives
the location's object mask. Inference scores every location and class
``sqrt(class x centerness)`` (FCOS's), keeps those above a threshold, computes
the best ``nms_pre`` masks at window resolution and removes duplicates by NMS on
the boxes of their masks (the paper's box NMS, without box regression). Before
NMS each mask keeps only its connected component nearest the location whose
dynamic head made it (the head sees the whole window; a weak one's blobs
elsewhere are not this object, see :mod:`geoseg.models.components`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, masks_to_boxes

from geoseg.models.components import nearest_components

__all__ = [
    "CondInstThresholds",
    "dynamic_mask_head",
    "dynamic_param_count",
    "instance_mask_logits",
    "level_locations",
    "relative_coords",
    "split_dynamic_params",
    "window_objects",
]

#: Size of interest of a level, in strides: relative coordinates are divided by it
#: (the paper's 64, 128, ... px for P3, P4, ...).
SOI_STRIDES = 8


@dataclass(frozen=True)
class CondInstThresholds:
    """Inference settings (checkpoint ``options`` of the same names override them).

    Attributes:
        score_threshold: score ``sqrt(class x centerness probability)`` a location
            needs to give a mask. 0.3, not the paper's 0.05 for ranked lists: the
            objects become a map, where a doubtful object would hide others.
        mask_threshold: mask probability above which a pixel is in the object.
        nms_iou: box IoU above which the lower-scoring of two same-class masks goes.
        nms_pre: most candidates (by score) whose masks are computed.
        max_objects: most objects kept per window.
    """

    score_threshold: float = 0.3
    mask_threshold: float = 0.5
    nms_iou: float = 0.6
    nms_pre: int = 100
    max_objects: int = 100


def dynamic_param_count(in_channels: int, channels: int) -> int:
    """Parameters of the 3-layer head on ``in_channels`` inputs (8 + 2, 8: 169)."""
    return (in_channels + 1) * channels + (channels + 1) * channels + channels + 1


def split_dynamic_params(
    params: torch.Tensor, in_channels: int, channels: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(n, P)`` flat parameters -> per layer ``weights (n, out, in)`` and ``biases (n, out)``.

    Order as the authors' code: the three weight matrices (row-major,
    ``out x in``), then the three bias vectors.
    """
    shapes = [(channels, in_channels), (channels, channels), (1, channels)]
    sizes = [o * i for o, i in shapes] + [o for o, _ in shapes]
    parts = torch.split(params, sizes, dim=1)
    n = len(params)
    return [(parts[k].reshape(n, o, i), parts[k + 3]) for k, (o, i) in enumerate(shapes)]


def dynamic_mask_head(inputs: torch.Tensor, params: torch.Tensor, channels: int) -> torch.Tensor:
    """Each instance's own 1 x 1 conv stack on its inputs.

    Args:
        inputs: ``(n, C_in, h, w)`` per instance (mask features + relative coordinates).
        params: ``(n, P)`` flat parameters (:func:`split_dynamic_params`).
        channels: width of the hidden layers.

    Returns:
        ``(n, h, w)`` mask logits.
    """
    n, cin, h, w = inputs.shape
    x = inputs.reshape(n, cin, h * w)
    layers = split_dynamic_params(params, cin, channels)
    for k, (weight, bias) in enumerate(layers):
        x = torch.baddbmm(bias[..., None], weight, x)
        if k < len(layers) - 1:
            x = F.relu(x)
    return x.reshape(n, h, w)


def relative_coords(locations: torch.Tensor, h: int, w: int, stride: int) -> torch.Tensor:
    """``(n, 2, h, w)``: location minus mask-feature pixel centre, (x, y), px.

    Args:
        locations: ``(n, 2)`` instance locations ``(x, y)``, px from the window corner.
        h, w: mask feature grid.
        stride: mask feature stride, px (pixel ``(i, j)`` is centred at
            ``(j + 1/2, i + 1/2) x stride``).
    """
    xs = (torch.arange(w, device=locations.device, dtype=locations.dtype) + 0.5) * stride
    ys = (torch.arange(h, device=locations.device, dtype=locations.dtype) + 0.5) * stride
    dx = locations[:, 0, None, None] - xs[None, None, :]
    dy = locations[:, 1, None, None] - ys[None, :, None]
    return torch.stack([dx.expand(-1, h, w), dy.expand(-1, h, w)], dim=1)


def instance_mask_logits(
    features: torch.Tensor, params: torch.Tensor, locations: torch.Tensor,
    strides: torch.Tensor, feature_stride: int, channels: int,
) -> torch.Tensor:  # fmt: skip
    """Mask logits of instances at the mask-feature resolution.

    Args:
        features: ``(C, h, w)`` the window's mask features.
        params: ``(n, P)`` each instance's dynamic parameters.
        locations: ``(n, 2)`` each instance's location ``(x, y)``, px.
        strides: ``(n,)`` the stride of each instance's level, px (sets its size of
            interest, ``8 x stride``).
        feature_stride: stride of ``features``, px.
        channels: hidden width of the dynamic head.

    Returns:
        ``(n, h, w)`` logits.
    """
    c, h, w = features.shape
    rel = relative_coords(locations, h, w, feature_stride)
    rel = rel / (SOI_STRIDES * strides.to(rel.dtype))[:, None, None, None]
    inputs = torch.cat([rel, features.expand(len(params), c, h, w)], dim=1)
    return dynamic_mask_head(inputs, params, channels)


def level_locations(
    shapes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every head location, levels concatenated (row-major per level).

    Returns:
        ``(L, 2) float32`` locations ``(x, y)`` in px (cell centres,
        ``(j + 1/2) x stride``) and ``(L,) int64`` their level's stride.
    """
    locs, level = [], []
    for (h, w), s in zip(shapes, strides, strict=True):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                indexing="ij")  # fmt: skip
        locs.append((torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s)
        level.append(torch.full((h * w,), s, dtype=torch.int64, device=device))
    return torch.cat(locs), torch.cat(level)


def window_objects(
    outputs: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor],
    strides: Sequence[int], feature_stride: int, channels: int, size: tuple[int, int],
    settings: CondInstThresholds,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The objects of one window.

    Args:
        outputs: per level ``(T, h, w)`` class logits, ``(1, h, w)`` centerness logits
            and ``(P, h, w)`` dynamic parameters; ``(C, h', w')`` mask features.
        strides: the levels' strides, px; ``feature_stride`` the mask features'.
        channels: hidden width of the dynamic head.
        size: the window ``(H, W)``, px: masks are upsampled to it.
        settings: thresholds and NMS.

    Returns:
        ``masks (n, H, W)`` probabilities (0 outside the mask's own component),
        ``classes (n,) int64`` thing indices and ``scores (n,)``, best first.
    """
    cls, ctr, params, features = outputs
    locs, level = level_locations(
        [(c.shape[-2], c.shape[-1]) for c in cls], strides, features.device
    )
    probs = torch.cat([c.flatten(1).T for c in cls]).sigmoid()  # (L, T)
    centre = torch.cat([c.flatten() for c in ctr]).sigmoid()
    flat_p = torch.cat([p.flatten(1).T for p in params])  # (L, P)
    every = (probs * centre[:, None]).sqrt()
    loc, cat = torch.nonzero(every > settings.score_threshold, as_tuple=True)
    scores = every[loc, cat]
    order = torch.argsort(scores, descending=True, stable=True)[: settings.nms_pre]
    loc, cat, scores = loc[order], cat[order], scores[order]
    if not len(loc):  # interpolate refuses an empty stack
        return features.new_zeros((0, *size)), cat, scores
    logits = instance_mask_logits(features, flat_p[loc], locs[loc], level[loc], feature_stride,
                                  channels)  # fmt: skip
    masks = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    masks = masks.sigmoid()
    binary = masks > settings.mask_threshold
    filled = binary.flatten(1).any(1)
    masks, binary, cat, scores = masks[filled], binary[filled], cat[filled], scores[filled]
    points = locs[loc[filled]].flip(-1)  # (x, y) -> (y, x), px of the window
    own = nearest_components(binary.cpu().numpy(), points.cpu().numpy())
    binary = torch.from_numpy(own).to(binary.device)
    masks = masks * binary
    boxes = masks_to_boxes(binary) + torch.tensor([0, 0, 1, 1], device=masks.device)  # px edges
    keep = batched_nms(boxes, scores, cat, settings.nms_iou)[: settings.max_objects]
    return masks[keep], cat[keep], scores[keep]
