"""Torch semantic-segmentation models behind the :class:`~geoseg.types.Predictor` contract."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.errors import CheckpointError
from geoseg.io.checkpoint import load_checkpoint
from geoseg.models.registry import build_model
from geoseg.types import ClassSchema, ModelMeta

__all__ = [
    "TorchModel",
    "TorchPredictor",
    "check_state_fits",
    "load_module",
    "load_torch_predictor",
    "resolve_device",
]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(device)


class TorchPredictor:
    """A trained torch module with its metadata.

    Args:
        module: maps ``(N, C, H, W) float32`` normalized input to ``(N, K, H, W)`` logits.
        meta: the checkpoint metadata (bands, normalization, classes).
        device: where the module runs; on CUDA the forward pass uses autocast (fp16).
        threads: torch intra-op threads per call on the CPU (None: torch's default).
    """

    def __init__(
        self,
        module: nn.Module,
        meta: ModelMeta,
        device: torch.device,
        threads: int | None = None,
    ) -> None:
        self.module = module.to(device).eval()
        self.meta = meta
        self.device = device
        self.threads = threads
        self.schema: ClassSchema = meta.schema
        self.bands: tuple[str, ...] = meta.bands
        norm = meta.normalization
        shape = (1, len(norm.mean), 1, 1)
        self._mean = np.asarray(norm.mean, np.float32).reshape(shape)
        self._inv_std = (1.0 / np.asarray(norm.std, np.float32)).reshape(shape)
        self._scale = np.float32(norm.scale)

    def normalize(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` raw values -> normalized float32; nodata pixels -> 0 (the mean)."""
        x = (batch.astype(np.float32) * self._scale - self._mean) * self._inv_std
        x[np.broadcast_to(~valid[:, None], x.shape)] = 0.0
        return x

    def call(self, x: np.ndarray, as_list: bool = False) -> Any:
        """The module's raw output for normalized input ``x`` (``(N, C, H, W) float32``).

        Sets the thread count, moves the batch to the device (pinned on CUDA, with
        autocast) and runs in inference mode. ``as_list``: the module takes a list
        of ``(C, H, W)`` tensors (torchvision detection models).
        """
        t = torch.from_numpy(x)
        if self.threads is not None:  # per thread: set where the call runs
            torch.set_num_threads(self.threads)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
            ctx: contextlib.AbstractContextManager[object] = torch.autocast("cuda")
        else:
            ctx = contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return self.module(list(t) if as_list else t)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(N, K, H, W) float32`` of normalized input ``x``."""
        return torch.softmax(self.call(x).float(), dim=1).cpu().numpy()

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return self.forward(self.normalize(batch, valid))


class TorchModel:
    """Base of predictors built on a :class:`TorchPredictor` (instance, panoptic models).

    Attributes:
        meta, schema, bands: the checkpoint's metadata, classes and input bands.
    """

    def __init__(
        self, module: nn.Module, meta: ModelMeta, device: torch.device, threads: int | None
    ) -> None:
        self._base = TorchPredictor(module, meta, device, threads)
        self.meta = meta
        self.schema: ClassSchema = meta.schema
        self.bands: tuple[str, ...] = meta.bands

    def outputs(self, batch: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        """The module's float32 output for raw windows ``(N, C, H, W)`` (on its device)."""
        return self._base.call(self._base.normalize(batch, valid)).float()


def load_module(
    path: str | os.PathLike[str], build: Callable[[ModelMeta], nn.Module], scale: float | None
) -> tuple[nn.Module, ModelMeta]:
    """A checkpoint's module with its weights loaded strictly, and its metadata.

    Args:
        path: the checkpoint.
        build: the untrained architecture for the metadata; it raises
            ``CheckpointError`` for a checkpoint of another kind.
        scale: digital number -> model units, replacing the checkpoint's.
    """
    tensors, meta = load_checkpoint(path)
    module = build(meta)
    check_state_fits(path, module, tensors, meta)
    module.load_state_dict(tensors, strict=True)
    if scale is not None:
        norm = dataclasses.replace(meta.normalization, scale=scale)
        meta = dataclasses.replace(meta, normalization=norm)
    return module, meta


def load_torch_predictor(
    path: str | os.PathLike[str],
    device: str = "auto",
    scale: float | None = None,
    threads: int | None = None,
) -> TorchPredictor:
    """Build the checkpoint's architecture and load its weights strictly.

    Args:
        path: the checkpoint.
        device: ``auto``, ``cpu`` or ``cuda``.
        scale: digital number -> model units, replacing the checkpoint's (for a
            scene stored differently from the training data, e.g. uint16 x 10000
            vs float reflectance).
        threads: torch intra-op threads for each call (None: torch's default).
    """

    def build(meta: ModelMeta) -> nn.Module:
        return build_model(
            meta.arch, meta.encoder, len(meta.bands), len(meta.schema), **dict(meta.options)
        )

    module, meta = load_module(path, build, scale)
    return TorchPredictor(module, meta, resolve_device(device), threads)


def check_state_fits(
    path: str | os.PathLike[str],
    module: nn.Module,
    tensors: dict[str, torch.Tensor],
    meta: ModelMeta,
) -> None:
    """Same keys and shapes as the architecture, or a clear CheckpointError."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(
        k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != expected[k]
    )
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: weights do not fit a {meta.arch}/{meta.encoder} model (missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}); "
            "the file was edited or written by another program"
        )
