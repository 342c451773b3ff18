"""``Polygons``: a column table of polygons in global pixel coordinates.

Polygonization works in pixel coordinates, where every vertex is an integer pixel
corner: unions across chunk seams are then exact, and the same pixel corner gets
the same CRS coordinate whichever chunk produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely

__all__ = ["Polygons"]


@dataclass(frozen=True)
class Polygons:
    """Polygons with per-polygon values, all arrays of length ``N``.

    Attributes:
        geometry: ``(N,) object`` shapely (Multi)Polygons, pixel coordinates
            (x = column, y = row, both of pixel corners) of the whole raster.
        class_id: ``(N,) int64`` class of each polygon.
        instance_id: ``(N,) int64`` instance of each polygon, or None without an
            instance band.
        conf_sum: ``(N,) float64`` sum of the confidence (0-1) of the polygon's
            pixels, or None without a confidence band.
        conf_n: ``(N,) int64`` pixels that have a confidence, or None.
    """

    geometry: np.ndarray
    class_id: np.ndarray
    instance_id: np.ndarray | None = None
    conf_sum: np.ndarray | None = None
    conf_n: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.geometry.size)

    @property
    def n_pixels(self) -> np.ndarray:
        """``(N,) int64`` pixels covered (the area in pixel units, exact)."""
        return np.rint(shapely.area(self.geometry)).astype(np.int64)

    @property
    def conf_mean(self) -> np.ndarray | None:
        """``(N,) float64`` mean confidence of the pixels (NaN where none has one)."""
        if self.conf_sum is None or self.conf_n is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.conf_n > 0, self.conf_sum / self.conf_n, np.nan)

    def keys(self) -> np.ndarray:
        """``(N, 2) int64``: (class, instance); polygons merge only with equal keys."""
        inst = self.instance_id if self.instance_id is not None else np.zeros(len(self), np.int64)
        return np.column_stack([self.class_id, inst]).astype(np.int64)

    def take(self, index: np.ndarray) -> Polygons:
        """The polygons at ``index`` (integer or boolean array)."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return Polygons(
            self.geometry[index],
            self.class_id[index],
            pick(self.instance_id),
            pick(self.conf_sum),
            pick(self.conf_n),
        )

    def with_geometry(self, geometry: np.ndarray) -> Polygons:
        return Polygons(geometry, self.class_id, self.instance_id, self.conf_sum, self.conf_n)

    @staticmethod
    def empty(instances: bool = False, confidence: bool = False) -> Polygons:
        def col(on: bool, dtype: type) -> np.ndarray | None:
            return np.zeros(0, dtype) if on else None

        return Polygons(
            np.zeros(0, dtype=object),
            np.zeros(0, np.int64),
            col(instances, np.int64),
            col(confidence, np.float64),
            col(confidence, np.int64),
        )

    @staticmethod
    def concat(items: Sequence[Polygons]) -> Polygons:
        """All polygons of ``items`` in order (they must have the same optional columns)."""
        if not items:
            return Polygons.empty()

        def cat(name: str) -> np.ndarray | None:
            cols = [getattr(p, name) for p in items]
            return None if cols[0] is None else np.concatenate(cols)

        geometry = np.concatenate([p.geometry for p in items]) if items else np.zeros(0, object)
        class_id = cat("class_id")
        if class_id is None:  # pragma: no cover - class_id is never None
            raise ValueError("class_id missing")
        return Polygons(geometry, class_id, cat("instance_id"), cat("conf_sum"), cat("conf_n"))

    def sorted(self) -> Polygons:
        """Deterministic order: class, instance, then bounds (top, left, bottom, right), area."""
        b = shapely.bounds(self.geometry).reshape(-1, 4)
        keys = self.keys()
        order = np.lexsort(
            (shapely.area(self.geometry), b[:, 2], b[:, 3], b[:, 0], b[:, 1], keys[:, 1],
             keys[:, 0])
        )  # fmt: skip
        return self.take(order)
