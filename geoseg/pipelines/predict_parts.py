"""The finished chunks of ``predict``'s rasters and how they become COGs.

``predict`` computes one lazy ``(bands, H, W) uint8`` array per scene: the label map's
band(s) (class ids, optionally confidence) and, with ``--probabilities``, one band per
class. Each output COG keeps its own chunk store beside it (``.lc.tif.parts``,
``.lc_probs.tif.parts``): a chunk task encodes its block's band range for each
output (compressed COG tiles, mode overviews for labels, average overviews for
probabilities), so the probability bands stream chunk by chunk like the labels and
``--resume`` reuses a chunk only where every output kept it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio

from geoseg.errors import GeosegError
from geoseg.io.cog import CogGrid, stored_chunks, tile_store
from geoseg.io.labels import LabelMeta, label_cog_from_chunks, label_cog_writer
from geoseg.io.parts import ChunkStore, Encoder, Record, parts_folder
from geoseg.tiling.execute import block_slices

__all__ = ["OutputPart", "PredictParts"]


@dataclass(frozen=True)
class OutputPart:
    """One output COG of a run and the bands of the lazy result it holds.

    Attributes:
        path: the COG to write.
        meta: its georeferencing, classes, band descriptions and tags.
        first: its first band in the lazy result (0-based); it holds ``meta.count``.
    """

    path: Path
    meta: LabelMeta
    first: int

    @property
    def bands(self) -> slice:
        """Its bands of the lazy result."""
        return slice(self.first, self.first + self.meta.count)


def _encode_all(encoders: Sequence[Encoder], bands: Sequence[slice], block: np.ndarray) -> Any:
    """The record of each output for a ``(bands, h, w)`` block (on the worker that made it)."""
    return [encode(block[b]) for encode, b in zip(encoders, bands, strict=True)]


class PredictParts:
    """A :class:`~geoseg.tiling.execute.RecordSink` keeping each output's share of each chunk.

    Args:
        outputs: the output COGs, in band order (the label map first).
        fingerprint: what makes two runs give the same chunks (see ``io.parts``).
        resume: keep the chunks an earlier run of the same job left.
        grid: how chunk tasks tile the whole lazy result's COGs; None: no COG tile
            side divides the chunk, chunks keep their blocks and GDAL writes the COGs.
    """

    def __init__(
        self, outputs: Sequence[OutputPart], fingerprint: Mapping[str, Any], resume: bool,
        grid: CogGrid | None,
    ) -> None:  # fmt: skip
        # the tiles' bytes come from GDAL's DEFLATE: a resumed run must use the same GDAL
        fp = {**fingerprint, "cog_tile": grid and grid.tile, "gdal": rasterio.__gdal_version__}
        self.outputs = list(outputs)
        self.grids = [None if grid is None else _grid_of(grid, o.meta) for o in self.outputs]
        self.stores: list[ChunkStore] = []
        for o, g in zip(self.outputs, self.grids, strict=True):
            folder = parts_folder(o.path)
            store = (
                ChunkStore(folder, fp, resume) if g is None else tile_store(folder, fp, resume, g)
            )
            self.stores.append(store)
        #: chunks of an earlier run, checked (their digests are not checked again)
        self.kept: set[tuple[int, int]] = set()

    @property
    def folder(self) -> Path:
        """Where the label map's chunks are kept."""
        return self.stores[0].folder

    @property
    def encode(self) -> Callable[[np.ndarray], list[Record]]:
        """Each output's record of a block (picklable, for distributed workers)."""
        bands = [o.bands for o in self.outputs]
        return functools.partial(_encode_all, [s.encode for s in self.stores], bands)

    def put(self, key: tuple[slice, ...], record: list[Record]) -> None:
        """Save each output's record of the chunk at ``key``."""
        for store, part in zip(self.stores, record, strict=True):
            store.put(key, part)

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        self.put(key, self.encode(np.asarray(block)))

    def done(self, key: tuple[slice, ...]) -> bool:
        """The chunk at ``key`` is kept, intact, for every output (then noted in :attr:`kept`)."""
        _, ys, xs = key
        for o, store in zip(self.outputs, self.stores, strict=True):
            shape = (o.meta.count, ys.stop - ys.start, xs.stop - xs.start)
            if store.load(ys.start, xs.start, shape) is None:
                return False
        self.kept.add((ys.start, xs.start))
        return True

    def write(self, lazy: da.Array, overwrite: bool) -> int:
        """Write every output COG from the kept chunks; the label map's labelled pixels."""
        valid = []
        for o, store, grid in zip(self.outputs, self.stores, self.grids, strict=True):
            if grid is None:
                valid.append(_assemble(lazy, o, store, overwrite))
            else:
                load = stored_chunks(store, grid, set(self.kept))
                valid.append(label_cog_from_chunks(o.path, o.meta, grid, load, overwrite))
        return valid[0]

    def remove(self) -> None:
        """Delete every output's chunks (the run is complete, or failed)."""
        for store in self.stores:
            store.remove()


def _store(
    out: Path, fingerprint: Mapping[str, Any], resume: bool, grid: CogGrid | None
) -> ChunkStore:
    """Where the chunks of ``out`` go: their COG tiles (``grid``), else the blocks themselves."""
    if grid is None:
        return ChunkStore(parts_folder(out), fingerprint, resume)
    return tile_store(parts_folder(out), fingerprint, resume, grid)


def _grid_of(grid: CogGrid, meta: LabelMeta) -> CogGrid:
    """``grid`` for an output of ``meta.count`` bands, with its kind of overviews."""
    return dataclasses.replace(grid, bands=meta.count, overview=meta.overview)


def _assemble(lazy: da.Array, out: OutputPart, store: ChunkStore, overwrite: bool) -> int:
    """Copy the kept chunks into the output COG with GDAL; the number of labelled pixels."""
    _, height, width = lazy.shape
    with label_cog_writer(
        out.path, out.meta, height=height, width=width, overwrite=overwrite
    ) as sink:
        for index in np.ndindex(lazy.numblocks):
            _, ys, xs = block_slices(lazy, index)
            shape = (out.meta.count, ys.stop - ys.start, xs.stop - xs.start)
            record = store.load(ys.start, xs.start, shape)
            if record is None:
                raise GeosegError(f"{store.folder}: chunk {index} went missing; run again")
            sink[(slice(0, out.meta.count), ys, xs)] = record["block"]
    return sink.valid_pixels
