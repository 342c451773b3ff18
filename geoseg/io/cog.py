"""Label COGs whose tiles and overviews are made inside the chunk tasks.

With GDAL's COG driver the last step of a run (compress every tile, compute every
overview) runs in one process after all chunks are done. Here each chunk task
compresses its own tiles and computes its share of the overviews
(:func:`encode_chunk`), in parallel with the other chunks (on a cluster, on the
worker that ran it where the sink is a :class:`~geoseg.tiling.execute.RecordSink`,
as predict's is); assembling the file (:func:`write_label_cog`) only finishes the
few smallest overviews and copies bytes.

The COG's tile side divides the chunk side (:func:`cog_tile_size`), so no tile
straddles two chunks. Overviews halve the previous level by the **mode** of each
2 x 2 block for class ids, or its rounded **average** for value bands (class
probabilities), ignoring nodata (all-nodata blocks stay nodata; mode ties go to the
smaller value; :mod:`geoseg.io.cog_overviews`), until the level's longer side is at
most 512 px (GDAL's COG driver with 512-px tiles makes the same levels).
Every step is deterministic, so the file's bytes do not depend on the scheduler,
the worker count or a resumed run.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import AllNodataError, GeosegError
from geoseg.io.atomic import atomic_output
from geoseg.io.cog_overviews import HALVE, average_halve, mode_halve
from geoseg.io.parts import ChunkStore
from geoseg.io.tiff import Entry, LevelLayout, compress_tiles, write_tiff
from geoseg.types import NODATA_LABEL

__all__ = [
    "ChunkLoader",
    "CogGrid",
    "all_nodata_error",
    "average_halve",
    "chunk_fits",
    "cog_grid",
    "cog_tile_size",
    "encode_chunk",
    "mode_halve",
    "stored_chunks",
    "tile_store",
    "write_label_cog",
]

#: Tile sides tried, px; the one nearest 512 that divides the chunk wins. Smaller
#: tiles would multiply the range requests of cloud readers, larger ones their size.
TILE_SIDES = range(128, 1025, 16)


def cog_tile_size(chunk: int, preferred: int = 512) -> int | None:
    """Tile side (a multiple of 16 in 128-1024) dividing ``chunk``, nearest ``preferred``.

    None when there is none (e.g. the chunk is not a multiple of 16, or is 16 x a
    prime above 64); such runs use GDAL's COG driver with 512 px tiles.
    """
    sides = [t for t in TILE_SIDES if chunk % t == 0]
    return min(sides, key=lambda t: (abs(t - preferred), -t)) if sides else None


def cog_grid(
    shape: tuple[int, ...], chunks: tuple[tuple[int, ...], ...], chunk: int
) -> CogGrid | None:
    """How chunk tasks of a ``(bands, H, W)`` array with dask ``chunks`` tile its COG.

    None (write with GDAL's COG driver instead) when the chunks are not ``chunk``
    px squares from the origin (the last of each axis may be shorter) or no tile
    side divides ``chunk``.
    """
    side = cog_tile_size(chunk)
    regular = all(all(c == chunk for c in axis[:-1]) and axis[-1] <= chunk for axis in chunks[-2:])
    if side is None or not regular:
        return None
    return CogGrid(shape[-2], shape[-1], shape[0], chunk, side)


@dataclass(frozen=True)
class CogGrid:
    """How a ``(bands, height, width)`` label raster made of ``chunk``-px chunks is tiled.

    Attributes:
        height, width: raster size, px.
        bands: 1 (labels), 2 (labels, confidence) or K (class probabilities).
        chunk: chunk side, px; chunks start at multiples of it.
        tile: COG tile side, px; divides ``chunk``.
        smallest: overviews are added until the last one's longer side is at most
            this, px (GDAL: the tile side; fixed here, so that the levels do not
            depend on the chunking).
        overview: ``"mode"`` (class ids) or ``"average"`` (values such as
            probabilities), how each overview halves the level above it.
    """

    height: int
    width: int
    bands: int
    chunk: int
    tile: int
    smallest: int = 512
    overview: str = "mode"

    def halve(self, level: np.ndarray) -> np.ndarray:
        """The next overview of ``(bands, h, w) uint8`` ``level`` (see :attr:`overview`)."""
        return HALVE[self.overview](level)

    @cached_property
    def sizes(self) -> list[tuple[int, int]]:
        """``(h, w)`` of each level: full resolution, then halved down to ``smallest``."""
        out = [(self.height, self.width)]
        while max(out[-1]) > self.smallest:
            h, w = out[-1]
            out.append(((h + 1) // 2, (w + 1) // 2))
        return out

    @cached_property
    def local(self) -> int:
        """Levels whose tiles lie inside one chunk, so chunk tasks compress them."""
        n = 1
        while n < len(self.sizes) and self.chunk % (self.tile << n) == 0:
            n += 1
        return n

    def tiles_across(self, level: int) -> tuple[int, int]:
        """Tile rows and columns of ``level``."""
        h, w = self.sizes[level]
        return -(-h // self.tile), -(-w // self.tile)


def encode_chunk(grid: CogGrid, block: np.ndarray) -> dict[str, np.ndarray]:
    """What a chunk task keeps of its ``(bands, h, w) uint8`` block for the COG.

    Returns:
        ``data``: the compressed tiles of levels ``0 .. grid.local - 1``, concatenated
        (uint8); ``sizes``: their byte counts (int64), level by level, row-major;
        ``piece``: the block at level ``grid.local`` (input of the smaller
        overviews, ``(bands, 0, 0)`` if there are none); ``valid``: labelled pixels.
    """
    tiles: list[bytes] = []
    level = block
    for n in range(grid.local):
        if n:
            level = grid.halve(level)
        tiles += compress_tiles(level, grid.tile, NODATA_LABEL)
    if grid.local < len(grid.sizes):
        piece = grid.halve(level)
    else:
        piece = np.zeros((block.shape[0], 0, 0), np.uint8)
    return {
        "data": np.frombuffer(b"".join(tiles), np.uint8),
        "sizes": np.array([len(t) for t in tiles], np.int64),
        "piece": piece,
        "valid": np.array(np.count_nonzero(block[0] != NODATA_LABEL), np.int64),
    }


def all_nodata_error(source: str) -> AllNodataError:
    """The error for a result without a single labelled pixel."""
    return AllNodataError(
        f"{source}: every pixel of the input is nodata; check the scene's nodata "
        "value (`gdalinfo`) or choose another scene"
    )


def chunk_fits(grid: CogGrid, record: dict[str, np.ndarray], shape: tuple[int, ...]) -> bool:
    """Whether ``record`` (from :func:`encode_chunk`) is what a ``(bands, h, w)`` chunk gives."""
    if set(record) != {"data", "sizes", "piece", "valid"} or record["data"].dtype != np.uint8:
        return False
    n_tiles = 0
    h, w = shape[-2:]
    for _ in range(grid.local):
        n_tiles += -(-h // grid.tile) * -(-w // grid.tile)
        h, w = (h + 1) // 2, (w + 1) // 2
    piece = (grid.bands, h, w) if grid.local < len(grid.sizes) else (grid.bands, 0, 0)
    return (
        record["sizes"].shape == (n_tiles,)
        and int(record["sizes"].sum()) == record["data"].size
        and record["piece"].shape == piece
        and record["piece"].dtype == np.uint8
    )


#: ``load(y0, x0)``: the record :func:`encode_chunk` made for the chunk at ``(y0, x0)``.
ChunkLoader = Callable[[int, int], dict[str, np.ndarray]]


def tile_store(
    folder: Path, fingerprint: Mapping[str, Any], resume: bool, grid: CogGrid
) -> ChunkStore:
    """A :class:`~geoseg.io.parts.ChunkStore` keeping each chunk's COG tiles, not its block."""
    encode, fits = functools.partial(encode_chunk, grid), functools.partial(chunk_fits, grid)
    return ChunkStore(folder, fingerprint, resume, encode, fits)


def stored_chunks(
    parts: ChunkStore, grid: CogGrid, verified: set[tuple[int, int]] | None = None
) -> ChunkLoader:
    """``load(y0, x0)`` reading :func:`encode_chunk` records from ``parts``.

    A record's digest is checked on its first load only (assembly reads each chunk
    ``1 + grid.local`` times), unless its ``(y0, x0)`` is already in ``verified``
    (chunks a resumed run checked before computing the others).

    Raises (from ``load``):
        GeosegError: a chunk is missing or damaged.
    """
    verified = set() if verified is None else verified

    def load(y0: int, x0: int) -> dict[str, np.ndarray]:
        shape = (grid.bands, min(grid.chunk, grid.height - y0), min(grid.chunk, grid.width - x0))
        record = parts.load(y0, x0, shape, verify=(y0, x0) not in verified)
        verified.add((y0, x0))
        if record is None:
            raise GeosegError(f"{parts.folder}: chunk at ({y0}, {x0}) went missing; run again")
        return record

    return load


class _Pyramid:
    """The levels from ``grid.local`` on, fed strip by strip; keeps < 2 tile rows per level."""

    def __init__(self, grid: CogGrid) -> None:
        self.grid = grid
        self.tiles: dict[int, list[bytes]] = {n: [] for n in range(grid.local, len(grid.sizes))}
        self._rows = {
            n: np.zeros((grid.bands, 0, w), np.uint8) for n, (_, w) in enumerate(grid.sizes)
        }
        self._odd = dict(self._rows)

    def push(self, n: int, strip: np.ndarray, last: bool) -> None:
        """Add rows to level ``n``: compress whole tile rows, pass pairs of rows on down."""
        t = self.grid.tile
        rows = np.concatenate([self._rows[n], strip], axis=1)
        whole = rows.shape[1] if last else rows.shape[1] // t * t
        self.tiles[n] += compress_tiles(rows[:, :whole], t, NODATA_LABEL)
        self._rows[n] = rows[:, whole:]
        if n + 1 < len(self.grid.sizes):
            pending = np.concatenate([self._odd[n], strip], axis=1)
            even = pending.shape[1] if last else pending.shape[1] // 2 * 2
            self._odd[n] = pending[:, even:]
            self.push(n + 1, self.grid.halve(pending[:, :even]), last)


def _chunk_origins(grid: CogGrid) -> tuple[list[int], list[int]]:
    return list(range(0, grid.height, grid.chunk)), list(range(0, grid.width, grid.chunk))


def _small_levels(grid: CogGrid, load: ChunkLoader) -> tuple[_Pyramid, list[list[int]], int]:
    """Overviews made here, every chunk's tile sizes by level, and the labelled pixels."""
    pyramid = _Pyramid(grid)
    ys, xs = _chunk_origins(grid)
    sizes = [[0] * int(np.prod(grid.tiles_across(n))) for n in range(grid.local)]
    valid = 0
    for cy, y0 in enumerate(ys):
        pieces = []
        for x0 in xs:
            record = load(y0, x0)
            valid += int(record["valid"])
            pieces.append(record["piece"])
            for n, tile_sizes in _by_level(grid, record["sizes"].tolist(), (y0, x0)):
                for (r, c), size in tile_sizes:
                    sizes[n][r * grid.tiles_across(n)[1] + c] = size
        if grid.local < len(grid.sizes):
            pyramid.push(grid.local, np.concatenate(pieces, axis=2), cy == len(ys) - 1)
    return pyramid, sizes, valid


def _by_level(
    grid: CogGrid, values: Sequence[Any], origin: tuple[int, int]
) -> Iterator[tuple[int, list[tuple[tuple[int, int], Any]]]]:
    """``values`` of one chunk's tiles (in :func:`encode_chunk` order) with their global tile."""
    y0, x0 = origin
    h = min(grid.chunk, grid.height - y0)
    w = min(grid.chunk, grid.width - x0)
    k = 0
    for n in range(grid.local):
        rows, cols = -(-h // grid.tile), -(-w // grid.tile)
        r0, c0 = (y0 >> n) // grid.tile, (x0 >> n) // grid.tile
        here = [
            ((r0 + i, c0 + j), values[k + i * cols + j]) for i in range(rows) for j in range(cols)
        ]
        yield n, here
        k += rows * cols
        h, w = (h + 1) // 2, (w + 1) // 2


def _chunk_tiles(grid: CogGrid, load: ChunkLoader, n: int) -> Iterator[bytes]:
    """The compressed tiles of local level ``n``, row-major over the whole raster.

    Holds one row of chunks' compressed records at a time.
    """
    ys, xs = _chunk_origins(grid)
    per_chunk = grid.chunk // (grid.tile << n)
    for y0 in ys:
        row: dict[tuple[int, int], memoryview] = {}
        for x0 in xs:
            record = load(y0, x0)
            data = np.ascontiguousarray(record["data"]).data
            ends = np.cumsum(record["sizes"]).tolist()
            spans = [data[e - s : e] for s, e in zip(record["sizes"].tolist(), ends, strict=True)]
            for m, tiles in _by_level(grid, spans, (y0, x0)):
                if m == n:
                    row.update(tiles)
        r0 = (y0 >> n) // grid.tile
        cols = grid.tiles_across(n)[1]
        for r in range(r0, min(r0 + per_chunk, grid.tiles_across(n)[0])):
            yield from (bytes(row[(r, c)]) for c in range(cols))


def write_label_cog(
    path: str | os.PathLike[str],
    grid: CogGrid,
    meta: dict[int, Entry],
    load: ChunkLoader,
    overwrite: bool = False,
    source: str = "the input",
) -> int:
    """Assemble the COG at ``path`` from the chunk records; the number of labelled pixels.

    Args:
        path: output ``.tif``; written to a temporary sibling, then renamed.
        grid: the raster's tiling.
        meta: georeferencing and metadata entries (:func:`geoseg.io.tiff.metadata_tags`).
        load: the record of each chunk (:func:`encode_chunk`); called ``1 + grid.local``
            times per chunk.
        overwrite: replace an existing ``path``.
        source: the input, named if no pixel is labelled.

    Raises:
        InvalidRasterError: no pixel is labelled (nothing is written).
    """
    pyramid, local_sizes, valid = _small_levels(grid, load)
    if valid == 0:
        raise all_nodata_error(source)
    sizes = [*local_sizes, *([len(t) for t in pyramid.tiles[n]] for n in pyramid.tiles)]
    levels = [LevelLayout(h, w, s) for (h, w), s in zip(grid.sizes, sizes, strict=True)]
    streams = [
        *(pyramid.tiles[n] for n in reversed(pyramid.tiles)),
        *(_chunk_tiles(grid, load, n) for n in reversed(range(grid.local))),
    ]
    with atomic_output(Path(path), overwrite) as tmp, tmp.open("wb") as f:
        write_tiff(f, levels, grid.tile, meta, streams)
    return valid
