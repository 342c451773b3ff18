"""Label values that are not classes of the schema: found, counted and measured per map.

Change detection counts a pixel whose value is neither a class of the schema nor
nodata (255) as nodata. That is the only sensible count, but done silently it
hides a wrong map (a value from another model, a remapping gone wrong), so the
values are found here, with their pixel counts and exact ground areas, for a
warning and the report. One extra pass reads every map and keeps a 256-bin
histogram per block; only maps that hold such values are measured (a second
pass, through :func:`geoseg.change.transitions.transition_matrix`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from geoseg.areas import HECTARE_M2
from geoseg.change.align import AlignedMaps
from geoseg.change.transitions import transition_matrix
from geoseg.tiling.execute import store_blocks
from geoseg.types import NODATA_LABEL

__all__ = [
    "UnknownValues", "find_unknown_values", "warn_unknown_values", "warn_values_outside_schema",
]  # fmt: skip

log = logging.getLogger(__name__)

#: Values measured per pass (15 classes: uint8 pair codes).
_GROUP = 15


@dataclass(frozen=True)
class UnknownValues:
    """Values of one map that are not classes of the schema (counted as nodata).

    Attributes:
        path: the map.
        values: the values, ascending.
        pixels: pixels holding each value (on the analysed grid).
        area_m2: ground area of those pixels, m² (see :mod:`geoseg.areas`).
    """

    path: str
    values: tuple[int, ...]
    pixels: tuple[int, ...]
    area_m2: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        """``{"map", "values": [{"value", "pixels", "area_m2", "area_ha"}]}``."""
        rows = [
            {"value": v, "pixels": p, "area_m2": a, "area_ha": a / HECTARE_M2}
            for v, p, a in zip(self.values, self.pixels, self.area_m2, strict=True)
        ]
        return {"map": self.path, "values": rows}


class _HistogramSink:
    """Sums ``(n, 1, 256)`` per-block value histograms into ``(n, 256)`` totals."""

    def __init__(self, n: int) -> None:
        self.totals = np.zeros((n, 256), np.int64)
        self._lock = threading.Lock()

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        with self._lock:
            self.totals += block[:, 0, :]


def _histograms(maps: np.ndarray) -> np.ndarray:
    """``(n, h, w) uint8`` -> ``(n, 1, 256) int64`` value counts per map."""
    return np.stack([np.bincount(m.ravel(), minlength=256) for m in maps])[:, None, :]


def find_unknown_values(
    aligned: AlignedMaps, scheduler: str = "threads", workers: int | None = None
) -> list[UnknownValues]:
    """The maps of ``aligned`` that hold values outside the schema (and 255), in date order.

    Args:
        aligned: the maps on their common grid.
        scheduler, workers: as for :func:`geoseg.tiling.execute.store_blocks`.
    """
    before = aligned.labels[0]
    stack = da.stack([lab.rechunk(before.chunks) for lab in aligned.labels]).rechunk({0: -1})
    n = len(aligned.labels)
    hist = da.map_blocks(
        _histograms, stack, dtype=np.int64,
        chunks=((n,), (1,) * len(before.chunks[0]), (256,) * len(before.chunks[1])),
    )  # fmt: skip
    sink = _HistogramSink(n)
    store_blocks(hist, sink, scheduler, workers)
    known = np.zeros(256, bool)
    known[[*aligned.schema.ids, NODATA_LABEL]] = True
    found = []
    for path, labels, counts in zip(aligned.paths, aligned.labels, sink.totals, strict=True):
        values = [int(v) for v in np.flatnonzero((counts > 0) & ~known)]
        if values:
            found.append(_measure(aligned, path, labels, values, scheduler, workers))
    return found


def _measure(
    aligned: AlignedMaps, path: str, labels: da.Array, values: Sequence[int],
    scheduler: str, workers: int | None,
) -> UnknownValues:  # fmt: skip
    """Exact pixel counts and areas of ``values`` in one map (the diagonal of a matrix).

    Values go 15 at a time (uint8 pair codes, small count tables): many distinct
    wrong values cost more passes, never more memory.
    """
    pixels: list[int] = []
    area: list[float] = []
    for start in range(0, len(values), _GROUP):
        group = values[start : start + _GROUP]
        m = transition_matrix(
            labels, labels, aligned.crs, aligned.transform, group, [str(v) for v in group],
            scheduler, workers,
        )  # fmt: skip
        pixels += [int(p) for p in np.diag(m.pixels)]
        area += [float(a) for a in np.diag(m.area_m2)]
    return UnknownValues(path, tuple(values), tuple(pixels), tuple(area))


def warn_unknown_values(found: Sequence[UnknownValues], classes: Sequence[int]) -> None:
    """One warning per map: which values, how many pixels, what area (counted as nodata)."""
    for f in found:
        parts = [
            f"{v}: {p:,} px, {a:,.2f} m2 ({a / HECTARE_M2:,.4f} ha)"
            for v, p, a in zip(f.values, f.pixels, f.area_m2, strict=True)
        ]
        warn_values_outside_schema(f.path, classes, parts)


def warn_values_outside_schema(
    path: str, classes: Sequence[int], parts: Sequence[str],
    fix: str = "check the map was written with this class schema",
) -> None:  # fmt: skip
    """The one wording of "these values of ``path`` are not classes" (change, train).

    Args:
        path: the map or label raster.
        classes: the schema's class ids.
        parts: one ``"value: N px ..."`` text per value.
        fix: what to check.
    """
    log.warning(
        "%s: values that are not classes of its schema (ids %s) were counted as nodata: %s; %s",
        path, ", ".join(str(c) for c in classes), ", ".join(parts), fix,
    )  # fmt: skip
