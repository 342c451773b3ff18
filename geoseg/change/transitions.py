"""Transition (from-class x to-class) matrices in true ground area, streamed block by block.

Each pixel pair ``(from, to)`` gets a code (:mod:`geoseg.change.codes`). A chunk
contributes the pixel counts of its codes, weighted by the ellipsoidal area of
each pixel (:func:`geoseg.areas.pixel_area_m2`): areas are computed once per area
cell of the global pixel grid and a chunk only counts its codes per (cell, code)
with one integer ``bincount`` (:mod:`geoseg.change.area_cells`). The counts are
added as exact integers, so every number is the same whatever the chunk size,
scheduler or worker count. The sums come out as a
:class:`~geoseg.change.matrix.TransitionMatrix`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
from affine import Affine

from geoseg.change.area_cells import LIMB_BITS, LIMBS, QUANTUM, AreaCells
from geoseg.change.codes import label_code_dtype, label_pair_codes, transition_codes
from geoseg.change.matrix import TransitionMatrix
from geoseg.errors import GeosegError
from geoseg.tiling.execute import Progress, store_blocks

__all__ = [
    "TransitionMatrix",
    "TransitionSink",
    "label_pair_codes",
    "transition_codes",
    "transition_matrix",
]

#: Largest chunk (pixels) whose cell offsets are cached; read at call time (tests patch it).
_MAX_CACHED_BASE = 1 << 22  # pixels (32 MB of intp)


class TransitionSink:
    """Sums exact transition areas of code blocks (see the module doc).

    ``sink[(slice, ys, xs)] = (2, h, w)`` blocks of ``[before, after]`` class ids
    add to the matrix, as do :meth:`add_codes` and :meth:`add_pair_codes` calls.

    Args:
        class_ids: the ``K`` classes, in matrix order.
        crs, transform: the grid the blocks' slices refer to (areas come from it).
        n_zones: number of separate matrices (one per AOI feature).
        shape: ``(H, W)`` of the grid, if known (pixel areas are then prepared at once).
        uncertain: also sum code ``K*K + 1``, the posterior rule's uncertain pixels
            (:mod:`geoseg.change.posterior`), into the matrix's ``uncertain_*`` fields.
    """

    def __init__(
        self,
        class_ids: Sequence[int],
        crs: Any,
        transform: Affine,
        n_zones: int = 1,
        shape: tuple[int, int] | None = None,
        uncertain: bool = False,
    ) -> None:
        self.class_ids = [int(c) for c in class_ids]
        k = len(self.class_ids)
        self.uncertain = uncertain
        self._ncodes = k * k + 1 + int(uncertain)
        i, j = np.divmod(np.arange((k + 1) ** 2), k + 1)
        # bin i * (K + 1) + j of label_pair_codes -> code i * K + j (K*K: nodata)
        self._pair_to_code = np.where((i == k) | (j == k), k * k, i * k + j)
        self._cells = AreaCells(crs, transform, shape)
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
            codes: ``(h, w) int`` codes ``from_index * K + to_index`` (``K*K`` nodata,
                ``K*K + 1`` uncertain when the sink sums it).
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
            units[code] += sum(int(limb_sums[i, b]) << (LIMB_BITS * i) for i in range(LIMBS))
        offset = zone * self._ncodes
        with self._lock:
            self.pixels[offset : offset + self._ncodes] += pixels
            for c, u in enumerate(units):
                self.area_units[offset + c] += u

    def matrix(self, names: Sequence[str], zone: int = 0) -> TransitionMatrix:
        """The sums of ``zone`` as a :class:`TransitionMatrix` (``names`` in class order)."""
        k = len(self.class_ids)
        part = slice(zone * self._ncodes, (zone + 1) * self._ncodes)
        area = np.array([u / QUANTUM for u in self.area_units[part]])
        pixels = self.pixels[part]
        return TransitionMatrix(
            class_ids=tuple(self.class_ids),
            names=tuple(names),
            area_m2=area[: k * k].reshape(k, k),
            pixels=pixels[: k * k].reshape(k, k).copy(),
            nodata_area_m2=float(area[k * k]),
            nodata_pixels=int(pixels[k * k]),
            uncertain_area_m2=float(area[k * k + 1]) if self.uncertain else None,
            uncertain_pixels=int(pixels[k * k + 1]) if self.uncertain else 0,
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
        dtype=label_code_dtype(len(ids)),
    )
    store_blocks(codes, _PairCodeTarget(sink), scheduler, workers, progress)
    return sink.matrix(names)
