"""Chunk halos: the same arrays as dask's overlap, without neighbour chunks kept alive."""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback

from geoseg.tiling import predict_blocks
from geoseg.tiling.halo import recomputed, with_halo
from geoseg.types import TileSpec
from tests.tiling.test_infer import SCHEMA, box_model


@pytest.mark.parametrize(
    ("shape", "chunks", "depth"),
    [
        ((4, 100, 130), (4, (40, 30, 30), (50, 50, 30)), 7),  # uneven chunks
        ((1, 30, 30), (1, 30, 30), 5),  # one chunk: nothing to add
        ((2, 60, 20), (2, 20, 20), 20),  # depth = the chunk side
        ((3, 50, 50), (3, 25, 25), 0),
        ((2, 40, 90), (2, 40, 30), 3),  # one row of chunks
        ((2, 90, 40), (2, 30, 40), 3),  # one column
    ],
)
@pytest.mark.parametrize("second_read", [False, True])
def test_with_halo_equals_dask_overlap(
    shape: tuple[int, ...], chunks: Any, depth: int, second_read: bool
) -> None:
    data = np.random.default_rng(0).integers(0, 60000, shape).astype(np.uint16)
    arr = da.from_array(data, chunks=chunks).rechunk(chunks)
    want = da.overlap.overlap(arr, depth={0: 0, 1: depth, 2: depth}, boundary="none")
    rims = recomputed(arr)[0] if second_read else None
    got = with_halo(arr, depth, rims)
    assert got.chunks == want.chunks
    for index in np.ndindex(want.numblocks):
        np.testing.assert_array_equal(got.blocks[index].compute(), want.blocks[index].compute())


def test_with_halo_refuses_a_depth_past_a_chunk() -> None:
    arr = da.zeros((1, 40, 40), chunks=(1, 20, 10))
    with pytest.raises(ValueError, match="at least 12 px"):
        with_halo(arr, 12)


class _Views(Callback):
    """Records task results that are views of a much larger array (they pin it in memory)."""

    def __init__(self) -> None:
        super().__init__()
        self.pinning: list[tuple[Any, tuple[int, ...], int]] = []

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if not isinstance(result, np.ndarray) or result.base is None:
            return
        root = result
        while isinstance(root.base, np.ndarray):
            root = root.base
        if root.nbytes > 4 * result.nbytes:
            self.pinning.append((key, result.shape, root.nbytes))


def test_tiled_predict_keeps_no_chunk_alive_through_a_strip() -> None:
    """A neighbour's 8 px strip must not be a view of its whole chunk: with dask's overlap
    those views held ~45 read chunks (340 MB) of an 8 000^2 scene at once."""
    rng = np.random.default_rng(1)
    scene = rng.normal(size=(3, 120, 150)).astype(np.float32)
    data = da.from_array(scene, chunks=(3, 40, 50)).map_blocks(np.copy)  # own memory, as read
    valid = da.ones((120, 150), dtype=bool, chunks=(40, 50))
    spec = TileSpec(window=32, margin=8, chunk_windows=3, batch_size=4)
    views = _Views()
    with views, dask.config.set(scheduler="sync"):
        labels = predict_blocks(data, valid, box_model, spec, SCHEMA.ids).compute()
    assert labels.shape == (1, 120, 150)
    assert set(np.unique(labels)) <= {3, 5, 7}
    assert views.pinning == []
