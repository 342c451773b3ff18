"""Mask2Former / MaskFormer / OneFormer objects: per-window instances for geoseg's stitcher.

A mask-query model gives, per window, ``Q`` queries, each with class
probabilities ``p_q`` (``K`` classes and a last "no object" entry) and mask logits
``m_q`` upsampled to the window. Two post-processings follow transformers' own
(``post_process_instance_segmentation`` / ``post_process_panoptic_segmentation``
of ``Mask2FormerImageProcessor``, same in ``MaskFormerImageProcessor``):

- ``instance`` (:func:`instance_segments`): the ``Q`` best (query, class) pairs by
  ``p_q(k)``; mask ``m_q > 0``; score ``p_q(k)`` x the mean ``sigmoid(m_q)`` over
  the mask; kept when the score is ``>= threshold``. Masks may overlap (the
  stitcher gives a pixel to the higher score).
- ``panoptic`` (:func:`panoptic_segments`): each query's best class, queries of
  "no object" or scoring ``<= threshold`` dropped; every pixel goes to the query
  of largest ``score x sigmoid(m_q)``; a query keeps its pixels only if they are
  more than ``overlap`` of its own ``score x sigmoid(m_q) >= mask_threshold`` area.
  Segments are disjoint.
- OneFormer ``instance`` (:func:`oneformer_instance_segments`): transformers'
  ``OneFormerImageProcessor`` rule, the best pairs competing as panoptic queries
  do (disjoint segments); its panoptic rule is the one above.

Deliberate differences from transformers: masks are upsampled once from the
model's resolution to the window (transformers detours through 384 x 384 for
Mask2Former); only thing classes (``is_thing``) become instances, stuff comes from
the semantic inference (:meth:`HFMaskPredictor.predict`) as for geoseg's other
panoptic models; masks are cut to the window's valid pixels and objects under
``min_pixels`` dropped; each connected component of a thing mask is an object
of its own, with the query's class and score (a query's mask covers the whole
window: a weak model's scattered blobs would chain across window seams as one
object, and "the largest" may be a mirror image in the window's reflect-padded
border; see :mod:`geoseg.models.components`); ties of the instance ranking go to
the lower (query, class) index instead of ``topk``'s unspecified order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from geoseg.errors import CheckpointError
from geoseg.models.components import split_components
from geoseg.models.hf import build_hf
from geoseg.models.runtime import TorchModel, load_module, resolve_device
from geoseg.stitching.protocol import WindowInstances
from geoseg.types import ModelMeta

__all__ = [
    "POSTPROCESS",
    "HFMaskPredictor",
    "instance_segments",
    "load_hf_mask_predictor",
    "oneformer_instance_segments",
    "panoptic_segments",
]

#: ``ModelMeta.options`` keys of the post-processing and their defaults (transformers').
POSTPROCESS: dict[str, float] = {
    "score_threshold": 0.5,
    "mask_threshold": 0.5,
    "overlap_threshold": 0.8,
    "min_pixels": 4,
}

#: Segments of one window: ``masks (n, H, W) bool``, ``channels (n,) int64`` (0..K-1),
#: ``scores (n,) float32``.
Segments = tuple[np.ndarray, np.ndarray, np.ndarray]


def instance_segments(probs: torch.Tensor, mask_logits: torch.Tensor, threshold: float) -> Segments:
    """transformers' instance post-processing of one window.

    Args:
        probs: ``(Q, K + 1)`` class probabilities of the queries (last: no object).
        mask_logits: ``(Q, H, W)`` mask logits at the window's size.
        threshold: smallest score kept.

    Returns:
        The kept (query, class) pairs in ranking order (score of the class, then
        index): masks ``m_q > 0``, class channels, scores ``p_q(k) x mean sigmoid``.
    """
    q, k = probs.shape[0], probs.shape[1] - 1
    flat = probs[:, :k].reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices[:q]
    query, channel = order // k, order % k
    logits = mask_logits[query]
    masks = logits > 0
    area = masks.flatten(1).sum(1)
    mean_prob = (logits.sigmoid() * masks).flatten(1).sum(1) / (area + 1e-6)
    scores = flat[order] * mean_prob
    keep = (area > 0) & (scores >= threshold)
    return _numpy(masks[keep], channel[keep], scores[keep])


def panoptic_segments(
    probs: torch.Tensor, mask_logits: torch.Tensor, threshold: float, mask_threshold: float,
    overlap: float,
) -> Segments:  # fmt: skip
    """transformers' panoptic post-processing of one window (no class fused).

    Args:
        probs: ``(Q, K + 1)`` class probabilities of the queries (last: no object).
        mask_logits: ``(Q, H, W)`` mask logits at the window's size.
        threshold: a query scoring ``<= threshold`` is dropped.
        mask_threshold: weighted mask probability of a query's own area.
        overlap: smallest share of its own area a query must win.

    Returns:
        Disjoint segments in query order (every class, stuff included).
    """
    k = probs.shape[1] - 1
    scores, channels = probs.max(-1)
    keep = (channels != k) & (scores > threshold)
    weighted = mask_logits[keep].sigmoid() * scores[keep][:, None, None]
    return _winners(weighted, channels[keep], scores[keep], mask_threshold, overlap)


def oneformer_instance_segments(
    probs: torch.Tensor, mask_logits: torch.Tensor, threshold: float, mask_threshold: float,
    overlap: float,
) -> Segments:  # fmt: skip
    """transformers' OneFormer instance post-processing of one window.

    ``OneFormerImageProcessor.post_process_instance_segmentation`` (its default
    ``is_demo``) differs from Mask2Former's: the ``Q`` best (query, class) pairs by
    ``p_q(k)`` (as :func:`instance_segments`) with ``p_q(k) > threshold`` compete for
    the pixels as panoptic queries do (:func:`panoptic_segments`), but weighted on
    ``p_q(k) x m_q``, the mask *logits* (transformers passes them, not their
    sigmoid); score ``p_q(k)``. Arguments as :func:`panoptic_segments`.

    Returns:
        Disjoint segments in ranking order.
    """
    q, k = probs.shape[0], probs.shape[1] - 1
    flat = probs[:, :k].reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices[:q]
    order = order[flat[order] > threshold]
    weighted = mask_logits[order // k] * flat[order][:, None, None]
    return _winners(weighted, order % k, flat[order], mask_threshold, overlap)


def _winners(
    weighted: torch.Tensor, channels: torch.Tensor, scores: torch.Tensor, mask_threshold: float,
    overlap: float,
) -> Segments:  # fmt: skip
    """transformers' ``compute_segments`` without fusion: every pixel to the segment of
    largest ``weighted`` ``(n, H, W)``; a segment kept if it wins more than ``overlap``
    of its own ``weighted >= mask_threshold`` area."""
    if weighted.shape[0] == 0:
        return _numpy(weighted > 1, channels, scores)
    winner = weighted.argmax(0)
    masks = winner[None] == torch.arange(weighted.shape[0])[:, None, None]
    area = masks.flatten(1).sum(1)
    own = (weighted >= mask_threshold).flatten(1).sum(1)
    # transformers compares the float32 ratio, as a Python float, with ``overlap``
    ratio = (area / own.clamp(min=1)).double()
    ok = (area > 0) & (own > 0) & (ratio > overlap)
    return _numpy(masks[ok], channels[ok], scores[ok])


def _numpy(masks: torch.Tensor, channels: torch.Tensor, scores: torch.Tensor) -> Segments:
    return (
        masks.cpu().numpy().astype(bool),
        channels.cpu().numpy().astype(np.int64),
        scores.float().cpu().numpy().astype(np.float32),
    )


class HFMaskPredictor(TorchModel):
    """An imported Mask2Former / MaskFormer as an :class:`~geoseg.stitching.InstancePredictor`.

    Also a semantic :class:`~geoseg.types.Predictor` (``predict``: the models'
    semantic inference), whose labels give a panoptic map's stuff, from the same forward
    pass as the instances with ``predict_with_semantic``. The checkpoint's
    task picks the post-processing: ``instance`` or ``panoptic`` (module docstring).

    Args:
        module: :class:`~geoseg.models.hf.MaskQueries`-like: ``(N, C, H, W)`` ->
            ``(probs (N, Q, K + 1), mask logits (N, Q, H, W))``.
        meta: bands, normalization, classes (``is_thing``), task and, in
            ``options``, the :data:`POSTPROCESS` values.
        device: where the module runs.
        threads: torch intra-op threads per call on the CPU (None: torch's default).
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16``.
    """

    def __init__(
        self, module: torch.nn.Module, meta: ModelMeta, device: torch.device,
        threads: int | None = None, precision: str = "auto",
    ) -> None:  # fmt: skip
        super().__init__(module, meta, device, threads, precision)
        opts = {key: float(meta.options.get(key, v)) for key, v in POSTPROCESS.items()}
        self.score_threshold = opts["score_threshold"]
        self.mask_threshold = opts["mask_threshold"]
        self.overlap_threshold = opts["overlap_threshold"]
        self.min_pixels = int(opts["min_pixels"])
        self.panoptic = meta.task == "panoptic"
        self.oneformer = meta.arch == "hf-oneformer"
        self._ids = np.array(meta.schema.ids, dtype=np.int64)
        self._things = np.array([c.is_thing for c in meta.schema.classes], dtype=bool)

    def queries(self, batch: np.ndarray, valid: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, Q, K + 1)`` probabilities and ``(N, Q, H, W)`` mask logits, float32.

        On the CPU each window runs alone, so a window's result does not depend on
        the batch it came in (see :class:`~geoseg.models.hf.HFPredictor`).
        """
        x = self._base.to_device(batch, valid)
        single = self._base.device.type != "cuda" and len(x) > 1
        parts: list[Any] = [self._base.call(x[i : i + 1]) for i in range(len(x))] if single else [
            self._base.call(x)
        ]  # fmt: skip
        return torch.cat([p[0] for p in parts]).float(), torch.cat([p[1] for p in parts]).float()

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(N, K, H, W) float32`` class probabilities: ``s_k / sum s``,
        ``s_k = sum_q p_q(k) sigmoid(m_q)`` (as :class:`~geoseg.models.hf.MaskClassifier`)."""
        return self._semantic(*self.queries(batch, valid))

    def predict_instances(self, batch: np.ndarray, valid: np.ndarray) -> list[WindowInstances]:
        probs, masks = self.queries(batch, valid)
        return [self._window(p, m, v) for p, m, v in zip(probs, masks, valid, strict=True)]

    def predict_with_semantic(
        self, batch: np.ndarray, valid: np.ndarray
    ) -> tuple[list[WindowInstances], np.ndarray]:
        """The instances and ``(N, H, W)`` argmax channel of :meth:`predict`, one forward pass."""
        probs, masks = self.queries(batch, valid)
        found = [self._window(p, m, v) for p, m, v in zip(probs, masks, valid, strict=True)]
        return found, np.argmax(self._semantic(probs, masks), axis=1)

    @staticmethod
    def _semantic(probs: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
        s = torch.einsum("nqk,nqhw->nkhw", probs[..., :-1], masks.sigmoid()).clamp(min=1e-6)
        return (s / s.sum(dim=1, keepdim=True)).cpu().numpy()

    def _window(self, probs: torch.Tensor, logits: torch.Tensor, valid: np.ndarray) -> Any:
        if self.panoptic:
            segs = panoptic_segments(
                probs, logits, self.score_threshold, self.mask_threshold, self.overlap_threshold
            )
        elif self.oneformer:
            segs = oneformer_instance_segments(
                probs, logits, self.score_threshold, self.mask_threshold, self.overlap_threshold
            )
        else:
            segs = instance_segments(probs, logits, self.score_threshold)
        masks, channels, scores = segs
        things = self._things[channels]
        masks, source = split_components(masks[things] & valid)
        channels, scores = channels[things][source], scores[things][source]
        keep = masks.sum(axis=(1, 2)) >= self.min_pixels
        return masks[keep], self._ids[channels[keep]], scores[keep]


def load_hf_mask_predictor(
    path: str | os.PathLike[str], device: str = "auto", scale: float | None = None,
    threads: int | None = None, precision: str = "auto",
    build: Callable[[ModelMeta], torch.nn.Module] = build_hf,
) -> HFMaskPredictor:  # fmt: skip
    """The predictor of an imported ``instance``/``panoptic`` checkpoint (arguments as
    :func:`~geoseg.models.runtime.load_torch_predictor`; ``build``: the module of its
    metadata, e.g. a trained Mask2Former's).

    Raises:
        CheckpointError: no class is a thing, or weights that do not fit.
    """
    module, meta = load_module(path, build, scale)
    if not any(c.is_thing for c in meta.schema.classes):
        raise CheckpointError(
            f"{path}: no class of the {meta.task} model's schema has is_thing=true, so it "
            "can find no objects; re-import it with --things"
        )
    return HFMaskPredictor(module, meta, resolve_device(device), threads, precision)
