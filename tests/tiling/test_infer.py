"""Tiled inference equals a plain window-by-window loop, whatever the chunking."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import dask
import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from geoseg.tiling import chunk_starts, predict_blocks
from geoseg.tiling.infer import confidence_to_uint8
from geoseg.types import ClassInfo, ClassSchema, TileSpec
from tests.reference import reference_labels

SCHEMA = ClassSchema(tuple(ClassInfo(i, f"c{i}", (i, i, i)) for i in (3, 5, 7)))


class BoxModel:
    """Context-dependent toy model: softmax of each band's 7x7 mean inside the window."""

    schema = SCHEMA
    bands = ("a", "b", "c")

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        x = np.where(valid[:, None], batch, 0.0).astype(np.float32)
        x = ndimage.uniform_filter(x, size=(1, 1, 7, 7), mode="nearest")
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@functools.cache
def box_model() -> BoxModel:
    return BoxModel()


def reference(scene: np.ndarray, valid: np.ndarray, spec: TileSpec) -> np.ndarray:
    return reference_labels(scene, valid, spec, box_model(), SCHEMA.ids)


def make_scene(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scene = ndimage.gaussian_filter(rng.normal(size=(3, h, w)), (0, 3, 3)).astype(np.float32) * 10
    valid = np.ones((h, w), bool)
    valid[: h // 5, : w // 3] = False  # a nodata corner
    valid[h // 2, :] = False
    return scene, valid


def run(scene: np.ndarray, valid: np.ndarray, spec: TileSpec, chunk: int) -> np.ndarray:
    d = da.from_array(scene, chunks=(3, chunk, chunk))
    v = da.from_array(valid, chunks=(chunk, chunk))
    out = predict_blocks(d, v, box_model, spec, SCHEMA.ids)
    with dask.config.set(scheduler="threads"):
        return np.asarray(out.compute())[0]


@pytest.mark.parametrize("blend", ["trim", "hann"])
@pytest.mark.parametrize("shape", [(157, 203), (64, 64), (1, 1), (30, 211)])
def test_tiled_equals_reference_for_any_chunking(blend: str, shape: tuple[int, int]) -> None:
    scene, valid = make_scene(*shape)
    if shape == (1, 1):
        valid[:] = True
    results = []
    for cw in (1, 3, 100):
        spec = TileSpec(window=32, margin=6, chunk_windows=cw, blend=blend, batch_size=3)
        results.append(run(scene, valid, spec, spec.chunk))
    expected = reference(scene, valid, TileSpec(window=32, margin=6, blend=blend))
    for got in results:
        np.testing.assert_array_equal(got, expected)
    assert set(np.unique(expected)) <= {3, 5, 7, 255}
    assert (expected[~valid] == 255).all() and (expected[valid] != 255).all()


def test_input_chunks_need_not_match_the_grid() -> None:
    scene, valid = make_scene(150, 140, seed=1)
    spec = TileSpec(window=32, margin=4, chunk_windows=2)
    np.testing.assert_array_equal(run(scene, valid, spec, 37), reference(scene, valid, spec))


class CountingModel(BoxModel):
    """Records how many windows it ran (class-level: dask may copy instances)."""

    calls: list[int] = []  # noqa: RUF012

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        CountingModel.calls.append(len(batch))
        return super().predict(batch, valid)


def test_all_nodata_windows_are_not_run() -> None:
    scene, valid = make_scene(96, 96)
    valid[:] = False
    valid[50, 50] = True
    spec = TileSpec(window=32, margin=8, chunk_windows=2)
    CountingModel.calls.clear()
    out = predict_blocks(
        da.from_array(scene), da.from_array(valid), CountingModel, spec, SCHEMA.ids
    )
    got = np.asarray(out.compute(scheduler="sync"))[0]
    assert sum(CountingModel.calls) == 1  # one window holds the only valid pixel in its core
    assert got[50, 50] != 255 and (got[~valid] == 255).all()


def test_chunk_starts_are_stride_multiples() -> None:
    spec = TileSpec(window=40, margin=5, chunk_windows=3)
    assert chunk_starts(200, spec) == [0, 90, 180, 210]
    assert TileSpec(window=40, margin=5, chunk_windows=1, blend="hann").chunk == 60


class FilledBoxModel(BoxModel):
    """A BoxModel that reduces its own windows and asks for full batches (as on a GPU)."""

    fixed_batch = True

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def predict_tops(
        self, batches: Iterator[tuple[np.ndarray, np.ndarray]]
    ) -> Iterator[np.ndarray]:
        for x, v in batches:
            self.sizes.append(len(x))
            prob = self.predict(x.astype(np.float32), v)
            best = prob.argmax(axis=1)
            top = np.take_along_axis(prob, best[:, None], axis=1)[:, 0]
            yield np.stack([best.astype(np.uint8), confidence_to_uint8(top)], axis=1)


def test_filled_batches_give_the_reference_map() -> None:
    scene, valid = make_scene(157, 203)
    spec = TileSpec(window=32, margin=6, chunk_windows=3, blend="trim", batch_size=4)
    model = FilledBoxModel()
    d = da.from_array(scene, chunks=(3, 50, 50))
    v = da.from_array(valid, chunks=(50, 50))

    out = predict_blocks(d, v, lambda: model, spec, SCHEMA.ids, with_confidence=True)
    with dask.config.set(scheduler="sync"):
        got = np.asarray(out.compute())

    np.testing.assert_array_equal(got[0], reference(scene, valid, spec))
    assert set(model.sizes) == {4}  # 9 windows per chunk: the third batch was filled
    assert len(model.sizes) > 0 and sum(model.sizes) % 4 == 0
