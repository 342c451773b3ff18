"""The torch runtime every torch family shares.

Device and precision choice, batches to the device (pinned memory, normalization
on the GPU), autocast, a bound on concurrent GPU calls, and strict weight loading
from a checkpoint. :class:`TorchPredictor` is the per-pixel class predictor
(semantic and early-fusion change families); instance and panoptic predictors
build on it through :class:`TorchModel`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.errors import CheckpointError
from geoseg.io.checkpoint import load_checkpoint
from geoseg.models.input_norm import BatchNormalizer
from geoseg.models.temperature import temper_logits
from geoseg.types import ClassSchema, ModelMeta

__all__ = [
    "TorchModel",
    "TorchPredictor",
    "adapt_first_conv",
    "check_state_fits",
    "load_module",
    "load_torch_predictor",
    "require_arch",
    "resolve_device",
    "resolve_precision",
]

#: Forward passes one predictor runs at once on a GPU (the rest wait their turn).
GPU_CALLS = 4

#: Window types sent to the GPU as they are (converted to float32 there, exactly).
_RAW_DTYPES = tuple(np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "float32"))

#: ``--precision`` values: autocast dtype on the device (None: plain float32).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def adapt_first_conv(weight: torch.Tensor, bands: int) -> torch.Tensor:
    """The first convolution's weights for ``bands`` inputs instead of its own ``C``.

    ``(out, C, kh, kw) -> (out, bands, kh, kw)``, float32:

    - ``bands == C``: unchanged;
    - ``bands < C``: input ``j`` gets the sum of the RGB channels ``c`` with
      ``c % bands == j`` (one band: the sum of all, as for a greyscale image);
    - ``bands > C``: input ``j`` gets channel ``j % C`` scaled by ``C / bands``
      (the first ``C`` bands in their order take the pretrained channels).

    Either way a window whose bands are all equal to ``v`` gives the first layer
    the response of an RGB window of ``v`` (exactly when ``bands < C`` or
    ``bands % C == 0``), so the pretrained statistics still hold roughly.
    """
    w = weight.detach().float()
    c = w.shape[1]
    if bands == c:
        return w.clone()
    if bands < c:
        return torch.stack([w[:, j::bands].sum(dim=1) for j in range(bands)], dim=1)
    return w[:, [j % c for j in range(bands)]] * (c / bands)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` on ``device`` (None: float32 throughout).

    ``auto`` is fp16 on CUDA and fp32 on the CPU; fp16 on the CPU is refused (slow
    and inexact there), bf16 runs on both.
    """
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if precision not in PRECISIONS:
        raise CheckpointError(f"unknown precision {precision!r}; use auto, {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise CheckpointError("--precision fp16 needs a CUDA GPU; use fp32 or bf16 on the CPU")
    return PRECISIONS[precision]


class TorchPredictor:
    """A trained torch module with its metadata.

    On CUDA the module runs in channels-last memory format, batches go through
    pinned host memory, normalization runs on the GPU and the forward pass is
    autocast to ``precision``.

    Args:
        module: maps ``(N, C, H, W) float32`` normalized input to ``(N, K, H, W)`` logits.
        meta: the checkpoint metadata (bands, normalization, classes).
        device: where the module runs.
        threads: torch intra-op threads per call on the CPU (None: torch's default).
        precision: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp32``, ``fp16`` or ``bf16``.
    """

    def __init__(
        self,
        module: nn.Module,
        meta: ModelMeta,
        device: torch.device,
        threads: int | None = None,
        precision: str = "auto",
    ) -> None:
        self.amp = resolve_precision(precision, device)
        if device.type == "cuda" and self.amp is None:
            # fp32 means fp32: PyTorch runs CUDA convolutions in TF32 by default
            # (10-bit mantissa), which moves probabilities by up to ~1e-2. The switch
            # is process-wide and stays off (it only slows float32 work down).
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        # Dask runs one thread per core; each forward pass holds its activations
        # until it returns, so only a few may be in flight on one GPU at a time.
        self._gpu_calls = threading.BoundedSemaphore(GPU_CALLS)
        self.module = module.to(device).eval()
        if device.type == "cuda":
            self.module = self.module.to(memory_format=torch.channels_last)
        self.meta = meta
        self.device = device
        self.threads = threads
        #: On a GPU, callers fill every batch to the same size (see tiling.infer).
        self.fixed_batch = device.type == "cuda"
        self.schema: ClassSchema = meta.schema
        self.bands: tuple[str, ...] = meta.bands
        self._norm = BatchNormalizer.of(meta.normalization)
        self._device_norm: tuple[torch.Tensor, ...] | None = None

    def normalize(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` raw values -> normalized float32; nodata pixels -> 0 (the mean).

        Percentile-clipped normalizations clip the scaled values first.
        """
        return self._norm(batch, valid)

    def to_device(self, batch: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        """Raw windows ``(N, C, H, W)`` -> normalized float32 tensor on the model's device.

        On the CPU this is :meth:`normalize`; on CUDA the raw values travel through
        pinned memory in their own type (8/16-bit integers, float32; others as
        float32) and are normalized there (nodata pixels -> 0, the mean).
        """
        if self.device.type != "cuda":
            return torch.from_numpy(self.normalize(batch, valid))
        if self._device_norm is None:
            arrays = (self._norm.mean, self._norm.inv_std, *(self._norm.clip or ()))
            self._device_norm = tuple(torch.from_numpy(a).to(self.device) for a in arrays)
        mean, inv_std, *clip = self._device_norm
        if batch.dtype not in _RAW_DTYPES:
            batch = batch.astype(np.float32)
        raw = torch.from_numpy(np.ascontiguousarray(batch)).pin_memory()
        ok = torch.from_numpy(np.ascontiguousarray(valid)).pin_memory()
        x = raw.to(self.device, non_blocking=True).float()
        ok = ok.to(self.device, non_blocking=True)
        x = x * float(self._norm.scale)
        if clip:
            x = torch.clamp(x, clip[0], clip[1])
        x = (x - mean) * inv_std
        return x.masked_fill_(~ok[:, None], 0.0)

    def call(self, x: np.ndarray | torch.Tensor, as_list: bool = False) -> Any:
        """The module's raw output for normalized input ``x`` (``(N, C, H, W) float32``).

        Sets the thread count, moves the batch to the device (pinned on CUDA, with
        autocast) and runs in inference mode. ``as_list``: the module takes a list
        of ``(C, H, W)`` tensors (torchvision detection models).
        """
        t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
        if self.threads is not None:  # per thread: set where the call runs
            torch.set_num_threads(self.threads)
        if self.device.type == "cuda" and t.device.type != "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        if self.device.type == "cuda" and not as_list:
            t = t.contiguous(memory_format=torch.channels_last)
        ctx: contextlib.AbstractContextManager[object] = (
            torch.autocast(self.device.type, dtype=self.amp)
            if self.amp is not None
            else contextlib.nullcontext()
        )
        slot = self._gpu_calls if self.device.type == "cuda" else contextlib.nullcontext()
        with slot, torch.inference_mode(), ctx:
            return self.module(list(t) if as_list else t)

    def probabilities(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, K, H, W) float32`` of normalized ``x``, on the device.

        The softmax of the module's logits divided by the checkpoint's temperature
        (:mod:`geoseg.models.temperature`); a module that gives probabilities itself
        (an ensemble, :mod:`geoseg.models.ensemble`) overrides this.
        """
        return torch.softmax(temper_logits(self.call(x).float(), self.meta.temperature), dim=1)

    def log_probabilities(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``log`` of :meth:`predict` ``(N, K, H, W) float32``, as a log-softmax: finite
        where a probability underflows to 0 (what a calibration fit reads)."""
        logits = self.call(self.to_device(batch, valid)).float()
        return torch.log_softmax(temper_logits(logits, self.meta.temperature), 1).cpu().numpy()

    def forward(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Softmax probabilities ``(N, K, H, W) float32`` of normalized input ``x``."""
        return self.probabilities(x).cpu().numpy()

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return self.forward(self.to_device(batch, valid))

    def predict_top(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The winning class and its probability, reduced on the device.

        Args:
            batch: ``(N, C, H, W)`` raw band values, float32 or the scene's own
                integer type (uint16 windows cross to the GPU at half the bytes).
            valid: ``(N, H, W) bool``.

        Returns:
            ``(N, 2, H, W) uint8``: the index of the most probable output channel
            (first on ties, like ``np.argmax``), and its probability as
            ``round(254 p)``, exactly what :meth:`predict` followed by an argmax
            would give; 2 bytes per pixel cross back instead of 4 per class.
        """
        return self._top(batch, valid).cpu().numpy()

    def predict_tops(
        self, batches: Iterable[tuple[np.ndarray, np.ndarray]]
    ) -> Iterator[np.ndarray]:
        """:meth:`predict_top` of each ``(batch, valid)``, in order.

        On CUDA up to two batches are queued on the GPU while the next one is cut
        and copied, so the GPU does not wait for the host between batches.
        """
        pending: collections.deque[torch.Tensor] = collections.deque()
        for batch, valid in batches:
            pending.append(self._top(batch, valid))
            if len(pending) > 2:
                yield pending.popleft().cpu().numpy()
        while pending:
            yield pending.popleft().cpu().numpy()

    def _top(self, batch: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        """``(N, 2, H, W) uint8`` tensor of :meth:`predict_top`, on the device (not waited for)."""
        with torch.inference_mode():
            prob = self.probabilities(self.to_device(batch, valid))
            best = prob.argmax(dim=1)
            top = prob.gather(1, best[:, None])[:, 0]
            conf = torch.round(top.clamp_(0.0, 1.0) * 254.0)
            return torch.stack([best.to(torch.uint8), conf.to(torch.uint8)], dim=1)


class TorchModel:
    """Base of predictors built on a :class:`TorchPredictor` (instance, panoptic models).

    Attributes:
        meta, schema, bands: the checkpoint's metadata, classes and input bands.
    """

    def __init__(
        self,
        module: nn.Module,
        meta: ModelMeta,
        device: torch.device,
        threads: int | None,
        precision: str = "auto",
    ) -> None:
        self._base = TorchPredictor(module, meta, device, threads, precision)
        self.meta = meta
        self.schema: ClassSchema = meta.schema
        self.bands: tuple[str, ...] = meta.bands

    def outputs(self, batch: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        """The module's float32 output for raw windows ``(N, C, H, W)`` (on its device)."""
        return self._base.call(self._base.to_device(batch, valid)).float()


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


def require_arch(
    path: str | os.PathLike[str], meta: ModelMeta, task: str, arch: str, model: str
) -> None:
    """Refuse a checkpoint of another ``task``/``arch`` than a loader's (``model`` names it).

    Raises:
        CheckpointError: names the checkpoint's kind and the ``geoseg train`` that makes one.
    """
    if meta.task != task or meta.arch != arch:
        raise CheckpointError(
            f"{path}: a {meta.task!r}/{meta.arch!r} checkpoint, not a {model}; use a "
            f"checkpoint trained with `geoseg train --task {task} --arch {arch}`"
        )


def load_torch_predictor(
    path: str | os.PathLike[str],
    device: str = "auto",
    scale: float | None = None,
    threads: int | None = None,
    precision: str = "auto",
) -> TorchPredictor:
    """Build a per-pixel class checkpoint's module (through its family) and load it strictly.

    Args:
        path: the checkpoint.
        device: ``auto``, ``cpu`` or ``cuda``.
        scale: digital number -> model units, replacing the checkpoint's (for a
            scene stored differently from the training data, e.g. uint16 x 10000
            vs float reflectance).
        threads: torch intra-op threads for each call (None: torch's default).
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16`` (see :func:`resolve_precision`).
    """

    module, meta = load_module(path, _family_build(path), scale)
    return TorchPredictor(module, meta, resolve_device(device), threads, precision)


def _family_build(path: str | os.PathLike[str]) -> Callable[[ModelMeta], nn.Module]:
    """``build(meta)``: the module of the checkpoint's family; CheckpointError if it has none."""

    def build(meta: ModelMeta) -> nn.Module:
        from geoseg.models.registry import checkpoint_family, task_kind  # registry lists runtime

        family = checkpoint_family(meta)
        if family.build is None or family.source != "torch" or task_kind(meta.task).objects:
            raise CheckpointError(
                f"{path}: a {meta.task}/{meta.arch} checkpoint of the {family.name} family, "
                "not a per-pixel class model; load it with geoseg.models.load_predictor"
            )
        return family.build(meta)

    return build


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
