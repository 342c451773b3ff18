"""The transition (from-class x to-class) matrix: areas and pixel counts of every class pair."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.areas import ACRE_M2, HECTARE_M2
from geoseg.errors import GeosegError

__all__ = ["KM2_M2", "TransitionMatrix"]

#: Square metres in a square kilometre.
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
        uncertain_area_m2: area the posterior rule left uncertain (neither change
            nor no change; :mod:`geoseg.change.posterior`); None for map differencing.
        uncertain_pixels: pixels of the same.
    """

    class_ids: tuple[int, ...]
    names: tuple[str, ...]
    area_m2: np.ndarray
    pixels: np.ndarray
    nodata_area_m2: float
    nodata_pixels: int
    uncertain_area_m2: float | None = None
    uncertain_pixels: int = 0

    def area(self, unit: str = "ha") -> np.ndarray:
        """``(K, K)`` areas in ``m2``, ``ha``, ``acres`` or ``km2``."""
        return np.asarray(self.area_m2 / _unit_m2(unit))

    @property
    def total_area_m2(self) -> float:
        """Area of every pixel of the grid: classes, uncertain and nodata."""
        return float(self.area_m2.sum()) + (self.uncertain_area_m2 or 0.0) + self.nodata_area_m2

    @property
    def changed_area_m2(self) -> float:
        """Area counted as change (off the diagonal; uncertain area is not change)."""
        return float(self.area_m2.sum() - np.trace(self.area_m2))

    def strata_area_m2(self) -> np.ndarray:
        """``(K*K,)`` areas of the change codes, then (posterior rule) the uncertain area:
        the strata of change.tif, in code order."""
        extra = [] if self.uncertain_area_m2 is None else [self.uncertain_area_m2]
        return np.concatenate([self.area_m2.ravel(), np.asarray(extra, np.float64)])

    def strata_pixels(self) -> np.ndarray:
        """``(K*K,)`` or ``(K*K + 1,) int64`` pixels of the strata of :meth:`strata_area_m2`."""
        extra = [] if self.uncertain_area_m2 is None else [self.uncertain_pixels]
        return np.concatenate([self.pixels.ravel(), np.asarray(extra, np.int64)])

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
