"""Test-time augmentation: the mean of a model's outputs under the flips/rotations, mapped back."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import ndimage

from geoseg.errors import GeosegError
from geoseg.tiling.tta import TTA_MODES, TtaPredictor, tta_loader
from geoseg.types import ClassInfo, ClassSchema

SCHEMA = ClassSchema(tuple(ClassInfo(i, f"c{i}", (i, i, i)) for i in (1, 2, 3)))
Map = Callable[[np.ndarray], np.ndarray]


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


#: The dihedral group of the (H, W) plane written out as index maps (no np.rot90), each
#: with its inverse: identity, mirror columns, mirror rows, half turn, then the same
#: four after a transpose. The first four are the "flips" set.
D4: list[tuple[Map, Map]] = [
    (lambda a: a, lambda a: a),
    (lambda a: a[..., ::-1], lambda a: a[..., ::-1]),
    (lambda a: a[..., ::-1, :], lambda a: a[..., ::-1, :]),
    (lambda a: a[..., ::-1, ::-1], lambda a: a[..., ::-1, ::-1]),
    (_t, _t),
    (lambda a: _t(a)[..., ::-1], lambda a: _t(a[..., ::-1])),
    (lambda a: _t(a)[..., ::-1, :], lambda a: _t(a[..., ::-1, :])),
    (lambda a: _t(a)[..., ::-1, ::-1], lambda a: _t(a[..., ::-1, ::-1])),
]


class PositionModel:
    """Neither flip- nor rotation-equivariant: per class an asymmetric 3x3 correlation of
    one band (nodata as 0) plus a ramp down the rows and another across the columns."""

    schema = SCHEMA
    bands = ("a", "b")

    def __init__(self) -> None:
        rng = np.random.default_rng(7)
        self.kernels = rng.normal(size=(3, 3, 3))
        self.shapes: list[tuple[int, ...]] = []

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        _, c, h, w = batch.shape
        x = np.where(valid[:, None], batch, 0.0).astype(np.float64)
        rows = np.arange(h)[:, None] / h
        cols = np.arange(w)[None, :] / w
        logits = np.stack(
            [
                ndimage.correlate(x[:, k % c], self.kernels[k][None], mode="constant")
                + (k - 1) * 2.0 * rows
                + (1 - k) * 1.5 * cols
                for k in range(3)
            ],
            axis=1,
        )
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _batch(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    batch = rng.normal(size=(2, 2, h, w)).astype(np.float32)
    valid = np.ones((2, h, w), bool)
    valid[0, :2, -3:] = False  # an asymmetric nodata corner: the mask must travel too
    return batch, valid


@pytest.mark.parametrize("mode, count", [("flips", 4), ("d4", 8)])
@pytest.mark.parametrize("h, w", [(6, 6), (5, 7)])  # a non-square window turns into (7, 5)
def test_tta_is_the_mean_of_the_outputs_mapped_back(mode: str, count: int, h: int, w: int) -> None:
    batch, valid = _batch(h, w)
    model = PositionModel()
    expected = np.mean(
        [inv(model.predict(fwd(batch), fwd(valid)).astype(np.float64)) for fwd, inv in D4[:count]],
        axis=0,
    )
    plain = model.predict(batch, valid)
    model.shapes.clear()

    got = TtaPredictor(model, mode).predict(batch, valid)

    assert got.dtype == np.float32 and got.shape == (2, 3, h, w)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    assert np.abs(got - plain).max() > 0.05  # the model is not equivariant: TTA changes it
    swapped = (2, 2, w, h)
    assert sorted(model.shapes) == sorted([(2, 2, h, w)] * 4 + [swapped] * (count - 4))


def test_the_index_maps_are_eight_distinct_transforms_with_their_inverses() -> None:
    """The test's own group: eight different images of one picture, each undone by its inverse."""
    a = np.arange(20.0).reshape(4, 5)
    images = [fwd(a) for fwd, _ in D4]
    assert len({im.tobytes() + bytes(im.shape) for im in images}) == 8
    for (_, inv), im in zip(D4, images, strict=True):
        np.testing.assert_array_equal(inv(im), a)


def test_none_is_the_model_itself_and_the_wrapper_keeps_its_attributes() -> None:
    model = PositionModel()
    model.fixed_batch = True  # type: ignore[attr-defined]
    load = lambda: model  # noqa: E731
    assert tta_loader(load, "none") is load
    wrapped = tta_loader(load, "flips")()
    assert isinstance(wrapped, TtaPredictor)
    assert (wrapped.schema, wrapped.bands, wrapped.fixed_batch) == (SCHEMA, ("a", "b"), True)
    batch, valid = _batch(4, 4)
    np.testing.assert_array_equal(
        TtaPredictor(model, "none").predict(batch, valid), model.predict(batch, valid)
    )


def test_an_unknown_mode_names_the_option_and_the_valid_ones() -> None:
    assert TTA_MODES == ("none", "flips", "d4")
    with pytest.raises(GeosegError, match=r"--tta must be one of none, flips, d4, not 'd8'"):
        tta_loader(PositionModel, "d8")
