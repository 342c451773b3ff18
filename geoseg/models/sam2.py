"""The SAM 2 runtime: prompts on windows (as SAM), and objects carried through frames.

An imported SAM 2 checkpoint carries its folder's ``config.json`` (as
``ModelMeta.options["hf_config"]``) and the ``Sam2Model`` or ``Sam2VideoModel``
weights as ordinary tensors (digest, strict keys and shapes, as every geoseg
checkpoint). :class:`Sam2Prompter` is a :class:`~geoseg.models.sam.SamPrompter`:
``geoseg prompt`` encodes windows and decodes point/box prompts the same way
(SAM 2's image embedding is three feature maps instead of one, so
:meth:`Sam2Prompter.encode` gives one list per window). A video checkpoint's
image part (every image weight is also a video weight) answers prompts, and
:meth:`Sam2Prompter.track` runs the video model: prompts on one frame, masks on
every frame through SAM 2's memory (:mod:`transformers.models.sam2_video`).

Coordinates are in the encoder's input frame, as in :mod:`geoseg.models.sam`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from geoseg.errors import CheckpointError
from geoseg.models.families.sam2 import ARCH, IMAGE_TYPE, MODEL_TYPES, VIDEO_TYPE
from geoseg.models.runtime import load_module, resolve_device
from geoseg.models.sam import SamPrompter, stored_config
from geoseg.types import ModelMeta

__all__ = ["FramePrompt", "Sam2Prompter", "build_sam2", "load_sam2", "sam2_config"]

#: SAM 2's point labels of a box's two corners (top-left, bottom-right).
BOX_LABELS = (2, 3)


@dataclass(frozen=True)
class FramePrompt:
    """One object's prompt on the prompt frame, in encoder input px.

    Attributes:
        id: the object's id.
        points: ``(k, 2) float`` ``(x, y)`` points (k = 0 with a box only).
        labels: ``(k,) int`` 1 positive, 0 negative.
        box: ``(x0, y0, x1, y1)`` or None.
    """

    id: int
    points: np.ndarray
    labels: np.ndarray
    box: tuple[float, float, float, float] | None = None


def sam2_config(config: Mapping[str, Any]) -> Any:
    """The ``Sam2Config`` or ``Sam2VideoConfig`` of a ``config.json`` dict (no hub access)."""
    from geoseg.models.hf import transformers_module

    t = transformers_module()
    cls = t.Sam2VideoConfig if config.get("model_type") == VIDEO_TYPE else t.Sam2Config
    return cls.from_dict(dict(config))


def build_sam2(meta: ModelMeta) -> nn.Module:
    """The untrained ``Sam2Model`` / ``Sam2VideoModel`` of a checkpoint's ``hf_config``."""
    from geoseg.models.hf import transformers_module

    config = stored_config(meta, MODEL_TYPES, ARCH, "SAM 2")
    t = transformers_module()
    cls = t.Sam2VideoModel if config["model_type"] == VIDEO_TYPE else t.Sam2Model
    model: nn.Module = cls(sam2_config(config))
    return model.eval()


def _image_part(video: nn.Module) -> nn.Module:
    """The ``Sam2Model`` holding a video model's image weights (the same tensors)."""
    from geoseg.models.hf import transformers_module

    full = video.config.to_dict()  # type: ignore[union-attr,operator]
    own = {k: {n: v for n, v in full[k].items() if n != "model_type"}
           for k in ("prompt_encoder_config", "mask_decoder_config")}  # fmt: skip
    t = transformers_module()
    image: nn.Module = t.Sam2Model(t.Sam2Config(vision_config=full["vision_config"], **own))
    state = video.state_dict()
    image.load_state_dict({k: state[k] for k in image.state_dict()}, strict=True)
    return image.eval()


class Sam2Prompter(SamPrompter):
    """A loaded SAM 2 checkpoint: :meth:`encode` / :meth:`decode` as SAM, :meth:`track`.

    Attributes:
        video: the ``Sam2VideoModel`` (None for an image ``Sam2Model`` checkpoint).
    """

    def __init__(self, image: nn.Module, meta: ModelMeta, device: torch.device,
                 threads: int | None = None, precision: str = "auto",
                 video: nn.Module | None = None) -> None:  # fmt: skip
        super().__init__(image, meta, device, threads, precision)
        self.video = None if video is None else video.to(device).eval()

    def encode(  # type: ignore[override]  # SAM 2 embeds a window as three feature maps
        self, batch: np.ndarray, valid: np.ndarray
    ) -> list[list[torch.Tensor]]:
        """Per window, its ``[(D0, 4h, 4w), (D1, 2h, 2w), (D, h, w)]`` feature maps (on the
        device) of raw ``(N, C, S, S)`` windows (``valid``: ``(N, S, S) bool``)."""
        runner = self._runner
        maps = runner.call(runner.to_device(batch, valid))
        return [[m[j].float() for m in maps] for j in range(len(batch))]

    def _stack(self, embeddings: Sequence[Any]) -> list[torch.Tensor]:
        """The ``image_embeddings`` of windows of :meth:`encode`: each level's maps stacked."""
        return [torch.stack([e[level] for e in embeddings]) for level in range(len(embeddings[0]))]

    def track(
        self, frames: np.ndarray, valid: np.ndarray, prompts: Sequence[FramePrompt], start: int
    ) -> np.ndarray:
        """Each prompt's mask on every frame, through SAM 2's memory.

        Args:
            frames: ``(T, C, S, S)`` band values as stored, one window per date.
            valid: ``(T, S, S) bool``.
            prompts: the objects, prompted on frame ``start``.
            start: the prompt frame; SAM 2 propagates forward from it, then backward.

        Returns:
            ``(T, P, S, S) bool``: mask logit > 0 (empty where SAM 2 finds no object).

        Raises:
            CheckpointError: an image-only ``Sam2Model`` checkpoint.
        """
        if self.video is None:
            raise CheckpointError(
                "tracking needs the SAM 2 video model; import a Sam2VideoModel folder "
                "(model_type sam2_video) with `geoseg import FOLDER -o sam2.safetensors`"
            )
        from transformers.models.sam2_video import Sam2VideoInferenceSession

        dev, size = self.device, self.size
        x = self._runner.to_device(frames, valid).to(dev)
        session = Sam2VideoInferenceSession(
            video=x, video_height=size, video_width=size, inference_device=dev,
            inference_state_device=dev, video_storage_device=dev, dtype=torch.float32,
        )  # fmt: skip
        for p in prompts:
            session.add_point_inputs(session.obj_id_to_idx(p.id), start, _point_inputs(p))
        session.obj_with_new_inputs = [p.id for p in prompts]
        out = np.zeros((len(frames), len(prompts), size, size), bool)
        passes = [False, True] if start > 0 else [False]
        with torch.inference_mode():
            for reverse in passes:
                for step in self.video.propagate_in_video_iterator(  # type: ignore[operator]
                    session, start_frame_idx=start, reverse=reverse
                ):
                    logits = F.interpolate(step.pred_masks.float(), size=(size, size),
                                           mode="bilinear", align_corners=False)  # fmt: skip
                    out[step.frame_idx] = (logits[:, 0] > 0).cpu().numpy()
        return out


def _point_inputs(prompt: FramePrompt) -> dict[str, torch.Tensor]:
    """SAM 2's ``point_coords (1, 1, k, 2)`` / ``point_labels (1, 1, k)`` of a prompt: a box
    is its two corners (labels 2, 3) before the points; pixel centres as in SAM."""
    coords = [np.asarray(prompt.points, np.float64).reshape(-1, 2)]
    labels = [np.asarray(prompt.labels, np.int64).reshape(-1)]
    if prompt.box is not None:
        coords.insert(0, np.asarray(prompt.box, np.float64).reshape(2, 2))
        labels.insert(0, np.asarray(BOX_LABELS, np.int64))
    xy = torch.as_tensor(np.concatenate(coords) - 0.5, dtype=torch.float32)
    kinds = torch.as_tensor(np.concatenate(labels), dtype=torch.int32)
    return {"point_coords": xy[None, None], "point_labels": kinds[None, None]}


def load_sam2(
    path: str, device: str = "auto", scale: float | None = None, threads: int | None = None,
    precision: str = "auto",
) -> Sam2Prompter:  # fmt: skip
    """The :class:`Sam2Prompter` of an imported SAM 2 checkpoint (weights loaded strictly)."""
    module, meta = load_module(path, build_sam2, scale)
    kind = meta.options["hf_config"]["model_type"]
    if kind == IMAGE_TYPE:
        return Sam2Prompter(module, meta, resolve_device(device), threads, precision)
    return Sam2Prompter(_image_part(module), meta, resolve_device(device), threads, precision,
                        video=module)  # fmt: skip
