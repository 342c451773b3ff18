"""The SAM runtime: encode windows once, decode any number of point/box prompts on them.

An imported SAM checkpoint carries the folder's ``config.json`` (as
``ModelMeta.options["hf_config"]``) and the ``SamModel`` weights as ordinary
tensors, so the file's digest and strict key/shape checks cover them like any
geoseg checkpoint. The model is rebuilt from the config with ``transformers``
(imported only here, when a model is built; nothing is ever downloaded).

Coordinates given to :meth:`SamPrompter.decode` are in the encoder's input
frame: ``(x, y)`` in pixels of the ``size x size`` window, pixel ``i`` covering
``[i, i + 1)`` (SAM adds half a pixel to integer pixel indices, so a continuous
coordinate ``c`` is passed as ``c - 0.5``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from geoseg.errors import CheckpointError
from geoseg.models.families.sam import ARCH, MODEL_TYPE
from geoseg.models.runtime import TorchPredictor, load_module, resolve_device
from geoseg.models.sam_everything import EverythingSettings, segment_everything
from geoseg.stitching.protocol import WindowInstances
from geoseg.types import ClassSchema, ModelMeta

__all__ = [
    "PAD_LABEL",
    "Decoded",
    "SamPrompter",
    "build_sam",
    "load_sam",
    "sam_config",
    "stored_config",
]

#: Label of a padding point (SAM ignores it): prompts with fewer points are padded with it.
PAD_LABEL = -10


@dataclass(frozen=True)
class Decoded:
    """What SAM gives for ``P`` prompts on one window.

    Attributes:
        logits: ``(P, M, S, S) float32`` mask logits at the encoder's input size ``S``
            (``M`` = 1 with ``keep="best"``, else SAM's 3 candidates).
        scores: ``(P, M) float32`` predicted IoU of each mask.
    """

    logits: np.ndarray
    scores: np.ndarray


def sam_config(config: Mapping[str, Any]) -> Any:
    """The ``transformers.SamConfig`` of a ``config.json`` dict (no hub access)."""
    from geoseg.models.hf import transformers_module

    return transformers_module().SamConfig.from_dict(dict(config))


def build_sam(meta: ModelMeta) -> nn.Module:
    """The untrained ``SamModel`` of a checkpoint's ``options["hf_config"]``."""
    from geoseg.models.hf import transformers_module

    config = stored_config(meta, (MODEL_TYPE,), ARCH, "SAM")
    model: nn.Module = transformers_module().SamModel(sam_config(config))
    return model.eval()


def stored_config(
    meta: ModelMeta, model_types: tuple[str, ...], arch: str, name: str
) -> Mapping[str, Any]:
    """A SAM-like checkpoint's ``options["hf_config"]``, checked against its ``arch``.

    Args:
        meta: the checkpoint's metadata.
        model_types: the ``model_type`` values the family imports.
        arch: the family's ``ModelMeta.arch``.
        name: the model's name in messages (``SAM``, ``SAM 2``).

    Raises:
        CheckpointError: no config of ``model_types``, or one under another ``arch``.
    """
    config = meta.options.get("hf_config")
    if not isinstance(config, Mapping) or config.get("model_type") not in model_types:
        raise CheckpointError(
            f"a {meta.arch} checkpoint without its {name} config (options hf_config); re-import "
            "the model folder with `geoseg import FOLDER`"
        )
    if meta.arch != arch:
        raise CheckpointError(
            f"a {meta.arch} checkpoint holding a {name} config; the file was edited"
        )
    return config


class _Encoder(nn.Module):
    """``(N, C, S, S)`` normalized windows -> ``(N, D, S / 16, S / 16)`` image embeddings."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.get_image_embeddings(x)  # type: ignore[operator]
        return out


class SamPrompter:
    """A loaded SAM checkpoint: :meth:`encode` windows, :meth:`decode` prompts on them.

    It is registered as the ``sam`` family's predictor, but has no per-pixel
    classes: :meth:`predict` refuses and names ``geoseg prompt``. It is also an
    :class:`~geoseg.stitching.InstancePredictor`: :meth:`predict_instances` segments
    everything (``geoseg predict --task instance``, :mod:`geoseg.models.sam_everything`).

    Attributes:
        meta, schema, bands: the checkpoint's metadata, classes and input bands.
        size: the encoder's input side ``S`` in px (SAM: 1024).
        everything: the point grid, filters and NMS of :meth:`predict_instances`.
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, device: torch.device,
                 threads: int | None = None, precision: str = "auto") -> None:  # fmt: skip
        self._runner = TorchPredictor(_Encoder(model), meta, device, threads, precision)
        self.model = model
        self.meta = meta
        self.schema: ClassSchema = meta.schema
        self.bands: tuple[str, ...] = meta.bands
        self.size = int(meta.window)
        self.everything = EverythingSettings()

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self._runner.device

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Refused: SAM needs prompts (``geoseg prompt``)."""
        raise CheckpointError(
            "a SAM checkpoint segments what prompts point at and has no per-pixel classes; "
            "run it with `geoseg prompt SCENE -m MODEL --boxes LAYER | --points LAYER`"
        )

    def predict_instances(self, batch: np.ndarray, valid: np.ndarray) -> list[WindowInstances]:
        """Every object of each window: a grid of point prompts, SAM's filters and NMS.

        Args:
            batch: ``(N, C, S, S)`` band values as stored (``S`` = :attr:`size`).
            valid: ``(N, S, S) bool``.

        Returns:
            Per window ``masks (n, S, S) bool``, ``classes (n,)`` (1, ``object``),
            ``scores (n,) float32`` (predicted IoU).
        """
        return segment_everything(self, batch, valid, self.everything)

    def encode(self, batch: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        """Image embeddings ``(N, D, h, w)`` (on the device) of raw windows.

        Args:
            batch: ``(N, C, S, S)`` band values as stored (the checkpoint's scale,
                mean and std are applied; nodata pixels become the mean).
            valid: ``(N, S, S) bool``.
        """
        runner = self._runner
        out: torch.Tensor = runner.call(runner.to_device(batch, valid)).float()
        return out

    def decode(
        self,
        embedding: Any,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        keep: str = "best",
    ) -> Decoded:
        """Masks of ``P`` prompts on one encoded window.

        Args:
            embedding: one window of :meth:`encode` (SAM: ``(D, h, w)``; SAM 2: its maps).
            points: ``(P, k, 2) float`` point prompts ``(x, y)`` in input px (see module doc).
            labels: ``(P, k) int`` 1 positive, 0 negative, :data:`PAD_LABEL` padding.
            boxes: ``(P, 4) float`` box prompts ``(x0, y0, x1, y1)`` in input px.
            keep: ``best`` (the candidate with the highest predicted IoU) or ``all``.
        """
        points, labels, boxes = (None if a is None else a[None] for a in (points, labels, boxes))
        one = self.decode_windows([embedding], points, labels, boxes, keep)
        return Decoded(one.logits[0], one.scores[0])

    def decode_windows(
        self, embeddings: Sequence[Any], points: np.ndarray | None = None,
        labels: np.ndarray | None = None, boxes: np.ndarray | None = None, keep: str = "best",
    ) -> Decoded:  # fmt: skip
        """Masks of ``P`` prompts on each of ``B`` encoded windows, in one decoder call (one
        call's fixed cost instead of ``B``: a window rarely holds more than a few prompts).

        Args:
            embeddings: ``B`` windows of :meth:`encode`.
            points, labels, boxes: as :meth:`decode`'s with a leading ``B`` axis
                (``(B, P, k, 2)``, ``(B, P, k)``, ``(B, P, 4)``).
            keep: as :meth:`decode`'s.

        Returns:
            :class:`Decoded` with a leading ``B`` axis: ``logits (B, P, M, S, S)``,
            ``scores (B, P, M)``.
        """
        return self._decode(self._stack(embeddings), points, labels, boxes, keep)

    def _stack(self, embeddings: Sequence[Any]) -> Any:
        """The model's ``image_embeddings`` of windows of :meth:`encode`: ``(B, D, h, w)``."""
        return torch.stack(list(embeddings))

    def _decode(
        self, embeddings: Any, points: np.ndarray | None, labels: np.ndarray | None,
        boxes: np.ndarray | None, keep: str,
    ) -> Decoded:  # fmt: skip
        """:meth:`decode_windows` given ``embeddings``, the model's ``image_embeddings``."""
        kw = self._prompt_tensors(points, labels, boxes)
        size = self.size
        with torch.inference_mode(), self._autocast():
            out = self.model(image_embeddings=embeddings, multimask_output=True, **kw)
            masks, scores = out.pred_masks.float(), out.iou_scores.float()  # (B, P, M, h, w)
            if keep == "best":
                best = scores.argmax(dim=2, keepdim=True)
                scores = scores.gather(2, best)
                pick = best[..., None, None].expand(-1, -1, -1, *masks.shape[-2:])
                masks = masks.gather(2, pick)
            b, p, m = masks.shape[:3]
            logits = F.interpolate(masks.flatten(0, 1), size=(size, size), mode="bilinear",
                                   align_corners=False).reshape(b, p, m, size, size)  # fmt: skip
        return Decoded(logits.cpu().numpy(), scores.cpu().numpy())

    def _prompt_tensors(
        self, points: np.ndarray | None, labels: np.ndarray | None, boxes: np.ndarray | None
    ) -> dict[str, torch.Tensor]:
        """The decoder's ``input_points (B, P, k, 2)``, ``input_labels (B, P, k)`` and
        ``input_boxes (B, P, 4)`` on the device (pixel centres: see the module doc)."""
        dev, kw = self.device, {}
        if points is not None and labels is not None:
            kw["input_points"] = torch.as_tensor(points - 0.5, dtype=torch.float32).to(dev)
            kw["input_labels"] = torch.as_tensor(labels, dtype=torch.int64).to(dev)
        if boxes is not None:
            kw["input_boxes"] = torch.as_tensor(boxes - 0.5, dtype=torch.float32).to(dev)
        return kw

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        """The checkpoint's mixed precision on the device (a no-op at full precision)."""
        amp = self._runner.amp
        if amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=amp)


def load_sam(
    path: str, device: str = "auto", scale: float | None = None, threads: int | None = None,
    precision: str = "auto",
) -> SamPrompter:  # fmt: skip
    """The :class:`SamPrompter` of an imported SAM checkpoint (weights loaded strictly)."""
    module, meta = load_module(path, build_sam, scale)
    return SamPrompter(module, meta, resolve_device(device), threads, precision)
