"""The family registry: the one place a model family is known.

Each line of :data:`FAMILY_MODULES` registers the :class:`~geoseg.models.family.Family`
record (``FAMILY``) of one module of :mod:`geoseg.models.families`. The CLI's
``--task``/``--arch`` choices, ``geoseg models``, the model cache, training and the
pipelines read the records through the functions here; none of them tests a
family's name. Records import without torch, so listing them is fast.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geoseg.errors import UnknownModelError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.models.family import TASKS, Family, TaskKind
from geoseg.types import ModelMeta

if TYPE_CHECKING:  # torch is imported only when a model is built (spectral needs none)
    from torch import nn

__all__ = [
    "ARCHITECTURES",
    "FAMILY_MODULES",
    "SPECTRAL",
    "TASKS",
    "architectures",
    "available_models",
    "build_model",
    "checkpoint_family",
    "families",
    "model_family",
    "model_task",
    "predict_outputs",
    "task_kind",
    "training_family",
    "training_tasks",
    "weights_free_family",
    "window_multiple",
]

#: The registered families, one line each, in the order ``geoseg models`` lists them.
FAMILY_MODULES: tuple[str, ...] = (
    "geoseg.models.families.spectral",
    "geoseg.models.families.smp",
    "geoseg.models.families.fcn",
    "geoseg.models.families.change",
    "geoseg.models.families.siamese",
    "geoseg.models.families.bottom_up",
    "geoseg.models.families.maskrcnn",
    "geoseg.models.families.solov2",
    "geoseg.models.families.condinst",
    "geoseg.models.families.panoptic",
    "geoseg.models.families.ensemble",
    "geoseg.models.families.transformers",
    "geoseg.models.families.mask2former",
    "geoseg.models.families.onnx",
    "geoseg.models.families.sam",
    "geoseg.models.families.sam2",
)

#: Name of the weights-free band-index model (``-m spectral``).
SPECTRAL = "spectral"


@functools.cache
def families() -> tuple[Family, ...]:
    """Every registered family, in :data:`FAMILY_MODULES` order."""
    found = tuple(importlib.import_module(m).FAMILY for m in FAMILY_MODULES)
    names = [f.name for f in found]
    if len(set(names)) != len(names) or not all(isinstance(f, Family) for f in found):
        raise TypeError(
            f"each module of FAMILY_MODULES defines one FAMILY, named uniquely: {names}"
        )
    return found


def task_kind(task: str) -> TaskKind:
    """What checkpoint task ``task`` means (objects or pixels, predict outputs, metric)."""
    if task not in TASKS:
        raise UnknownModelError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]


def training_tasks() -> tuple[str, ...]:
    """The tasks some family can train (``geoseg train --task``)."""
    return tuple(t for t in TASKS if any(t in f.tasks and f.training for f in families()))


def architectures(task: str | None = None) -> tuple[str, ...]:
    """The ``--arch`` names trainable for ``task`` (any task: None), in registry order."""
    names = [a for f in families() if f.training and (task is None or task in f.tasks)
             for a in f.archs]  # fmt: skip
    return tuple(dict.fromkeys(names))


def _semantic_archs() -> tuple[str, ...]:
    return tuple(a for f in families() if f.net is not None for a in f.archs)


#: The per-pixel architectures (``smp`` and ``fcn`` families): ``geoseg train --arch``.
ARCHITECTURES: tuple[str, ...] = _semantic_archs()


def available_models() -> tuple[str, ...]:
    """Every model name ``-m``/``--arch`` accepts (weights-free families need no file)."""
    return (*(f.name for f in families() if f.weights_free), *ARCHITECTURES)


def training_family(task: str, arch: str) -> Family:
    """The family that trains ``--task task --arch arch``.

    Raises:
        UnknownModelError: no family does; the message lists the valid names.
    """
    key = arch.lower()
    for f in families():
        if f.training and task in f.tasks and key in f.archs:
            return f
    valid = architectures(task)
    if not valid:
        raise UnknownModelError(
            f"--task must be one of {', '.join(training_tasks())}, not {task!r}"
        )
    raise UnknownModelError(
        f"unknown architecture {arch!r} for --task {task}; choose one of {', '.join(valid)}"
    )


def checkpoint_family(meta: ModelMeta) -> Family:
    """The family of a checkpoint, by its ``task`` and ``arch``.

    Raises:
        UnknownModelError: no registered family has that task and architecture.
    """
    for f in families():
        if meta.task in f.tasks and meta.arch.lower() in f.checkpoint_archs:
            return f
    valid = [f"{t}/{a}" for f in families() if not f.weights_free
             for t in f.tasks for a in f.checkpoint_archs]  # fmt: skip
    raise UnknownModelError(
        f"no model family runs task {meta.task!r} with architecture {meta.arch!r}; "
        f"known: {', '.join(valid)}"
    )


def weights_free_family(model: str) -> Family | None:
    """The weights-free family ``-m model`` names (``spectral``), or None (a checkpoint path)."""
    return next((f for f in families() if f.weights_free and f.name == model), None)


def model_family(model: str) -> Family:
    """The family of ``-m model``: a weights-free family's name, or a checkpoint path."""
    return weights_free_family(model) or checkpoint_family(read_checkpoint_meta(model))


def model_task(model: str) -> str:
    """The checkpoint task of ``-m model`` (a weights-free family's first task)."""
    found = weights_free_family(model)
    return found.tasks[0] if found else read_checkpoint_meta(model).task


def predict_outputs() -> dict[str, tuple[str, ...]]:
    """``geoseg predict --task`` output -> the checkpoint tasks whose models can make it."""
    outputs: dict[str, list[str]] = {}
    for kind in TASKS.values():
        for out in kind.predicts:
            outputs.setdefault(out, []).append(kind.name)
    return {out: tuple(tasks) for out, tasks in outputs.items()}


def window_multiple(arch: str, options: Mapping[str, Any] | None = None) -> int:
    """Window sides must be a multiple of this for ``arch`` (its output stride).

    Raises:
        UnknownModelError: no family knows ``arch``; the message lists the valid names.
    """
    key = arch.lower()
    for f in families():
        if key in f.archs or key == f.stored_arch:
            return f.window_multiple(key, options or {})
    names = [a for f in families() for a in (*f.archs, *filter(None, [f.stored_arch]))]
    raise UnknownModelError(
        f"unknown architecture {arch!r}; choose one of {', '.join(dict.fromkeys(names))}"
    )


def build_model(
    arch: str, encoder: str | None, in_channels: int, num_classes: int, **options: Any
) -> nn.Module:
    """Build the untrained per-pixel network of ``arch``.

    Args:
        arch: one of :data:`ARCHITECTURES` (any case).
        encoder: smp encoder name (e.g. ``"resnet18"``, ``"efficientnet-b0"``) or,
            for ``fcn``, ``"resnet50"``/``"resnet101"``. None picks ``resnet34`` /
            ``resnet50``.
        in_channels: input bands.
        num_classes: output channels.
        **options: extra keyword arguments of the builder (e.g. ``encoder_depth``).

    Returns:
        A module mapping ``(N, C, H, W) float32`` to ``(N, K, H, W)`` logits.

    Raises:
        UnknownModelError: unknown architecture or encoder; the message lists the
            valid names.
    """
    key = arch.lower()
    for f in families():
        if f.net is not None and key in f.archs:
            return f.net(key, encoder, in_channels, num_classes, **options)
    raise UnknownModelError(
        f"unknown architecture {arch!r}; choose one of {', '.join(available_models())}"
    )
