"""Transition (from-class x to-class) matrices in true ground area, streamed block by block.

Each pixel pair ``(from, to)`` gets the code ``from_index * K + to_index`` (``K*K``
when either date is nodata or not a class of the schema). A chunk contributes the
pixel counts of its codes, weighted by the ellipsoidal area of each pixel
(:func:`geoseg.areas.pixel_area_m2`).

Pixel areas, cheaply: the ground area of a pixel is a smooth function of its
position, so it is computed once per *area cell* of the global pixel grid and a
chunk only counts its codes per (cell, code) with one integer ``bincount``:

* geographic and normal-aspect cylindrical CRSs (EPSG:4326, EPSG:3857,
  EPSG:6933, ...) with a north-up grid: every pixel of a row has the same area,
  so a cell is one whole row and the areas are exact;
* any other CRS (UTM, LAEA, ...): a cell is a ``B x B`` block of pixels (``B`` a
  power of two, at most 32, with ``B`` pixels spanning at most 512 m), and each of
  its pixels counts ``1/B²`` of the block's exact area. Block sums are exact (to
  ~1e-9); a single pixel is within ``(B * pixel / 2) * |grad ln(scale²)|`` of its
  own area: below 1e-5 relative even at the edge of a UTM zone (the target is
  0.1 %), and the errors of a block's pixels cancel in any patch that fills it.

Chunk-size invariance is exact, not approximate: cell areas are per pixel
quantised to multiples of 2**-32 m² (exact in float64 below 2**21 m² per pixel),
split into 24-bit limbs whose products with the pixel counts are exact int64s,
and added into Python integers. Integer sums do not depend on order, and cells
are anchored at the grid origin, so every number is the same whatever the chunk
size, scheduler or worker count.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from affine import Affine
from pyproj import CRS

from geoseg.areas import ACRE_M2, HECTARE_M2, crs_units_per_metre, pixel_area_m2
from geoseg.errors import GeosegError
from geoseg.tiling.confusion import remap_values
from geoseg.tiling.execute import Progress, store_blocks
from geoseg.types import NODATA_LABEL

__all__ = [
    "TransitionMatrix",
    "TransitionSink",
    "label_pair_codes",
    "transition_codes",
    "transition_matrix",
]

_QUANTUM = 2.0**32  # area units per m²
_LIMB_BITS = 24
_LIMBS = 3  # 72 bits: any pixel area below 2**40 m²
KM2_M2 = 1e6
#: Largest side (pixels) and ground span (m) of an area cell of a projected grid.
_MAX_CELL = 32
_CELL_SPAN_M = 512.0
_MAX_TABLE_CELLS = 4_000_000
_MAX_CACHED_BASE = 1 << 22  # pixels (32 MB of intp)
#: EPSG method codes of normal-aspect cylindrical projections: area depends on y only.
_CYLINDRICAL = frozenset({1024, 1026, 1028, 1029, 1044, 9804, 9805, 9823, 9834, 9835, 9842})


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


def _label_code_dtype(k: int) -> type[np.unsignedinteger[Any]]:
    return np.uint8 if (k + 1) ** 2 <= 256 else np.uint16


def label_pair_codes(before: np.ndarray, after: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """``(h, w)`` codes ``i * (K + 1) + j`` of class indices, ``K`` standing for nodata.

    A compact form of :func:`transition_codes` for counting: ``uint8`` up to 15
    classes (``uint16`` above), computed with a few byte-wide passes when the
    maps are ``uint8`` and the class ids are ``0 .. K-1``.

    Args:
        before, after: ``(h, w)`` class ids (255 or any id not in ``class_ids`` = nodata).
        class_ids: the ``K`` classes, in matrix order.
    """
    k = len(class_ids)
    dtype = _label_code_dtype(k)
    if before.dtype == np.uint8 and after.dtype == np.uint8:
        if [int(c) for c in class_ids] == list(range(k)):
            # any value past the last class (255 included) -> k; an array operand
            # keeps np.minimum on its vectorised loop (a scalar one is ~20x slower)
            cap = np.full(before.shape, k, np.uint8)
            a = np.minimum(before, cap).astype(dtype)
            a *= k + 1
            a += np.minimum(after, cap, out=cap)
            return a
        lut_from, lut_to = np.full(256, k * (k + 1), dtype), np.full(256, k, dtype)
        for i, c in enumerate(class_ids):
            if 0 <= int(c) < NODATA_LABEL:
                lut_from[int(c)], lut_to[int(c)] = i * (k + 1), i
        return np.take(lut_from, before) + np.take(lut_to, after)
    index = {int(c): i for i, c in enumerate(class_ids)}
    a, b = remap_values(before, index), remap_values(after, index)
    a[a == NODATA_LABEL], b[b == NODATA_LABEL] = k, k
    return (a * (k + 1) + b).astype(dtype)


def transition_codes(before: np.ndarray, after: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """``(h, w) int32`` codes ``from_index * K + to_index``; ``K*K`` where either is nodata.

    Args:
        before, after: ``(h, w)`` class ids (255 or any id not in ``class_ids`` = nodata).
        class_ids: the ``K`` classes, in matrix order.
    """
    k = len(class_ids)
    pair = label_pair_codes(before, after, class_ids).astype(np.int32)
    i, j = np.divmod(pair, k + 1)
    return np.where((i == k) | (j == k), k * k, i * k + j).astype(np.int32)


def _pyproj_crs(crs: Any) -> CRS:
    if isinstance(crs, CRS):
        return crs
    if hasattr(crs, "to_wkt"):
        return CRS.from_wkt(crs.to_wkt())
    return CRS.from_user_input(crs)


def _area_varies_by_row_only(crs: CRS, transform: Affine) -> bool:
    """True for a north-up grid in a geographic or normal-aspect cylindrical CRS."""
    if transform.b != 0 or transform.d != 0:
        return False
    if crs.is_geographic:
        return True
    op = crs.coordinate_operation
    return (
        op is not None
        and str(op.method_code or "").isdigit()
        and (int(op.method_code) in _CYLINDRICAL)
    )


class _AreaCells:
    """The area cells of a grid (see the module doc) and the quantised area of their pixels.

    Args:
        crs, transform: the grid.
        shape: ``(H, W)`` of the grid, if known: the areas of all its cells are then
            computed at once (one projection call) when there are at most
            ``_MAX_TABLE_CELLS``, instead of block by block.
    """

    def __init__(self, crs: Any, transform: Affine, shape: tuple[int, int] | None = None) -> None:
        self._crs, self._transform = _pyproj_crs(crs), transform
        if _area_varies_by_row_only(self._crs, transform):
            self.side = 0  # a cell is a whole row
        else:
            pixel_m = max(np.hypot(transform.a, transform.d), np.hypot(transform.b, transform.e))
            pixel_m /= crs_units_per_metre(self._crs)
            fit = int(_CELL_SPAN_M // pixel_m) if pixel_m > 0 else _MAX_CELL
            self.side = 1 << max(0, min(_MAX_CELL, fit).bit_length() - 1)
        self._table: np.ndarray | None = None
        if shape is not None:
            n_rows = -(-shape[0] // self.side) if self.side else shape[0]
            n_cols = -(-shape[1] // self.side) if self.side else 1
            if 0 < n_rows * n_cols <= _MAX_TABLE_CELLS:
                cols = np.arange(n_cols)
                strips = [self._areas(np.arange(r, min(r + 256, n_rows)), cols)
                          for r in range(0, n_rows, 256)]  # fmt: skip
                self._table = np.concatenate(strips)

    def phase(self, ys: slice, xs: slice) -> tuple[int, int]:
        """Where a block starts inside its first cell (rows, columns)."""
        return (ys.start % self.side, xs.start % self.side) if self.side else (0, 0)

    def layout(self, ys: slice, xs: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Cells met by rows ``ys`` and columns ``xs`` of the grid.

        Returns:
            ``(row_offset, col_offset, cell_rows, cell_cols)``: pixel ``(i, j)`` of
            the block lies in cell ``row_offset[i] + col_offset[j]`` (``(h,)`` and
            ``(w,)`` intp) of the ``cell_rows x cell_cols`` cells (``(R,)``, ``(C,)``
            cell row and column numbers, row-major).
        """
        rows, cols = np.arange(ys.start, ys.stop), np.arange(xs.start, xs.stop)
        if self.side == 0:
            return rows - rows[0], np.zeros(cols.size, np.intp), rows, np.zeros(1, np.intp)
        r, c = rows // self.side, cols // self.side
        cell_rows, cell_cols = np.arange(r[0], r[-1] + 1), np.arange(c[0], c[-1] + 1)
        return (r - r[0]) * cell_cols.size, c - c[0], cell_rows, cell_cols

    def _areas(self, cell_rows: np.ndarray, cell_cols: np.ndarray) -> np.ndarray:
        """``(R, C) float64`` area (m²) counted for one pixel of each cell."""
        if self.side == 0:
            return pixel_area_m2(self._crs, self._transform, cell_rows, cell_cols)
        scaled = self._transform @ Affine.scale(self.side)
        return pixel_area_m2(self._crs, scaled, cell_rows, cell_cols) / self.side**2

    def limbs(self, cell_rows: np.ndarray, cell_cols: np.ndarray) -> np.ndarray:
        """``(R * C, _LIMBS) int64``: area of one pixel of each cell, in 2**-32 m², in limbs."""
        table = self._table
        if table is not None and cell_rows[-1] < table.shape[0] and cell_cols[-1] < table.shape[1]:
            area = table[cell_rows[0] : cell_rows[-1] + 1, cell_cols[0] : cell_cols[-1] + 1]
        else:
            area = self._areas(cell_rows, cell_cols)
        units = np.round(area.ravel() * _QUANTUM)
        out = np.empty((units.size, _LIMBS), np.int64)
        for i in range(_LIMBS):
            limb = np.mod(units, float(1 << _LIMB_BITS))
            out[:, i] = limb
            units = (units - limb) / float(1 << _LIMB_BITS)
        return out


class TransitionSink:
    """Sums exact transition areas of code blocks (see the module doc).

    ``sink[(slice, ys, xs)] = (2, h, w)`` blocks of ``[before, after]`` class ids
    add to the matrix, as do :meth:`add_codes` and :meth:`add_pair_codes` calls.

    Args:
        class_ids: the ``K`` classes, in matrix order.
        crs, transform: the grid the blocks' slices refer to (areas come from it).
        n_zones: number of separate matrices (one per AOI feature).
        shape: ``(H, W)`` of the grid, if known (pixel areas are then prepared at once).
    """

    def __init__(
        self,
        class_ids: Sequence[int],
        crs: Any,
        transform: Affine,
        n_zones: int = 1,
        shape: tuple[int, int] | None = None,
    ) -> None:
        self.class_ids = [int(c) for c in class_ids]
        k = len(self.class_ids)
        self._ncodes = k * k + 1
        i, j = np.divmod(np.arange((k + 1) ** 2), k + 1)
        # bin i * (K + 1) + j of label_pair_codes -> code i * K + j (K*K: nodata)
        self._pair_to_code = np.where((i == k) | (j == k), k * k, i * k + j)
        self._cells = _AreaCells(crs, transform, shape)
        self._bases: dict[tuple[int, ...], np.ndarray] = {}
        self.n_zones = n_zones
        self.area_units = [0] * (self._ncodes * n_zones)  # exact integers, in 2**-32 m²
        self.pixels = np.zeros(self._ncodes * n_zones, np.int64)
        self._lock = threading.Lock()
        self._local = threading.local()

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        codes = label_pair_codes(block[0], block[1], self.class_ids)
        self.add_pair_codes(key[-2], key[-1], codes)

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
        self._count(ys, xs, codes, np.arange(self._ncodes), zones)

    def add_pair_codes(self, ys: slice, xs: slice, codes: np.ndarray) -> None:
        """Add a ``(h, w)`` block of :func:`label_pair_codes` at rows ``ys``, columns ``xs``."""
        self._count(ys, xs, codes, self._pair_to_code, None)

    def _buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """A ``shape`` intp array owned by this thread (fresh pages cost more than the add)."""
        buf: np.ndarray | None = getattr(self._local, "buf", None)
        if buf is None or buf.shape != shape:
            buf = self._local.buf = np.empty(shape, np.intp)
        return buf

    def _bins(
        self,
        phase: tuple[int, int],
        row_off: np.ndarray,
        col_off: np.ndarray,
        codes: np.ndarray,
        nbins: int,
    ) -> np.ndarray:
        """``(h, w) intp`` bin of each pixel, ``cell * nbins + code`` (a buffer of this thread).

        ``cell * nbins`` is the same for every chunk of one shape and phase, so up to
        a few of those (of at most ``_MAX_CACHED_BASE`` pixels) are kept; adding
        codes to one is two same-type passes, a third of a mixed-type add.
        """
        bins = self._buffer(codes.shape)
        key = (nbins, *phase, *codes.shape)
        base = self._bases.get(key)
        if base is None and codes.size <= _MAX_CACHED_BASE:
            base = (row_off * nbins)[:, None] + (col_off * nbins)[None, :]
            if len(self._bases) >= 4:
                self._bases.clear()
            self._bases[key] = base
        if base is None:
            np.add((row_off * nbins)[:, None], (col_off * nbins)[None, :], out=bins)
            bins += codes
        else:
            np.copyto(bins, codes)
            bins += base
        return bins

    def _count(
        self,
        ys: slice,
        xs: slice,
        codes: np.ndarray,
        to_code: np.ndarray,
        zones: Sequence[tuple[int, np.ndarray]] | None,
    ) -> None:
        """Count ``(h, w)`` codes ``< len(to_code)`` per (area cell, code) and add them up."""
        if codes.size == 0:
            return
        nbins = len(to_code)
        row_off, col_off, cell_rows, cell_cols = self._cells.layout(ys, xs)
        bins = self._bins(self._cells.phase(ys, xs), row_off, col_off, codes, nbins)
        limbs = self._cells.limbs(cell_rows, cell_cols)
        for zone, mask in zones if zones is not None else [(0, None)]:
            chosen = bins.ravel() if mask is None else bins[mask]
            if chosen.size:
                counts = np.bincount(chosen, minlength=limbs.shape[0] * nbins)
                self._add(zone, counts.reshape(-1, nbins), limbs, to_code)

    def _add(self, zone: int, counts: np.ndarray, limbs: np.ndarray, to_code: np.ndarray) -> None:
        """Add ``(cells, nbins) int64`` pixel counts, with ``(cells, L)`` area limbs."""
        limb_sums = limbs.T @ counts  # exact int64: every limb < 2**24, counts < 2**39
        pixels = np.zeros(self._ncodes, np.int64)
        np.add.at(pixels, to_code, counts.sum(axis=0))
        units = [0] * self._ncodes
        for b, code in enumerate(to_code.tolist()):
            units[code] += sum(int(limb_sums[i, b]) << (_LIMB_BITS * i) for i in range(_LIMBS))
        offset = zone * self._ncodes
        with self._lock:
            self.pixels[offset : offset + self._ncodes] += pixels
            for c, u in enumerate(units):
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


class _PairCodeTarget:
    """``target[(ys, xs)] = (h, w)`` pair codes go to :meth:`TransitionSink.add_pair_codes`."""

    def __init__(self, sink: TransitionSink) -> None:
        self._sink = sink

    def __setitem__(self, key: tuple[slice, ...], codes: np.ndarray) -> None:
        self._sink.add_pair_codes(key[-2], key[-1], codes)


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

    Each task reads one block of both maps and turns it into ``(h, w)``
    :func:`label_pair_codes` (``uint8`` up to 15 classes), counted per area cell.

    Args:
        before, after: ``(H, W) uint8`` dask arrays on the same grid (255 = nodata).
        crs, transform: that grid.
        class_ids, names: the ``K`` classes in matrix order.
        scheduler, workers, progress: as for :func:`geoseg.tiling.execute.store_blocks`.
    """
    if before.shape != after.shape:
        raise GeosegError(f"label maps differ in shape: {before.shape} vs {after.shape}")
    sink = TransitionSink(class_ids, crs, transform, shape=before.shape)
    ids = list(class_ids)
    codes = da.map_blocks(
        lambda b, a: label_pair_codes(b, a, ids),
        before,
        after.rechunk(before.chunks),
        dtype=_label_code_dtype(len(ids)),
    )
    store_blocks(codes, _PairCodeTarget(sink), scheduler, workers, progress)
    return sink.matrix(names)
