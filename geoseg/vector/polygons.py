"""``Polygons``: a column table of polygons in global pixel coordinates.

Polygonization works in pixel coordinates, where every vertex is an integer pixel
corner: unions across chunk seams are then exact, and the same pixel corner gets
the same CRS coordinate whichever chunk produced it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
        area_m2: ``(N,) float64`` true ground area, when already computed.
        perim_m: ``(N,) float64`` ground perimeter, when already computed.
        hole_area_m2: ``(N,) float64`` true area of the polygon's holes together,
            less parts nested in them (seam polygons measured in a worker; a
            dissolve keeps the holes, so the union's area is its outline's minus
            these; see :func:`geoseg.vector.attributes.hole_area_perimeter_m`).
        hole_perim_m: ``(N,) float64`` ground length of the rings inside the
            outline together (holes' and nested parts').
    """

    geometry: np.ndarray
    class_id: np.ndarray
    instance_id: np.ndarray | None = None
    conf_sum: np.ndarray | None = None
    conf_n: np.ndarray | None = None
    area_m2: np.ndarray | None = None
    perim_m: np.ndarray | None = None
    hole_area_m2: np.ndarray | None = None
    hole_perim_m: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.geometry.size)

    def __getstate__(self) -> dict[str, Any]:
        # One vectorized WKB call instead of pickling each geometry (workers send
        # hundreds of thousands of polygons to the client).
        state = dict(vars(self))
        state["geometry"] = self.packed().geometry
        state["packed"] = self.is_packed
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if not state.pop("packed", False):
            state["geometry"] = np.asarray(shapely.from_wkb(state["geometry"]), dtype=object)
        for name, value in state.items():
            object.__setattr__(self, name, value)

    @property
    def is_packed(self) -> bool:
        """Whether ``geometry`` holds WKB ``bytes`` (see :meth:`packed`)."""
        return bool(self.geometry.size) and isinstance(self.geometry[0], bytes)

    def packed(self) -> Polygons:
        """A copy with ``geometry`` as WKB ``bytes``: about a third of the memory of GEOS
        objects for small rings, for polygons that wait (seam polygons until the merge)."""
        if self.is_packed or not self.geometry.size:
            return self
        return self.replace(geometry=np.asarray(shapely.to_wkb(self.geometry), dtype=object))

    def shapes(self, index: Any = slice(None)) -> np.ndarray:
        """``geometry[index]`` as shapely objects (decoded if :meth:`packed`)."""
        geoms = np.asarray(self.geometry[index], dtype=object)
        if geoms.size and isinstance(geoms.flat[0], bytes):
            return np.asarray(shapely.from_wkb(geoms), dtype=object)
        return geoms

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

        cols: dict[str, Any] = {k: None if v is None else v[index] for k, v in vars(self).items()}
        return dataclasses.replace(self, **cols)

    def replace(self, **columns: Any) -> Polygons:
        """A copy with some columns replaced (e.g. ``geometry=...``)."""
        return dataclasses.replace(self, **columns)

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
            return None if any(c is None for c in cols) else np.concatenate(cols)

        cols: dict[str, Any] = {name: cat(name) for name in vars(items[0])}
        return dataclasses.replace(items[0], **cols)

    def sorted(self) -> Polygons:
        """Deterministic order: class, instance, then bounds (top, left, bottom, right), area."""
        b = shapely.bounds(self.geometry).reshape(-1, 4)
        keys = self.keys()
        order = np.lexsort(
            (shapely.area(self.geometry), b[:, 2], b[:, 3], b[:, 0], b[:, 1], keys[:, 1],
             keys[:, 0])
        )  # fmt: skip
        return self.take(order)
