"""Frozen value objects shared by every layer.

The option checks and message wording (:func:`require_at_least`, :func:`bands_count`,
...) live in :mod:`geoseg.checks`; they are imported here so older imports keep working.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from geoseg.checks import (
    a_model_of,
    bands_count,
    class_entry_fields,
    require_at_least,
    require_finite,
)
from geoseg.checks import parse_band_list as parse_band_list
from geoseg.errors import GeosegError

__all__ = [
    "DEGREE_GSD_BELOW",
    "METRES_PER_DEGREE",
    "MODEL_TASKS",
    "NODATA_LABEL",
    "OBJECT_SIZES_KEY",
    "ClassInfo",
    "ClassSchema",
    "ModelMeta",
    "Normalization",
    "Predictor",
    "TileSpec",
    "a_model_of",
    "bands_count",
    "require_at_least",
    "require_finite",
]

#: Label value for "no data" in every uint8 label raster geoseg writes.
NODATA_LABEL = 255

#: What a checkpoint's model predicts (:attr:`ModelMeta.task`).
MODEL_TASKS = ("semantic", "change", "instance", "panoptic", "prompt")

#: :attr:`ModelMeta.provenance` key of the training objects' sizes (instance and
#: panoptic training, :mod:`geoseg.training.object_sizes`); absent in older checkpoints.
OBJECT_SIZES_KEY = "object_sizes"


#: A checkpoint GSD below this is not metres: training before GSDs were recorded in
#: metres stored the pixel width in the training CRS's unit, degrees for EPSG:4326.
DEGREE_GSD_BELOW = 0.01
#: Length of one degree of the WGS84 equator (pi * 6378137 / 180), m: converts those.
METRES_PER_DEGREE = 111_319.49


@dataclass(frozen=True)
class ClassInfo:
    """One class of a label schema.

    Attributes:
        id: value written into label rasters, 0-254.
        name: human-readable name, e.g. ``"forest"``.
        colour: ``(r, g, b)`` in 0-255, used for colour tables and legends.
        is_thing: True for countable objects (instances), False for "stuff".
    """

    id: int
    name: str
    colour: tuple[int, int, int]
    is_thing: bool = False


@dataclass(frozen=True)
class ClassSchema:
    """Ordered classes; model output channel ``k`` maps to ``classes[k]``."""

    classes: tuple[ClassInfo, ...]

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if not ids:
            raise GeosegError("a class schema needs at least one class")
        if len(set(ids)) != len(ids):
            raise GeosegError(f"class ids must be unique, got {ids}")
        if any(not 0 <= i < NODATA_LABEL for i in ids):
            raise GeosegError(f"class ids must be in 0-254 (255 is nodata), got {ids}")

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table: class id -> RGBA; nodata is transparent black."""
        table = {c.id: (*c.colour, 255) for c in self.classes}
        table[NODATA_LABEL] = (0, 0, 0, 0)
        return table

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"id": c.id, "name": c.name, "colour": list(c.colour), "is_thing": c.is_thing}
            for c in self.classes
        ]

    @classmethod
    def from_json(cls, items: Iterable[Mapping[str, Any]]) -> ClassSchema:
        """The schema of a class list: ``[{id, name, colour, is_thing?}, ...]``.

        Raises:
            ConfigError: an entry without id, name or colour, or with a bad value
                (:func:`geoseg.checks.class_entry_fields` names it).
            GeosegError: not a list of entries, ids repeated or out of range.
        """
        try:
            entries = [class_entry_fields(k, d) for k, d in enumerate(items)]
        except TypeError as exc:  # not a list
            raise GeosegError(f"malformed class schema: {exc}") from exc
        return cls(tuple(ClassInfo(*fields) for fields in entries))


@dataclass(frozen=True)
class Normalization:
    """Per-band affine normalization applied before a model: ``(x * scale - mean) / std``.

    With ``clip_low``/``clip_high`` (percentile clipping, for heavy-tailed bands as
    nnU-Net does for CT) the scaled value is first clipped to ``[clip_low, clip_high]``:
    ``(clip(x * scale, low, high) - mean) / std``.

    Attributes:
        mean: per-band mean of the scaled (and clipped) input.
        std: per-band standard deviation of the scaled (and clipped) input (> 0).
        scale: multiplier from stored digital numbers to model units,
            e.g. ``1e-4`` for Sentinel-2 L1C stored as reflectance x 10000.
        clip_low, clip_high: per-band clipping bounds in model units, or None (no clipping).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0
    clip_low: tuple[float, ...] | None = None
    clip_high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise GeosegError("normalization mean and std need one value per band")
        if (self.clip_low is None) != (self.clip_high is None):
            raise GeosegError("normalization clip_low and clip_high come together (or neither)")
        if self.clip_low is not None and self.clip_high is not None:
            if not len(self.clip_low) == len(self.clip_high) == len(self.mean):
                raise GeosegError("normalization clip_low and clip_high need one value per band")
            bounds = (*self.clip_low, *self.clip_high)
            if not all(math.isfinite(v) for v in bounds) or any(
                lo > hi for lo, hi in zip(self.clip_low, self.clip_high, strict=True)
            ):
                raise GeosegError(
                    f"normalization clip bounds must be finite with low <= high, got "
                    f"{self.clip_low} and {self.clip_high}"
                )
        values = (*self.mean, *self.std, self.scale)
        if not all(math.isfinite(v) for v in values):
            raise GeosegError(
                f"normalization values must be finite numbers, got mean {self.mean}, "
                f"std {self.std}, scale {self.scale}"
            )
        if any(s <= 0 for s in self.std):
            raise GeosegError(f"normalization std values must be > 0, got {self.std}")
        if self.scale <= 0:
            raise GeosegError(f"normalization scale must be > 0, got {self.scale}")

    def clip_arrays(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
        """``float32`` low and high bounds reshaped to ``shape`` (e.g. ``(1, C, 1, 1)``), or
        None when this normalization does not clip."""
        if self.clip_low is None or self.clip_high is None:
            return None
        return (
            np.asarray(self.clip_low, np.float32).reshape(shape),
            np.asarray(self.clip_high, np.float32).reshape(shape),
        )


@dataclass(frozen=True)
class TileSpec:
    """The global window grid of tiled inference (see DESIGN.md).

    Attributes:
        window: window side ``W`` in pixels.
        margin: margin ``m`` in pixels trimmed from each side of a window.
        chunk_windows: dask chunk side as a number of strides (``chunk = c * S``).
        blend: ``"trim"`` (each pixel from the one window whose core holds it) or
            ``"hann"`` (overlapping windows averaged with a 2-D Hann weight).
        batch_size: windows per model call.
    """

    window: int = 256
    margin: int = 32
    chunk_windows: int = 4
    blend: str = "trim"
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.window < 8:
            raise GeosegError(f"window must be at least 8 px, got {self.window}")
        if not 0 <= self.margin <= self.window // 4:
            raise GeosegError(
                f"margin must be between 0 and window/4 = {self.window // 4} px, got {self.margin}"
            )
        if self.chunk_windows < 1:
            raise GeosegError(f"chunk must be at least one stride, got {self.chunk_windows}")
        if self.blend not in ("trim", "hann"):
            raise GeosegError(f"blend must be 'trim' or 'hann', got {self.blend!r}")
        if self.batch_size < 1:
            raise GeosegError(f"batch size must be >= 1, got {self.batch_size}")

    @property
    def stride(self) -> int:
        """``S = W - 2m``: the side of the core each window writes."""
        return self.window - 2 * self.margin

    @property
    def halo(self) -> int:
        """Pixels of context a chunk needs on each side."""
        return self.margin if self.blend == "trim" else self.stride + self.margin

    @property
    def chunk(self) -> int:
        """Chunk side in pixels; for hann at least two strides so the halo fits."""
        c = self.chunk_windows if self.blend == "trim" else max(2, self.chunk_windows)
        return c * self.stride


def _floats(values: Sequence[Any] | None) -> tuple[float, ...] | None:
    """A JSON list of numbers as a tuple of floats; None stays None."""
    return None if values is None else tuple(float(v) for v in values)


@runtime_checkable
class Predictor(Protocol):
    """A loaded model that turns windows of a scene into class probabilities.

    Attributes:
        schema: the classes; output channel ``k`` is ``schema.classes[k]``.
        bands: names of the input bands the model expects, in order.
    """

    schema: ClassSchema
    bands: tuple[str, ...]

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of windows.

        Args:
            batch: ``(N, C, H, W) float32`` band values as stored in the scene
                (digital numbers; the predictor applies its own scaling).
            valid: ``(N, H, W) bool``, False where the scene has no data. Values
                of ``batch`` there are arbitrary and must not influence valid pixels
                more than a constant fill would.

        Returns:
            ``(N, K, H, W) float32`` probabilities summing to 1 over ``K``.
        """
        ...


@dataclass(frozen=True)
class ModelMeta:
    """Everything a checkpoint says about its model, stored as JSON in the file.

    Attributes:
        task: one of :data:`MODEL_TASKS`: ``"semantic"`` (class probabilities),
            ``"change"`` (an early-fusion model on stacked dates), ``"instance"``
            (class logits + one boundary logit, ``K + 1`` output channels, grouped
            into objects of the schema's ``is_thing`` classes), ``"panoptic"``
            (things as instances and stuff as classes from one model) or ``"prompt"``
            (one object per point/box prompt, ``geoseg prompt``: SAM).
        arch: registry name, e.g. ``"unet"``.
        encoder: encoder name for smp architectures, e.g. ``"resnet18"``.
        bands: input band names in order, e.g. ``("B02", "B03", "B04", "B08")``.
        normalization: per-band input normalization.
        schema: output classes.
        window: window side in pixels the model was trained for.
        margin: default margin in pixels for tiled inference.
        gsd_m: ground sample distance of the training data, metres per pixel
            (geodesic for a geographic CRS; older checkpoints hold degrees there:
            :attr:`gsd_approx_m`).
        provenance: training data, epochs, software versions (free-form JSON).
        metrics: held-out scores (free-form JSON).
        options: extra builder keyword arguments (free-form JSON).
        temperature: the softmax temperature ``T > 0`` the predictor divides its
            logits by (post-hoc calibration, Guo et al. 2017: ``geoseg calibrate``
            and ``geoseg train`` with validation rasters fit it); 1 = uncalibrated.
            The labels do not depend on it (argmax), only the probabilities.
    """

    task: str
    arch: str
    encoder: str | None
    bands: tuple[str, ...]
    normalization: Normalization
    schema: ClassSchema
    window: int = 256
    margin: int = 32
    gsd_m: float | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.task not in MODEL_TASKS:
            raise GeosegError(
                f"model task must be one of {', '.join(MODEL_TASKS)}, got {self.task!r}"
            )
        if self.gsd_m is not None and not (math.isfinite(self.gsd_m) and self.gsd_m > 0):
            raise GeosegError(f"model GSD must be a finite number of metres > 0, got {self.gsd_m}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise GeosegError(f"model temperature must be finite and > 0, got {self.temperature}")

    @property
    def gsd_approx_m(self) -> float | None:
        """:attr:`gsd_m` in metres; an old checkpoint's value in degrees (under
        :data:`DEGREE_GSD_BELOW`) converted at :data:`METRES_PER_DEGREE` (approximate)."""
        if self.gsd_m is None or self.gsd_m >= DEGREE_GSD_BELOW:
            return self.gsd_m
        return self.gsd_m * METRES_PER_DEGREE

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "arch": self.arch,
            "encoder": self.encoder,
            "bands": list(self.bands),
            "normalization": {
                "mean": list(self.normalization.mean),
                "std": list(self.normalization.std),
                "scale": self.normalization.scale,
                **self._clip_json(),
            },
            "classes": self.schema.to_json(),
            "window": self.window,
            "margin": self.margin,
            "gsd_m": self.gsd_m,
            "provenance": dict(self.provenance),
            "metrics": dict(self.metrics),
            "options": dict(self.options),
            # only when calibrated: an uncalibrated checkpoint's JSON stays as it was
            **({"temperature": self.temperature} if self.temperature != 1.0 else {}),
        }

    def _clip_json(self) -> dict[str, list[float]]:
        """The clipping bounds, only when set (older geoseg reads such files unchanged)."""
        n = self.normalization
        if n.clip_low is None or n.clip_high is None:
            return {}
        return {"clip_low": list(n.clip_low), "clip_high": list(n.clip_high)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelMeta:
        """Inverse of :meth:`to_json`; raises ``KeyError``/``TypeError``/``ValueError``."""
        norm = d["normalization"]
        return cls(
            task=str(d["task"]),
            arch=str(d["arch"]),
            encoder=None if d.get("encoder") is None else str(d["encoder"]),
            bands=tuple(str(b) for b in d["bands"]),
            normalization=Normalization(
                mean=tuple(float(v) for v in norm["mean"]),
                std=tuple(float(v) for v in norm["std"]),
                scale=float(norm.get("scale", 1.0)),
                clip_low=_floats(norm.get("clip_low")),
                clip_high=_floats(norm.get("clip_high")),
            ),
            schema=ClassSchema.from_json(d["classes"]),
            window=int(d.get("window", 256)),
            margin=int(d.get("margin", 32)),
            gsd_m=None if d.get("gsd_m") is None else float(d["gsd_m"]),
            provenance=dict(d.get("provenance", {})),
            metrics=dict(d.get("metrics", {})),
            options=dict(d.get("options", {})),
            temperature=float(d.get("temperature", 1.0)),
        )
