"""The record a model family registers, and what each checkpoint task means.

A :class:`Family` is everything the rest of geoseg knows about one kind of model:
the tasks and architecture names it serves, its window multiple, how to build
an untrained module, load a predictor, set up training and describe itself.
Records live in :mod:`geoseg.models.families` (one small module each, importable
without torch so the CLI can list choices quickly) and are listed in
:mod:`geoseg.models.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geoseg.types import ClassSchema, ModelMeta

if TYPE_CHECKING:  # torch and the cache are needed only when a model is built or loaded
    from torch import nn

    from geoseg.models.cache import ModelSpec
    from geoseg.types import Predictor

__all__ = [
    "INPUTS",
    "SOURCES",
    "TASKS",
    "Family",
    "TaskKind",
    "WindowMultiple",
    "depth_multiple",
    "fixed_multiple",
]

#: What a family's predictor consumes besides its checkpoint: stacked band pixels,
#: two dates (a change model; an early-fusion one takes them stacked as pixels), or
#: pixels plus prompts (points/boxes, SAM-style).
INPUTS = ("pixels", "two_dates", "prompts")

#: The runtime a family's predictor runs on.
SOURCES = ("torch", "numpy", "onnx")


@dataclass(frozen=True)
class TaskKind:
    """What a checkpoint task (``ModelMeta.task``) means to the pipelines.

    Attributes:
        name: the task, one of :data:`geoseg.types.MODEL_TASKS`.
        objects: its predictors find objects (an
            :class:`~geoseg.stitching.InstancePredictor`): instance stitching, AP50/PQ.
        predicts: the ``geoseg predict --task`` outputs its checkpoints can make.
        metric: the validation score ``geoseg train`` reports.
        command: the command that runs its checkpoints. When it is not ``geoseg
            predict``, ``geoseg predict`` runs them only for an explicit ``--task``
            among ``predicts`` (SAM: ``--task instance``, segment everything) and
            otherwise refuses and names this command.
    """

    name: str
    objects: bool
    predicts: tuple[str, ...]
    metric: str
    command: str = "geoseg predict"


_PROMPT_COMMAND = (
    "geoseg prompt SCENE -m MODEL --boxes LAYER | --points LAYER | --point X,Y -o OUT.tif"
)

#: Every checkpoint task, in the order the CLI lists them.
TASKS: Mapping[str, TaskKind] = {
    t.name: t
    for t in (
        TaskKind("semantic", False, ("semantic",), "mIoU"),
        TaskKind("change", False, ("semantic",), "mIoU"),
        TaskKind("instance", True, ("instance", "panoptic"), "AP50"),
        TaskKind("panoptic", True, ("instance", "panoptic"), "PQ"),
        TaskKind("prompt", False, ("instance",), "mIoU", _PROMPT_COMMAND),
    )
}


#: ``window_multiple(arch, options) -> int``: window sides must be a multiple of it.
WindowMultiple = Callable[[str, Mapping[str, Any]], int]


def fixed_multiple(multiple: int) -> WindowMultiple:
    """A window multiple that depends neither on the architecture nor on its options."""

    def window_multiple(arch: str, options: Mapping[str, Any]) -> int:
        return multiple

    return window_multiple


def depth_multiple(arch: str, options: Mapping[str, Any]) -> int:
    """``2 ** encoder_depth`` (smp encoders; depth 5 by default): the output stride."""
    return int(2 ** int(options.get("encoder_depth", 5)))


@dataclass(frozen=True)
class Family:
    """One model family: the only place its name, tasks and code paths are known.

    Attributes:
        name: family name shown by ``geoseg models`` (for a weights-free family,
            also the word ``-m`` takes, e.g. ``spectral``).
        summary: one line for ``geoseg models``.
        tasks: the checkpoint tasks (``ModelMeta.task``) it serves.
        archs: the ``--arch`` names it accepts (lower case); its checkpoints carry
            them as ``ModelMeta.arch`` unless ``stored_arch`` is set.
        load: ``load(spec, meta) -> Predictor``: the predictor of a checkpoint
            (``spec.source`` its path, ``meta`` its metadata; tensors are read by
            the family, e.g. :func:`geoseg.models.runtime.load_module`, which checks
            the file's digest), or of a weights-free family (``meta`` None). Called
            once per worker process (:func:`geoseg.models.cache.load_predictor`).
        window_multiple: ``window_multiple(arch, options) -> int``: window sides
            must be a multiple of it (the output stride); ``arch`` is one of
            ``archs``/``stored_arch``, ``options`` are ``ModelMeta.options``.
        build: ``build(meta) -> nn.Module``: the untrained module a checkpoint's
            metadata describes (None: nothing to build, e.g. weights-free or imported).
        net: ``net(arch, encoder, in_channels, out_channels, **options)``: the plain
            per-pixel network of ``arch`` (``(N, C, H, W) -> (N, out, H, W)`` logits),
            which families that wrap one (bottom-up instance, change, panoptic)
            build through :func:`geoseg.models.registry.build_model`.
        training: ``"module:function"`` of its ``geoseg train`` setup
            (``setup(cfg, device) -> TaskSetup``, see :mod:`geoseg.training.tasks`);
            None: not trainable here.
        stored_arch: ``ModelMeta.arch`` of its checkpoints when that is not the
            ``--arch`` (Panoptic-DeepLab stores ``panoptic-deeplab``, the body in options).
        inputs: one of :data:`INPUTS`.
        source: one of :data:`SOURCES`.
        weights_free: named by ``-m NAME``, needs no checkpoint (and picks bands by
            role, not by the checkpoint's band list).
        schema: the fixed classes of a weights-free family.
        encoders: what ``--encoder`` takes, for ``geoseg models``.
        details: more lines for ``geoseg models`` (bands, classes).
    """

    name: str
    summary: str
    tasks: tuple[str, ...]
    archs: tuple[str, ...]
    load: Callable[[ModelSpec, ModelMeta | None], Predictor]
    window_multiple: WindowMultiple = depth_multiple
    build: Callable[[ModelMeta], nn.Module] | None = None
    net: Callable[..., nn.Module] | None = None
    training: str | None = None
    stored_arch: str | None = None
    inputs: str = "pixels"
    source: str = "torch"
    weights_free: bool = False
    schema: ClassSchema | None = None
    encoders: str = ""
    details: Callable[[], list[str]] | None = None

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or self.inputs not in INPUTS or self.source not in SOURCES:
            raise ValueError(
                f"family {self.name!r}: tasks {list(self.tasks)} (known: {', '.join(TASKS)}), "
                f"inputs {self.inputs!r} (known: {', '.join(INPUTS)}), source {self.source!r} "
                f"(known: {', '.join(SOURCES)})"
            )

    @property
    def checkpoint_archs(self) -> tuple[str, ...]:
        """The ``ModelMeta.arch`` values of its checkpoints."""
        return (self.stored_arch,) if self.stored_arch else self.archs

    def describe(self) -> list[str]:
        """Its lines in ``geoseg models``."""
        lines = [
            f"{self.name}  {self.summary}",
            f"  tasks: {', '.join(self.tasks)}   inputs: {self.inputs}   runtime: {self.source}",
        ]
        if not self.weights_free:
            lines.append(f"  --arch: {', '.join(self.archs)}")
        if self.encoders:
            lines.append(f"  --encoder: {self.encoders}")
        return lines + (self.details() if self.details else [])
