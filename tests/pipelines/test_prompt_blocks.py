"""The instance COG's blocks of ``geoseg prompt`` (higher score wins, nodata kept) and the
scene's validity on a window, against per-pixel references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoseg.pipelines.prompt_objects import ObjectMask, _block
from geoseg.pipelines.prompt_windows import scene_valid
from geoseg.types import NODATA_LABEL
from tests.conftest import write_raster


def _reference(valid: np.ndarray, objects: list[ObjectMask], y0: int, x0: int) -> np.ndarray:
    """Pixel by pixel: the valid object of the highest score (ties: smaller id)."""
    h, w = valid.shape
    out = np.zeros((2, h, w), np.uint32)
    for r in range(h):
        for c in range(w):
            if not valid[r, c]:
                out[0, r, c] = NODATA_LABEL
            best = None
            for o in objects:
                rr, cc = y0 + r - o.row0, x0 + c - o.col0
                inside = 0 <= rr < o.mask.shape[0] and 0 <= cc < o.mask.shape[1]
                hit = valid[r, c] and inside and o.mask[rr, cc]
                if hit and (best is None or (o.score, -o.id) > (best.score, -best.id)):
                    best = o
            if best is not None:
                out[:, r, c] = (1, best.id)
    return out


def _objects(rng: np.random.Generator, n: int) -> list[ObjectMask]:
    """``n`` random masks of 3-14 px around a 40 x 40 block at (100, 200), some
    overlapping its edges; scores from 4 values, so that ties happen."""
    out = []
    for k in range(n):
        h, w = rng.integers(3, 15, size=2)
        row0, col0 = 100 + int(rng.integers(-10, 45)), 200 + int(rng.integers(-10, 45))
        score = float(np.float32(rng.choice([0.2, 0.5, 0.7, 0.9])))
        out.append(ObjectMask(k + 1, k, 0, score, 0.5, row0, col0, rng.random((h, w)) < 0.7))
    return out


@pytest.mark.parametrize(("n", "holes"), [(0, False), (0, True), (1, False), (12, True),
                                          (30, False)])  # fmt: skip
def test_a_block_gives_the_highest_score_per_pixel_and_keeps_nodata(n: int, holes: bool) -> None:
    rng = np.random.default_rng(n + holes)
    valid = np.ones((40, 40), bool)
    if holes:
        valid[5:12, 3:30] = False
        valid[30:, 35:] = False
    # only the objects that reach the block, as write_object_raster hands them over
    objects = [
        o for o in _objects(rng, n)
        if o.row0 < 140 and o.row0 + o.mask.shape[0] > 100
        and o.col0 < 240 and o.col0 + o.mask.shape[1] > 200
    ]  # fmt: skip
    got = _block(valid, objects, 100, 200)
    assert got.dtype == np.uint32 and got.shape == (2, 40, 40)
    np.testing.assert_array_equal(got, _reference(valid, objects, 100, 200))
    if holes:
        assert (got[0][~valid] == NODATA_LABEL).all() and (got[1][~valid] == 0).all()


def _no_mask_read(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the mask of an all-valid scene was read")


def test_an_all_valid_scene_is_valid_without_reading_its_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_raster(tmp_path / "s.tif", np.full((2, 30, 40), 7, np.uint8))
    with rasterio.open(path) as src:
        monkeypatch.setattr(type(src), "dataset_mask", _no_mask_read)
        got = scene_valid(src, Window(5, 3, 20, 10))
        assert got.shape == (10, 20) and got.all()
        assert scene_valid(src, Window(0, 0, 40, 30), (8, 8)).shape == (8, 8)


def test_a_scene_with_nodata_is_valid_where_its_mask_says(tmp_path: Path) -> None:
    data = np.full((2, 30, 40), 7, np.uint8)
    data[:, 4:9, 10:20] = 0
    path = write_raster(tmp_path / "s.tif", data, nodata=0)
    with rasterio.open(path) as src:
        got = scene_valid(src, Window(5, 3, 20, 10))
        want = np.ones((10, 20), bool)
        want[1:6, 5:15] = False
        np.testing.assert_array_equal(got, want)
        # a window past the scene's edge reads its mask (False outside)
        edge = scene_valid(src, Window(30, 20, 20, 20), boundless=True)
        assert edge[:10, :10].all() and not edge[10:].any() and not edge[:, 10:].any()
