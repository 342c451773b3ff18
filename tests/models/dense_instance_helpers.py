"""Shared inputs of the dense one-stage instance model tests (SOLOv2, CondInst)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from geoseg.training.sampling import Batch
from geoseg.types import ClassInfo, ClassSchema, ModelMeta, Normalization
from tests.stitching.oracle import THING_SCHEMA

#: Ground (stuff) and building (thing): the schema of the tiny overfits and CLI runs.
BUILDINGS = ClassSchema(
    (ClassInfo(0, "ground", (0, 0, 0)), ClassInfo(1, "building", (200, 0, 0), is_thing=True))
)


def box(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    """``shape`` bool mask, True on ``[rows, cols]``."""
    out = np.zeros(shape, bool)
    out[rows, cols] = True
    return out


def two_squares() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 3-band 64 px window with two bright squares and their masks."""
    a = box((64, 64), slice(8, 24), slice(10, 26))
    b = box((64, 64), slice(36, 56), slice(34, 54))
    image = np.random.default_rng(0).normal(0, 0.1, (3, 64, 64)).astype(np.float32)
    image[:, a | b] += 1.0
    return image, a, b


def squares_batch(image: np.ndarray, a: np.ndarray, b: np.ndarray) -> Batch:
    """One-window training batch of :func:`two_squares`: ids 1 (``a``) and 2 (``b``)."""
    ids = a * 1 + b * 2
    return Batch(image[None], np.ones((1, 64, 64), bool), (ids > 0)[None].astype(np.int64),
                 ids[None].astype(np.int64))  # fmt: skip


def empty_batch() -> Batch:
    """Two 3-band 64 px windows without any object (all valid, all ground)."""
    return Batch(np.zeros((2, 3, 64, 64), np.float32), np.ones((2, 64, 64), bool),
                 np.zeros((2, 64, 64), np.int64), np.zeros((2, 64, 64), np.int64))  # fmt: skip


def instance_meta(
    arch: str,
    options: Mapping[str, object],
    bands: int,
    schema: ClassSchema = THING_SCHEMA,
    **extra: object,
) -> ModelMeta:
    """An ``instance``/``arch`` checkpoint's metadata: ``bands`` identity-normalized
    bands, a 64 px window with 8 px margins, ``options`` updated by ``extra``."""
    return ModelMeta(
        task="instance", arch=arch, encoder="resnet18",
        bands=tuple(f"b{i}" for i in range(bands)),
        normalization=Normalization((0.0,) * bands, (1.0,) * bands), schema=schema,
        window=64, margin=8, options={**options, **extra},
    )  # fmt: skip
