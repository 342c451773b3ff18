"""SAM "segment everything": the objects of a window from a regular grid of point prompts.

This is SAM's ``SamAutomaticMaskGenerator`` on one crop (the window), with its
default settings: a ``points_per_side x points_per_side`` grid of single positive
points (cell centres) is decoded against the window's image embedding, computed
once, ``points_per_batch`` points at a time, each point giving SAM's three
candidate masks (logit > 0). A candidate is kept when its predicted IoU is
``> pred_iou_thresh`` and its stability score (IoU of the mask at logit
``+offset`` and at ``-offset``) is ``>= stability_thresh``; then non-maximum
suppression on the masks' bounding boxes (box IoU > ``box_nms_thresh``, the higher
predicted IoU wins) removes duplicates within the window. Masks are cut to the
window's valid pixels; grid points on nodata are not asked.

Objects found here are one window's; the instance stitcher
(:mod:`geoseg.stitching`) keeps those whose box centre lies in the window's core
and joins the pieces of larger objects across window and chunk seams, as for any
instance model. Differences from SAM by design: no multi-crop layers and no
small-region post-processing (SAM's defaults turn both off), and the point grid
lies on the window, so objects smaller than the grid spacing
(``window / points_per_side`` px) may be missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision.ops import batched_nms

from geoseg.errors import CheckpointError, GeosegError
from geoseg.stitching.protocol import WindowInstances
from geoseg.types import ClassSchema

if TYPE_CHECKING:
    from geoseg.models.sam import SamPrompter

__all__ = [
    "BOX_NMS_THRESH",
    "OBJECT_CLASS",
    "POINTS_PER_BATCH",
    "POINTS_PER_SIDE",
    "PRED_IOU_THRESH",
    "STABILITY_OFFSET",
    "STABILITY_THRESH",
    "EverythingPredictor",
    "EverythingSettings",
    "everything_predictor",
    "mask_boxes",
    "nms_keep",
    "point_grid",
    "quality_keep",
    "segment_everything",
    "stability_scores",
    "window_objects",
]

#: Points per window side (SAM's default ``points_per_side=32`` is for 1024 px crops;
#: 16 keeps the decoder's work a quarter of it, one point every ``window / 16`` px).
POINTS_PER_SIDE = 16
#: Points decoded per decoder call (SAM's ``points_per_batch`` is 64; the 3 masks of a
#: point come back to the host as 1024 x 1024 float32 logits, 12 MB, so 16 keep a call
#: at 200 MB).
POINTS_PER_BATCH = 16
#: A mask is kept only if its predicted IoU is above this (SAM's ``pred_iou_thresh``).
PRED_IOU_THRESH = 0.88
#: ... and its stability score at least this (SAM's ``stability_score_thresh``).
STABILITY_THRESH = 0.95
#: Logit offset of the stability score (SAM's ``stability_score_offset``).
STABILITY_OFFSET = 1.0
#: Box IoU above which the lower-scored of two masks is dropped (SAM's ``box_nms_thresh``).
BOX_NMS_THRESH = 0.7
#: Class id of every object (``SAM_SCHEMA``'s ``object``).
OBJECT_CLASS = 1


@dataclass(frozen=True)
class EverythingSettings:
    """How a window is segmented (defaults: the constants above, SAM's own)."""

    points_per_side: int = POINTS_PER_SIDE
    points_per_batch: int = POINTS_PER_BATCH
    pred_iou_thresh: float = PRED_IOU_THRESH
    stability_thresh: float = STABILITY_THRESH
    stability_offset: float = STABILITY_OFFSET
    box_nms_thresh: float = BOX_NMS_THRESH

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise GeosegError(
                f"points per side ({self.points_per_side}) and per batch "
                f"({self.points_per_batch}) must be at least 1"
            )


def point_grid(points_per_side: int, size: int) -> np.ndarray:
    """``(n * n, 2) float64`` ``(x, y)`` cell centres of an ``n x n`` grid on a ``size`` px window.

    Coordinates are continuous px (pixel ``i`` covers ``[i, i + 1)``), row-major
    (``y`` slowest), as SAM's ``build_point_grid`` scaled to the window.
    """
    n = points_per_side
    axis = (np.arange(n) + 0.5) * (size / n)
    ys, xs = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def stability_scores(logits: np.ndarray, offset: float = STABILITY_OFFSET) -> np.ndarray:
    """``(K,) float32`` IoU of each mask at logit ``> +offset`` and at ``> -offset``.

    Args:
        logits: ``(K, H, W)`` mask logits. A mask with no pixel above ``-offset`` scores 0.
    """
    inner = (logits > offset).sum(axis=(1, 2), dtype=np.int64)
    outer = (logits > -offset).sum(axis=(1, 2), dtype=np.int64)
    return np.where(outer > 0, inner / np.maximum(outer, 1), 0.0).astype(np.float32)


def quality_keep(
    scores: np.ndarray, stability: np.ndarray, settings: EverythingSettings
) -> np.ndarray:
    """``(K,) bool``: predicted IoU ``> pred_iou_thresh`` and stability ``>= stability_thresh``
    (SAM's comparisons)."""
    return (scores > settings.pred_iou_thresh) & (stability >= settings.stability_thresh)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """``(K, 4) float32`` ``(x0, y0, x1, y1)`` of ``(K, H, W) bool`` masks, max inclusive
    (SAM's ``batched_mask_to_box``); an empty mask gives ``(0, 0, 0, 0)``."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if rows.size:
            boxes[k] = cols[0], rows[0], cols[-1], rows[-1]
    return boxes


def nms_keep(masks: np.ndarray, scores: np.ndarray, iou: float = BOX_NMS_THRESH) -> np.ndarray:
    """Indices of the masks box NMS keeps, highest score first (torchvision ``batched_nms``).

    Args:
        masks: ``(K, H, W) bool``.
        scores: ``(K,)`` predicted IoU; of two masks whose boxes overlap with IoU > ``iou``
            the lower-scored one is dropped.
    """
    if len(masks) == 0:
        return np.zeros(0, np.int64)
    keep = batched_nms(
        torch.from_numpy(mask_boxes(masks)), torch.as_tensor(scores, dtype=torch.float32),
        torch.zeros(len(masks), dtype=torch.int64), iou,
    )  # fmt: skip
    return keep.numpy().astype(np.int64)


def window_objects(
    prompter: SamPrompter, embedding: torch.Tensor, valid: np.ndarray, settings: EverythingSettings
) -> WindowInstances:
    """The objects SAM finds in one encoded window.

    Args:
        prompter: the loaded SAM (its :meth:`~geoseg.models.sam.SamPrompter.decode`).
        embedding: ``(D, h, w)`` the window's image embedding.
        valid: ``(S, S) bool`` the window's valid pixels (``S`` the encoder's input side).

    Returns:
        ``masks (n, S, S) bool`` cut to ``valid``, ``classes (n,)`` all
        :data:`OBJECT_CLASS`, ``scores (n,) float32`` predicted IoU; NMS order.
    """
    size = valid.shape[0]
    grid = point_grid(settings.points_per_side, size)
    cells = np.minimum(grid.astype(np.int64), size - 1)
    grid = grid[valid[cells[:, 1], cells[:, 0]]]
    masks, scores = [np.zeros((0, size, size), bool)], [np.zeros(0, np.float32)]
    for start in range(0, len(grid), settings.points_per_batch):
        points = grid[start : start + settings.points_per_batch]
        decoded = prompter.decode(
            embedding, points=points[:, None, :], labels=np.ones((len(points), 1), np.int64),
            keep="all",
        )  # fmt: skip
        logits = decoded.logits.reshape(-1, size, size)
        found = decoded.scores.reshape(-1).astype(np.float32)
        ok = quality_keep(found, stability_scores(logits, settings.stability_offset), settings)
        masks.append((logits[ok] > 0) & valid)
        scores.append(found[ok])
    all_masks, all_scores = np.concatenate(masks), np.concatenate(scores)
    seen = all_masks.any(axis=(1, 2))
    all_masks, all_scores = all_masks[seen], all_scores[seen]
    keep = nms_keep(all_masks, all_scores, settings.box_nms_thresh)
    return all_masks[keep], np.full(len(keep), OBJECT_CLASS, np.int64), all_scores[keep]


def segment_everything(
    prompter: SamPrompter, batch: np.ndarray, valid: np.ndarray, settings: EverythingSettings
) -> list[WindowInstances]:
    """The objects of each window of a batch (an :class:`~geoseg.stitching.InstancePredictor`'s
    ``predict_instances``): each window is encoded once, then decoded point batch by batch.

    Args:
        batch: ``(N, C, S, S) float32`` band values as stored; ``S`` must be the encoder's side.
        valid: ``(N, S, S) bool``.

    Raises:
        CheckpointError: the windows are not the encoder's input size.
    """
    if batch.shape[-1] != prompter.size or batch.shape[-2] != prompter.size:
        raise CheckpointError(
            f"SAM segments windows of its encoder's input side ({prompter.size} px), not "
            f"{batch.shape[-2]} x {batch.shape[-1]}; leave --window out"
        )
    embeddings = prompter.encode(batch, valid)
    return [
        window_objects(prompter, embeddings[i], np.asarray(valid[i], bool), settings)
        for i in range(len(batch))
    ]


class EverythingPredictor:
    """A loaded SAM segmenting everything with other settings than its defaults.

    An :class:`~geoseg.stitching.InstancePredictor`; the prompter (cached per
    process) is shared, only the settings differ.

    Attributes:
        prompter, settings: the SAM and how it segments a window.
        schema, bands: the checkpoint's (``object`` = :data:`OBJECT_CLASS`).
    """

    def __init__(self, prompter: SamPrompter, settings: EverythingSettings) -> None:
        self.prompter, self.settings = prompter, settings
        self.schema: ClassSchema = prompter.schema
        self.bands: tuple[str, ...] = prompter.bands

    def predict_instances(self, batch: np.ndarray, valid: np.ndarray) -> list[WindowInstances]:
        """:func:`segment_everything` of ``batch`` ``(N, C, S, S)`` with these settings."""
        return segment_everything(self.prompter, batch, valid, self.settings)


def everything_predictor(model: object, points_per_side: int) -> EverythingPredictor:
    """``model`` (a loaded SAM) segmenting everything with ``points_per_side`` points.

    Raises:
        CheckpointError: ``model`` is not a SAM.
        GeosegError: ``points_per_side`` < 1.
    """
    from geoseg.models.sam import SamPrompter

    if not isinstance(model, SamPrompter):
        raise CheckpointError("--points-per-side applies to SAM checkpoints (segment everything)")
    return EverythingPredictor(model, EverythingSettings(points_per_side=points_per_side))
