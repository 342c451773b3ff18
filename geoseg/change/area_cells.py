"""Exact, chunk-invariant pixel areas of a grid, one value per *area cell*.

The ground area of a pixel (:func:`geoseg.areas.pixel_area_m2`) is a smooth
function of its position, so it is computed once per area cell of the global
pixel grid, and a chunk only counts its codes per (cell, code):

* geographic and normal-aspect cylindrical CRSs (EPSG:4326, EPSG:3857,
  EPSG:6933, ...) with a north-up grid: every pixel of a row has the same area,
  so a cell is one whole row and the areas are exact;
* a CRS without a datum (a local grid): planar areas, the same for every pixel,
  so a cell is one whole row too (:func:`geoseg.areas.area_method`);
* any other CRS (UTM, LAEA, ...): a cell is a ``B x B`` block of pixels (``B`` a
  power of two, at most 32, with ``B`` pixels spanning at most 512 m), and each of
  its pixels counts ``1/B²`` of the block's exact area. Block sums are exact (to
  ~1e-9); a single pixel is within ``(B * pixel / 2) * |grad ln(scale²)|`` of its
  own area: below 1e-5 relative even at the edge of a UTM zone (the target is
  0.1 %), and the errors of a block's pixels cancel in any patch that fills it.

Chunk-size invariance is exact, not approximate: cell areas are per pixel
quantised to multiples of 2**-32 m² (exact in float64 below 2**21 m² per pixel)
and split into 24-bit limbs whose products with the pixel counts are exact
int64s, so that sums of them can be added into Python integers. Integer sums do
not depend on order, and cells are anchored at the grid origin, so every number
is the same whatever the chunk size, scheduler or worker count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from affine import Affine
from pyproj import CRS

from geoseg.areas import crs_units_per_metre, pixel_area_m2, pyproj_crs

__all__ = ["LIMBS", "LIMB_BITS", "QUANTUM", "AreaCells"]

QUANTUM = 2.0**32  # area units per m²
LIMB_BITS = 24
LIMBS = 3  # 72 bits: any pixel area below 2**40 m²
#: Largest side (pixels) and ground span (m) of an area cell of a projected grid.
_MAX_CELL = 32
_CELL_SPAN_M = 512.0
_MAX_TABLE_CELLS = 4_000_000
#: EPSG method codes of normal-aspect cylindrical projections: area depends on y only.
_CYLINDRICAL = frozenset({1024, 1026, 1028, 1029, 1044, 9804, 9805, 9823, 9834, 9835, 9842})


def _area_varies_by_row_only(crs: CRS, transform: Affine) -> bool:
    """True for a north-up grid in a geographic or normal-aspect cylindrical CRS, and
    for any grid in a CRS without a datum (planar areas, the same for every pixel)."""
    if crs.is_engineering:
        return True
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


class AreaCells:
    """The area cells of a grid (see the module doc) and the quantised area of their pixels.

    Args:
        crs, transform: the grid.
        shape: ``(H, W)`` of the grid, if known: the areas of all its cells are then
            computed at once (one projection call) when there are at most
            ``_MAX_TABLE_CELLS``, instead of block by block.
    """

    def __init__(self, crs: Any, transform: Affine, shape: tuple[int, int] | None = None) -> None:
        self._crs, self._transform = pyproj_crs(crs), transform
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
        """``(R * C, LIMBS) int64``: area of one pixel of each cell, in 2**-32 m², in limbs."""
        table = self._table
        if table is not None and cell_rows[-1] < table.shape[0] and cell_cols[-1] < table.shape[1]:
            area = table[cell_rows[0] : cell_rows[-1] + 1, cell_cols[0] : cell_cols[-1] + 1]
        else:
            area = self._areas(cell_rows, cell_cols)
        units = np.round(area.ravel() * QUANTUM)
        out = np.empty((units.size, LIMBS), np.int64)
        for i in range(LIMBS):
            limb = np.mod(units, float(1 << LIMB_BITS))
            out[:, i] = limb
            units = (units - limb) / float(1 << LIMB_BITS)
        return out
