"""Measurements ``geoseg plan`` makes on the device: activation memory and step time.

Both build the family's real untrained model (:func:`geoseg.models.registry.training_family`)
for the planned bands, classes and options, so the numbers are the architecture's own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from geoseg.models.registry import training_family
from geoseg.models.runtime import resolve_device
from geoseg.types import ClassSchema, ModelMeta, Normalization

__all__ = ["activation_bytes_per_px", "build_for_plan", "step_seconds"]

#: Window side the activation memory is measured at, px (scaled by area to the plan's).
PROBE_WINDOW = 64
#: Backward costs about twice the forward pass (two matrix products per forward one).
BACKWARD_FACTOR = 3.0


def build_for_plan(
    task: str, arch: str, encoder: str, bands: int, schema: ClassSchema,
    options: Mapping[str, Any], window: int,
) -> nn.Module:  # fmt: skip
    """The untrained model ``geoseg train`` would build for these settings."""
    family = training_family(task, arch)
    opts = {"body": arch, **options} if task == "panoptic" else dict(options)
    meta = ModelMeta(
        task=task, arch=family.stored_arch or arch if task == "panoptic" else arch,
        encoder=encoder, bands=tuple(f"b{i + 1}" for i in range(bands)),
        normalization=Normalization((0.0,) * bands, (1.0,) * bands), schema=schema,
        window=window, margin=window // 8, options=opts,
    )  # fmt: skip
    if family.build is None:
        raise ValueError(f"the {family.name} family builds no model to train")
    torch.manual_seed(0)
    module: nn.Module = family.build(meta)
    return module


def _saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the activations autograd keeps for the backward pass of ``model(x)``."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weights |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:  # a layer saves its weights too: they are no activation
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
        model(x)
    return sum(seen.values())


def activation_bytes_per_px(model: nn.Module, bands: int) -> float:
    """Activation memory a training step keeps per input pixel, bytes.

    Measured at :data:`PROBE_WINDOW` px on the CPU: every tensor autograd saves for
    backward except the weights, each storage counted once (eval mode, so detection
    models need no targets), plus half again for the gradients alive during backward.
    """
    x = torch.randn(1, bands, PROBE_WINDOW, PROBE_WINDOW)
    model.cpu().eval()
    return 1.5 * _saved_bytes(model, x) / PROBE_WINDOW**2


def step_seconds(model: nn.Module, bands: int, window: int, batch: int, device: str,
                 repeats: int = 1) -> float:  # fmt: skip
    """Seconds of one training step at ``batch`` windows of ``window`` px on ``device``.

    Times the forward pass with autograd recording (after one warm-up pass) and
    multiplies by :data:`BACKWARD_FACTOR` for backward and the optimizer step; eval
    mode, so every family runs without targets.
    """
    dev = resolve_device(device)
    model.to(dev).eval()
    x = torch.randn(batch, bands, window, window, device=dev)
    times = []
    with torch.enable_grad():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t0)
    model.cpu()
    return BACKWARD_FACTOR * min(times[1:])
