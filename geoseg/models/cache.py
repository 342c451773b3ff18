"""Load a model once per worker process, from a small picklable description.

Dask ships :class:`ModelSpec` (a few bytes) to every chunk task; each process
builds the model the first time it sees a spec and reuses it afterwards.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.models.registry import model_family
from geoseg.types import Predictor

__all__ = ["ModelSpec", "default_batch_size", "load_predictor", "model_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """What to load, hashable so it can key the per-process cache.

    Attributes:
        source: a weights-free family's name (``"spectral"``) or the path of a
            ``.safetensors`` checkpoint.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        roles: band roles of the scene (weights-free families only).
        scale: digital number -> reflectance factor; for checkpoints, None keeps the
            scale the model was trained with.
        stamp: ``(size, mtime_ns)`` of the checkpoint, so an edited file is reloaded.
        threads: torch intra-op threads per model call (None: torch's default). Set
            it to ``cores / workers`` so parallel workers do not oversubscribe cores.
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16`` (checkpoints; see
            :func:`geoseg.models.runtime.resolve_precision`).
    """

    source: str
    device: str = "auto"
    roles: Any = None
    scale: float | None = None
    stamp: tuple[int, int] = (0, 0)
    threads: int | None = None
    precision: str = "auto"


def model_spec(
    source: str,
    device: str = "auto",
    roles: Any = None,
    scale: float | None = None,
    threads: int | None = None,
    precision: str = "auto",
) -> ModelSpec:
    """A :class:`ModelSpec` with the checkpoint's file stamp filled in."""
    if model_family(source).weights_free:
        return ModelSpec(source, device, roles, scale, threads=threads)
    path = os.path.abspath(source)
    st = os.stat(path)
    stamp = (st.st_size, st.st_mtime_ns)
    return ModelSpec(path, device, None, scale, stamp, threads, precision)


def default_batch_size(source: str, device: str) -> int:
    """Windows per model call when none is given: 32 for a torch model on a CUDA GPU, else 4.

    A GPU needs large batches to stay busy; on the CPU (and for models that do not
    run on torch, such as the pixel-wise ``spectral`` one) bigger batches only cost
    memory.
    """
    if model_family(source).source != "torch":
        return 4
    from geoseg.models.runtime import resolve_device  # torch, only when a model is run

    return 32 if resolve_device(device).type == "cuda" else 4


@functools.lru_cache(maxsize=4)
def load_predictor(spec: ModelSpec) -> Predictor:
    """The model described by ``spec``, built once per process by its family's loader.

    Instance and panoptic checkpoints give
    :class:`~geoseg.stitching.InstancePredictor` objects; narrow them with
    ``isinstance(p, InstancePredictor)``.

    Raises:
        UnknownModelError: no registered family runs the checkpoint's task/arch.
    """
    family = model_family(spec.source)
    meta = None if family.weights_free else read_checkpoint_meta(spec.source)
    return family.load(spec, meta)
