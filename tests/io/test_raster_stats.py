"""geoseg.io.raster_stats: a small sample of a scene's valid pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import geoseg.io.raster_stats as stats
from tests.conftest import write_raster


def _scene(tmp: Path) -> tuple[Path, np.ndarray]:
    """A float scene whose value encodes its pixel (row * 1000 + col), with holes."""
    rows, cols = np.mgrid[0:300, 0:400]
    data = np.stack([rows * 1000.0 + cols, -(rows * 1000.0 + cols)]).astype(np.float32)
    data[:, :50] = -9999.0  # nodata in every band
    data[0, :, :20] = np.inf  # non-finite in one band
    data[1, :, 390:] = np.nan
    return write_raster(tmp / "s.tif", data, nodata=-9999.0), data


@pytest.mark.parametrize("grid", [False, True])
def test_sample_holds_only_valid_pixels_of_the_scene(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grid: bool
) -> None:
    path, data = _scene(tmp_path)
    if grid:  # as for a large scene without overviews
        monkeypatch.setattr(stats, "_SMALL_SCENE_PX", 0)
    sample = stats.sample_valid_pixels(path, [1, 0], max_side=100)
    assert sample.shape[0] == 2 and sample.shape[1] > 0
    np.testing.assert_array_equal(sample[0], -sample[1])  # the bands asked for, in that order
    code = sample[1]
    rows, cols = code // 1000, code % 1000
    assert (rows >= 50).all() and (cols >= 20).all() and (cols < 390).all()
    assert np.isin(code, data[0]).all()  # every value is one of the scene's own pixels
    expected = 4 * 100 * 75 if not grid else 64 * 32 * 32  # decimated 4x, or 8 x 8 windows
    assert sample.shape[1] <= expected


def test_unreadable_file_gives_an_empty_sample(tmp_path: Path) -> None:
    from tests.test_hostile_inputs import _corrupt_tile

    sample = stats.sample_valid_pixels(_corrupt_tile(tmp_path), [0, 1, 2])
    assert sample.shape == (3, 0)


def test_a_sample_through_an_open_handle_is_the_sample_of_the_path(tmp_path: Path) -> None:
    import rasterio

    path, _ = _scene(tmp_path)
    with rasterio.open(path) as src:
        through = stats.sample_valid_pixels(path, [1, 0], max_side=100, src=src)
        assert not src.closed  # the caller's handle stays open
    np.testing.assert_array_equal(through, stats.sample_valid_pixels(path, [1, 0], max_side=100))
    assert through.shape[1] > 0
