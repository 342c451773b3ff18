"""Which task ``geoseg predict`` runs for a model, decided before any heavy import.

Kept apart from :mod:`geoseg.pipelines.instances` (geopandas, shapely, scipy) so
that a semantic ``predict`` does not load them (about 45 MB of RSS).
"""

from __future__ import annotations

from geoseg.errors import CheckpointError, GeosegError
from geoseg.models.registry import model_task, predict_outputs, task_kind, training_tasks
from geoseg.types import a_model_of

__all__ = ["predict_task"]


def predict_task(model: str, task: str | None) -> str:
    """The task ``geoseg predict`` runs: ``task``, or by default the checkpoint's own.

    ``instance`` and ``panoptic`` checkpoints (bottom-up, Mask R-CNN or
    Panoptic-DeepLab) can run ``instance`` or ``panoptic`` (stuff from the model's
    semantic side); ``semantic`` and ``change`` checkpoints and ``spectral`` run
    ``semantic``; ``prompt`` checkpoints (SAM) run ``instance`` (segment everything)
    when it is asked for, and without ``task`` are refused, naming ``geoseg prompt``.

    Raises:
        CheckpointError: ``task`` does not fit the checkpoint (the message names it).
    """
    own, outputs = model_task(model), predict_outputs()
    kind = task_kind(own)
    if task is None and kind.command != "geoseg predict":  # SAM: prompts, or --task instance
        raise CheckpointError(
            f"{model}: is {a_model_of(own)}, which `geoseg predict` runs only with --task "
            f"{' or '.join(kind.predicts)}; use `{kind.command}`"
        )
    if task is None:
        task = own if own in outputs else kind.predicts[0]
    if task not in outputs:
        raise GeosegError(f"--task must be one of {', '.join(outputs)}, not {task!r}")
    if own not in outputs[task]:
        fits = [t for t, owners in outputs.items() if own in owners]
        hint = f"use --task {' or '.join(fits)}" if fits else "no geoseg predict task runs it yet"
        train = f" (`geoseg train --task {task}`)" if task in training_tasks() else ""
        raise CheckpointError(
            f"{model}: is {a_model_of(own)} and cannot predict --task {task}; pass a "
            f"checkpoint trained for {task}{train}, or {hint}"
        )
    return task
