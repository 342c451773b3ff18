"""Minimum mapping unit for change: small patches of change revert to "no change".

A patch is a connected set of pixels (4- or 8-connected) with the same change code
``from * K + to`` (``from != to``); patches whose true ground area is below the
MMU become ``from * K + from``. :func:`apply_mmu` does it on a whole in-memory
array; :func:`mmu_blocks` gives the same result chunk by chunk, seam-safe:

1. each chunk labels its patches and reports, per patch, its area and the patch
   labels along its four edges (memory: the chunk plus its edges);
2. patches that touch across chunk seams (and corners) are joined as a graph's
   connected components, so a patch spanning many chunks gets its whole area;
3. each chunk is labelled again and its small patches reverted.

Areas are summed as integers in units of 2**-16 m² (pixel areas rounded to that),
so the comparison with the MMU does not depend on the chunking. Sums are exact
while a patch stays under 2**37 m² (137 000 km²).
"""

from __future__ import annotations

import threading
from typing import Any

import dask.array as da
import numpy as np
from affine import Affine
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.areas import pixel_area_m2
from geoseg.errors import GeosegError
from geoseg.tiling.execute import store_blocks

__all__ = ["CHANGE_CONNECTIVITY", "apply_mmu", "mmu_blocks"]

#: What a "patch" of change is, for the MMU and for change.gpkg's polygons alike
#: (8: diagonal neighbours join a patch), so no polygon is smaller than the MMU.
CHANGE_CONNECTIVITY = 8

_UNITS_PER_M2 = 2.0**16


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (4, 8):
        raise GeosegError(f"connectivity must be 4 or 8, got {connectivity}")
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def _label_changes(codes: np.ndarray, k: int, structure: np.ndarray) -> tuple[np.ndarray, int]:
    """``(h, w) int64`` patch labels (0 = no patch), unique across codes, and their count."""
    labels = np.zeros(codes.shape, np.int64)
    present = np.unique(codes)
    count = 0
    for code in present[(present < k * k) & (present // k != present % k)]:
        lab, n = ndimage.label(codes == code, structure=structure)
        labels[lab > 0] = lab[lab > 0] + count
        count += n
    return labels, count


def _units(area_m2: np.ndarray) -> np.ndarray:
    return np.round(area_m2 * _UNITS_PER_M2)


def _revert(codes: np.ndarray, k: int, small: np.ndarray) -> np.ndarray:
    source = codes // k
    return np.where(small, source * k + source, codes).astype(codes.dtype)


def apply_mmu(
    codes: np.ndarray,
    k: int,
    pixel_area: np.ndarray,
    min_area_m2: float,
    connectivity: int = 8,
) -> np.ndarray:
    """Revert connected patches of one change code smaller than ``min_area_m2`` (in memory).

    Args:
        codes: ``(H, W) int`` transition codes ``from * k + to``; ``k * k`` = nodata.
        k: number of classes.
        pixel_area: ``(H, W) float64`` true area of each pixel, m².
        min_area_m2: patches of change with a smaller ground area become
            ``from * k + from`` (unchanged).
        connectivity: 4 (edge neighbours) or 8 (also diagonal).

    Returns:
        ``(H, W)`` filtered codes, dtype of ``codes``.
    """
    labels, n = _label_changes(codes, k, _structure(connectivity))
    area = np.bincount(labels.ravel(), weights=_units(pixel_area).ravel(), minlength=n + 1)
    small = np.r_[False, area[1:] < _units(np.asarray(min_area_m2))]
    return _revert(codes, k, small[labels])


class _PatchSummary:
    """Sink collecting, per chunk, patch areas, patch codes and edge labels."""

    def __init__(self, k: int, crs: Any, transform: Affine, structure: np.ndarray) -> None:
        self._k, self._crs, self._transform, self._structure = k, crs, transform, structure
        self.chunks: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        ys, xs = key[-2], key[-1]
        codes = np.asarray(block).reshape(block.shape[-2:])
        labels, n = _label_changes(codes, self._k, self._structure)
        area = pixel_area_m2(
            self._crs, self._transform, np.arange(ys.start, ys.stop), np.arange(xs.start, xs.stop)
        )
        code_of = np.zeros(n + 1, np.int64)
        code_of[labels.ravel()] = codes.ravel()
        summary = {
            "units": np.bincount(labels.ravel(), weights=_units(area).ravel(), minlength=n + 1),
            "code": code_of,
            "top": labels[0].copy(), "bottom": labels[-1].copy(),
            "left": labels[:, 0].copy(), "right": labels[:, -1].copy(),
        }  # fmt: skip
        with self._lock:
            self.chunks[(ys.start, xs.start)] = summary


def _seam_pairs(a: np.ndarray, b: np.ndarray, diagonal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` of two facing edges that touch (same row, or ±1 with 8-conn)."""
    shifts = (-1, 0, 1) if diagonal else (0,)
    ia, ib = [], []
    for d in shifts:
        i = np.arange(max(0, -d), min(a.size, b.size - d))
        ia.append(i)
        ib.append(i + d)
    return np.concatenate(ia), np.concatenate(ib)


def _small_patches(
    summary: _PatchSummary, starts: tuple[list[int], list[int]], min_units: float, diag: bool
) -> dict[tuple[int, int], np.ndarray]:
    """Per chunk, a ``(n + 1,) bool`` table: is local patch ``i`` part of a small patch?"""
    ys, xs = starts
    keys = [(y, x) for y in ys for x in xs]
    offset, total = {}, 0
    for key in keys:
        offset[key] = total
        total += summary.chunks[key]["units"].size
    units = np.concatenate([summary.chunks[key]["units"] for key in keys])
    codes = np.concatenate([summary.chunks[key]["code"] for key in keys])
    src, dst = [], []

    def join(k1: tuple[int, int], e1: np.ndarray, k2: tuple[int, int], e2: np.ndarray) -> None:
        a, b = e1 + offset[k1], e2 + offset[k2]
        keep = (e1 > 0) & (e2 > 0) & (codes[a] == codes[b])
        src.append(a[keep])
        dst.append(b[keep])

    for r, y in enumerate(ys):
        for c, x in enumerate(xs):
            here = summary.chunks[(y, x)]
            if c + 1 < len(xs):
                there = summary.chunks[(y, xs[c + 1])]
                i, j = _seam_pairs(here["right"], there["left"], diag)
                join((y, x), here["right"][i], (y, xs[c + 1]), there["left"][j])
            if r + 1 < len(ys):
                there = summary.chunks[(ys[r + 1], x)]
                i, j = _seam_pairs(here["bottom"], there["top"], diag)
                join((y, x), here["bottom"][i], (ys[r + 1], x), there["top"][j])
                for dc, mine, theirs in ((1, -1, 0), (-1, 0, -1)):  # corners (8-conn)
                    if diag and 0 <= c + dc < len(xs):
                        other = summary.chunks[(ys[r + 1], xs[c + dc])]
                        join((y, x), here["bottom"][[mine]], (ys[r + 1], xs[c + dc]),
                             other["top"][[theirs]])  # fmt: skip
    a = np.concatenate(src) if src else np.zeros(0, np.int64)
    b = np.concatenate(dst) if dst else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(a.size), (a, b)), shape=(total, total))
    _, comp = connected_components(graph, directed=False)
    comp_units = np.bincount(comp, weights=units)
    small = comp_units[comp] < min_units
    small[[offset[key] for key in keys]] = False  # label 0 of each chunk: no patch
    return {key: small[offset[key] : offset[key] + summary.chunks[key]["units"].size]
            for key in keys}  # fmt: skip


def mmu_blocks(
    codes: da.Array,
    k: int,
    crs: Any,
    transform: Affine,
    min_area_m2: float,
    connectivity: int = 8,
    scheduler: str = "threads",
    workers: int | None = None,
) -> da.Array:
    """:func:`apply_mmu` chunk by chunk: same result for any chunking, memory per chunk.

    Args:
        codes: ``(H, W)`` or ``(1, H, W)`` dask array of transition codes on the grid
            ``crs``/``transform`` (``k * k`` = nodata). It is computed twice.
        k, min_area_m2, connectivity: as for :func:`apply_mmu`.
        scheduler, workers: for the first (summary) pass.

    Returns:
        Lazy filtered codes, same shape, chunks and dtype as ``codes``.
    """
    structure = _structure(connectivity)
    summary = _PatchSummary(k, crs, transform, structure)
    store_blocks(codes, summary, scheduler, workers)
    starts = tuple([int(s) for s in np.cumsum((0, *c[:-1]))] for c in codes.chunks[-2:])
    small = _small_patches(
        summary, (starts[0], starts[1]), float(_units(np.asarray(min_area_m2))), connectivity == 8
    )

    def block(values: np.ndarray, block_info: Any = None) -> np.ndarray:
        (y0, _), (x0, _) = block_info[0]["array-location"][-2:]
        plane = values.reshape(values.shape[-2:])
        labels, _ = _label_changes(plane, k, structure)
        return _revert(plane, k, small[(y0, x0)][labels]).reshape(values.shape)

    return da.map_blocks(block, codes, dtype=codes.dtype)
