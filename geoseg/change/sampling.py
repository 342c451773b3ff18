"""Stratified random sample points for accuracy assessment, drawn without loading the map.

Two passes over the strata raster: count the pixels of each stratum per block,
draw the wanted number of pixel ranks per stratum uniformly without replacement,
then read only the blocks holding a drawn pixel and turn ranks into positions.
Memory is one block plus the counts, whatever the raster size; the points are
the same for a given seed and chunking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dask.array as da
import numpy as np
from affine import Affine

from geoseg.errors import GeosegError

__all__ = ["SamplePoints", "stratified_sample"]


@dataclass(frozen=True)
class SamplePoints:
    """Sample pixels: ``(N,)`` arrays of stratum, row, column and pixel-centre x, y (CRS)."""

    stratum: np.ndarray
    row: np.ndarray
    col: np.ndarray
    x: np.ndarray
    y: np.ndarray


def _block_counts(strata: da.Array, ids: np.ndarray) -> np.ndarray:
    def count(block: np.ndarray) -> np.ndarray:
        return np.stack([np.count_nonzero(block == s) for s in ids])[None, None, :]

    out = da.map_blocks(count, strata, new_axis=2, chunks=(1, 1, ids.size), dtype=np.int64)
    return np.asarray(out.compute())


def stratified_sample(
    strata: da.Array, transform: Affine, sizes: Mapping[int, int], seed: int = 0
) -> SamplePoints:
    """Draw ``sizes[s]`` pixels uniformly at random from each stratum ``s``.

    Args:
        strata: ``(H, W)`` integer dask array of stratum ids (map classes or change codes).
        transform: its affine transform (points are pixel centres).
        sizes: stratum id -> number of points (see :func:`geoseg.change.sample_design`).
        seed: random seed.

    Raises:
        GeosegError: a stratum has fewer pixels than points asked for.
    """
    ids = np.array(sorted(sizes), dtype=np.int64)
    counts = _block_counts(strata, ids)  # (blocks_y, blocks_x, S)
    flat = counts.reshape(-1, ids.size)
    totals = flat.sum(axis=0)
    rng = np.random.default_rng(seed)
    ranks = []
    for k, s in enumerate(ids):
        if sizes[int(s)] > totals[k]:
            raise GeosegError(
                f"stratum {int(s)} has {int(totals[k])} pixels, fewer than the "
                f"{sizes[int(s)]} sample points asked for; lower its sample size"
            )
        ranks.append(np.sort(rng.choice(int(totals[k]), sizes[int(s)], replace=False)))
    starts = np.vstack([np.zeros((1, ids.size), np.int64), np.cumsum(flat, axis=0)])
    rows, cols, labels = [], [], []
    for b, (i, j) in enumerate(np.ndindex(counts.shape[:2])):
        picks = [r[(r >= starts[b, k]) & (r < starts[b + 1, k])] - starts[b, k]
                 for k, r in enumerate(ranks)]  # fmt: skip
        if not any(p.size for p in picks):
            continue
        block = np.asarray(strata.blocks[i, j].compute())
        y0, x0 = sum(strata.chunks[0][:i]), sum(strata.chunks[1][:j])
        for k, p in enumerate(picks):
            where = np.flatnonzero(block.ravel() == ids[k])[p]
            rows.append(y0 + where // block.shape[1])
            cols.append(x0 + where % block.shape[1])
            labels.append(np.full(p.size, ids[k]))
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    x = transform.c + transform.a * (col + 0.5)
    y = transform.f + transform.e * (row + 0.5)
    stratum = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    return SamplePoints(stratum, row, col, np.asarray(x), np.asarray(y))
