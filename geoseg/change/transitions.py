"""Transition (from-class x to-class) matrices in true ground area, streamed block by block.

Each pixel pair ``(from, to)`` gets the code ``from_index * K + to_index`` (``K*K``
when either date is nodata or not a class of the schema). A chunk contributes a
``bincount`` of its codes, weighted by the ellipsoidal area of each of its pixels
(:func:`geoseg.areas.pixel_area_m2`).

Chunk-size invariance is exact, not approximate: pixel areas are quantised to
multiples of 2**-32 m² (exact in float64 below 2**21 m² per pixel, i.e. for any
pixel under 2 km²) and summed as integers, split into 16-bit limbs so that the
float64 ``bincount`` of a chunk is exact for chunks of up to 2**37 pixels, then
added into Python integers. Integer sums do not depend on order, so every number
is the same whatever the chunk size, scheduler or worker count.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from affine import Affine

from geoseg.areas import ACRE_M2, HECTARE_M2, pixel_area_m2
from geoseg.errors import GeosegError
from geoseg.tiling.confusion import remap_values
from geoseg.tiling.execute import Progress, store_blocks
from geoseg.types import NODATA_LABEL

__all__ = ["TransitionMatrix", "TransitionSink", "transition_codes", "transition_matrix"]

_QUANTUM = 2.0**32  # area units per m²
_LIMB = 65536.0
_LIMBS = 5  # 80 bits: any pixel area below 2**48 m²
KM2_M2 = 1e6


@dataclass(frozen=True)
class TransitionMatrix:
    """Areas and pixel counts of every (from, to) class pair.

    Attributes:
        class_ids: the ``K`` class ids, in row/column order.
        names: the ``K`` class names.
        area_m2: ``(K, K) float64`` ground area (m²) that was row class at the
            first date and column class at the second.
        pixels: ``(K, K) int64`` pixel counts of the same.
        nodata_area_m2: area where either date is nodata (or not a class).
        nodata_pixels: pixels where either date is nodata.
    """

    class_ids: tuple[int, ...]
    names: tuple[str, ...]
    area_m2: np.ndarray
    pixels: np.ndarray
    nodata_area_m2: float
    nodata_pixels: int

    def area(self, unit: str = "ha") -> np.ndarray:
        """``(K, K)`` areas in ``m2``, ``ha``, ``acres`` or ``km2``."""
        return np.asarray(self.area_m2 / _unit_m2(unit))

    @property
    def total_area_m2(self) -> float:
        """Area of every pixel of the grid, nodata included."""
        return float(self.area_m2.sum()) + self.nodata_area_m2

    def gross_gain_m2(self) -> np.ndarray:
        """``(K,)`` area that became each class (column sums without the diagonal)."""
        return np.asarray(self.area_m2.sum(axis=0) - np.diag(self.area_m2))

    def gross_loss_m2(self) -> np.ndarray:
        """``(K,)`` area each class lost to other classes (row sums without the diagonal)."""
        return np.asarray(self.area_m2.sum(axis=1) - np.diag(self.area_m2))

    def net_change_m2(self) -> np.ndarray:
        """``(K,)`` gain - loss per class (= area at the second date - area at the first)."""
        return self.gross_gain_m2() - self.gross_loss_m2()

    def gross_gain_pixels(self) -> np.ndarray:
        return np.asarray(self.pixels.sum(axis=0) - np.diag(self.pixels))

    def gross_loss_pixels(self) -> np.ndarray:
        return np.asarray(self.pixels.sum(axis=1) - np.diag(self.pixels))


def _unit_m2(unit: str) -> float:
    units = {"m2": 1.0, "ha": HECTARE_M2, "acres": ACRE_M2, "km2": KM2_M2}
    if unit not in units:
        raise GeosegError(f"unknown area unit {unit!r}; use one of {', '.join(units)}")
    return units[unit]


def transition_codes(before: np.ndarray, after: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """``(h, w) int32`` codes ``from_index * K + to_index``; ``K*K`` where either is nodata.

    Args:
        before, after: ``(h, w)`` class ids (255 or any id not in ``class_ids`` = nodata).
        class_ids: the ``K`` classes, in matrix order.
    """
    k = len(class_ids)
    index = {int(c): i for i, c in enumerate(class_ids)}
    a, b = remap_values(before, index), remap_values(after, index)
    nodata = (a == NODATA_LABEL) | (b == NODATA_LABEL)
    return np.where(nodata, k * k, a * k + b).astype(np.int32)


class TransitionSink:
    """``sink[(slice, ys, xs)] = (2, h, w)`` blocks of ``[before, after]`` add to the matrix.

    Args:
        class_ids: the ``K`` classes, in matrix order.
        crs, transform: the grid the blocks' slices refer to (areas come from it).
    """

    def __init__(
        self, class_ids: Sequence[int], crs: Any, transform: Affine, n_zones: int = 1
    ) -> None:
        self.class_ids = [int(c) for c in class_ids]
        self._crs, self._transform = crs, transform
        self._ncodes = len(self.class_ids) ** 2 + 1
        self.n_zones = n_zones
        self.area_units = [0] * (self._ncodes * n_zones)  # exact integers, in 2**-32 m²
        self.pixels = np.zeros(self._ncodes * n_zones, np.int64)
        self._lock = threading.Lock()

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        self.add_codes(key[-2], key[-1], transition_codes(block[0], block[1], self.class_ids))

    def add_codes(
        self,
        ys: slice,
        xs: slice,
        codes: np.ndarray,
        zones: Sequence[tuple[int, np.ndarray]] | None = None,
    ) -> None:
        """Add a ``(h, w)`` block of transition codes at rows ``ys``, columns ``xs``.

        Args:
            ys, xs: where the block lies on the grid.
            codes: ``(h, w) int`` codes ``from_index * K + to_index`` (``K*K`` nodata).
            zones: ``(zone, (h, w) bool mask)`` pairs: the block's pixels under each
                mask add to that zone's matrix (zones may overlap). None: every
                pixel adds to zone 0.
        """
        area = pixel_area_m2(
            self._crs, self._transform, np.arange(ys.start, ys.stop), np.arange(xs.start, xs.stop)
        )
        codes = np.asarray(codes, dtype=np.int64)
        for zone, mask in zones if zones is not None else [(0, None)]:
            if mask is None:
                self._add(zone, codes.ravel(), area.ravel())
            elif mask.any():
                self._add(zone, codes[mask], area[mask])

    def _add(self, zone: int, codes: np.ndarray, area: np.ndarray) -> None:
        units = np.round(area * _QUANTUM)
        limb_sums = []
        for _ in range(_LIMBS):
            limb = np.mod(units, _LIMB)
            units = (units - limb) / _LIMB
            limb_sums.append(np.bincount(codes, weights=limb, minlength=self._ncodes))
        counts = np.bincount(codes, minlength=self._ncodes)
        chunk_units = [
            sum(int(s[c]) << (16 * i) for i, s in enumerate(limb_sums)) for c in range(self._ncodes)
        ]
        offset = zone * self._ncodes
        with self._lock:
            self.pixels[offset : offset + self._ncodes] += counts
            for c, u in enumerate(chunk_units):
                self.area_units[offset + c] += u

    def matrix(self, names: Sequence[str], zone: int = 0) -> TransitionMatrix:
        """The sums of ``zone`` as a :class:`TransitionMatrix` (``names`` in class order)."""
        k = len(self.class_ids)
        part = slice(zone * self._ncodes, (zone + 1) * self._ncodes)
        area = np.array([u / _QUANTUM for u in self.area_units[part]])
        pixels = self.pixels[part]
        return TransitionMatrix(
            class_ids=tuple(self.class_ids),
            names=tuple(names),
            area_m2=area[: k * k].reshape(k, k),
            pixels=pixels[: k * k].reshape(k, k).copy(),
            nodata_area_m2=float(area[k * k]),
            nodata_pixels=int(pixels[k * k]),
        )


def transition_matrix(
    before: da.Array,
    after: da.Array,
    crs: Any,
    transform: Affine,
    class_ids: Sequence[int],
    names: Sequence[str],
    scheduler: str = "threads",
    workers: int | None = None,
    progress: Progress | None = None,
) -> TransitionMatrix:
    """Transition areas between two aligned label maps, streamed block by block.

    Args:
        before, after: ``(H, W) uint8`` dask arrays on the same grid (255 = nodata).
        crs, transform: that grid.
        class_ids, names: the ``K`` classes in matrix order.
        scheduler, workers, progress: as for :func:`geoseg.tiling.execute.store_blocks`.
    """
    if before.shape != after.shape:
        raise GeosegError(f"label maps differ in shape: {before.shape} vs {after.shape}")
    sink = TransitionSink(class_ids, crs, transform)
    pair = da.stack([before, after.rechunk(before.chunks)]).rechunk({0: 2})
    store_blocks(pair, sink, scheduler, workers, progress)
    return sink.matrix(names)
