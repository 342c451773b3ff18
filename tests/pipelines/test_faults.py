"""A worker dying mid-run does not change the result."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from geoseg.tiling.execute import store_blocks
from geoseg.tiling.infer import predict_blocks
from geoseg.types import TileSpec
from tests.tiling.test_infer import SCHEMA, BoxModel, make_scene


class ArraySink:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.array = np.full(shape, 77, np.uint8)

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        self.array[key] = block


class KillerModel(BoxModel):
    """Kills its own worker process the first time any worker runs it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().predict(batch, valid)
        os.close(fd)
        os._exit(1)  # a crash, not an exception: the worker process is gone


@functools.cache
def _killer(marker: str) -> KillerModel:
    return KillerModel(marker)


def _run(load: object, scheduler: str) -> np.ndarray:
    scene, valid = make_scene(150, 170, seed=2)
    spec = TileSpec(window=32, margin=6, chunk_windows=1)
    lazy = predict_blocks(
        da.from_array(scene, chunks=(3, 40, 40)), da.from_array(valid, chunks=40),
        load, spec, SCHEMA.ids,  # type: ignore[arg-type]
    )  # fmt: skip
    sink = ArraySink(lazy.shape)
    store_blocks(lazy, sink, scheduler, workers=2)
    return sink.array


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_killing_a_worker_mid_run_gives_the_clean_result(tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    (tmp_path / "spent").touch()  # this model has already killed: it runs normally
    clean = _run(functools.partial(_killer, str(tmp_path / "spent")), "threads")
    faulty = _run(functools.partial(_killer, str(marker)), "local")
    assert marker.exists(), "no worker was killed"
    np.testing.assert_array_equal(faulty, clean)
