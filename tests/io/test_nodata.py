"""One nodata rule for every command: a pixel missing any selected band holds no data.

Before, a pixel was nodata only where *every* band equalled the nodata value, so
Landsat's collar pixels like ``(0, 5, 5)`` were classified as land cover (710 of
them in RGB.byte.tif), while NaN in one band already made a pixel nodata.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geoseg.io.nodata import nodata_in_dtype, valid_values
from geoseg.io.raster import open_scene
from geoseg.io.raster_stats import sample_valid_pixels
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.pipelines.prompt_windows import PromptWindow, read_window, scene_valid
from geoseg.pipelines.track_dates import date_valid, open_dates, read_date_window
from tests.conftest import TINY_BANDS, textured_scene, write_raster

H, W = 24, 32


def _partial_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(4, H, W) uint16`` with nodata 0, the pixels where every band is 0 and those
    where only band 2 (0-based 1) is."""
    data = textured_scene(H, W)
    every = np.zeros((H, W), bool)
    every[:, :3] = True  # a collar
    one = np.zeros((H, W), bool)
    one[5:9, 10:14] = True
    one[0:2, 3] = True  # next to the collar, as Landsat's (0, 5, 5)
    data[:, every] = 0
    data[1, one] = 0
    return data, every, one


def test_valid_values_by_hand() -> None:
    values = np.array([[[0, 1, 0, 3]], [[0, 0, 2, 3]]], np.uint8)  # (2 bands, 1, 4)
    np.testing.assert_array_equal(valid_values(values, 0), [[False, False, False, True]])
    lazy = valid_values(da.from_array(values, chunks=(2, 1, 2)), 0)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), [[False, False, False, True]])
    floats = np.array([[[1.0, np.nan, 2.0, -9999.0]], [[1.0, 1.0, np.inf, 5.0]]], np.float32)
    np.testing.assert_array_equal(valid_values(floats, -9999.0), [[True, False, False, False]])
    np.testing.assert_array_equal(valid_values(floats, None), [[True, False, False, True]])
    # a nodata no value of the type can hold marks nothing (it used to wrap around)
    assert nodata_in_dtype(-9999.0, np.uint8) is None and nodata_in_dtype(0.5, np.int16) is None
    assert nodata_in_dtype(float("nan"), np.float32) is None
    np.testing.assert_array_equal(valid_values(values, -9999.0), np.ones((1, 4), bool))


def test_open_scene_drops_pixels_missing_a_selected_band(tmp_path: Path) -> None:
    data, every, one = _partial_scene()
    path = write_raster(tmp_path / "s.tif", data, nodata=0, descriptions=TINY_BANDS)
    valid = open_scene(path, chunk=16).valid.compute()
    np.testing.assert_array_equal(valid, ~every & ~one)
    # GDAL's per-band masks say the same; its dataset mask (any band valid) does not
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(valid, (src.read_masks() > 0).all(axis=0))
        assert ((src.dataset_mask() > 0) & ~valid).sum() == one.sum() == 18
    # only the bands read count: without band 2 those pixels hold data
    other = open_scene(path, ["1", "3", "4"], chunk=16).valid.compute()
    np.testing.assert_array_equal(other, ~every)


def test_every_reader_of_a_scene_agrees(tmp_path: Path) -> None:
    """predict's map, the statistics sample, prompt's windows and track's dates."""
    data, every, one = _partial_scene()
    path = write_raster(tmp_path / "s.tif", data, nodata=0, descriptions=TINY_BANDS)
    want = ~every & ~one
    out = tmp_path / "lc.tif"
    predict_scene(path, "spectral", out, PredictOptions(sensor="rgbnir"))
    with rasterio.open(out) as dst:
        np.testing.assert_array_equal(dst.read(1) != 255, want)
    sample = sample_valid_pixels(path, [0, 1, 2, 3])
    assert sample.shape == (4, want.sum()) and (sample > 0).all()
    assert sample_valid_pixels(path, [0, 2]).shape == (2, (~every).sum())
    bands = [1, 2, 3, 4]
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(scene_valid(src, Window(0, 0, W, H), bands=bands), want)
        np.testing.assert_array_equal(scene_valid(src, Window(0, 0, W, H), bands=[1, 3]), ~every)
        got = read_window(src, bands, PromptWindow(0, 0, 0, 32), 32)[1]
        np.testing.assert_array_equal(got[:H, :W], want)
    again = tmp_path / "s_again.tif"  # a second date (one file twice is refused)
    again.write_bytes(path.read_bytes())
    with open_dates([path, again]) as (_, dates):
        np.testing.assert_array_equal(date_valid(dates[1], Window(0, 0, W, H), bands), want)


def test_a_warped_date_drops_pixels_missing_a_band(tmp_path: Path) -> None:
    """A date on another grid is warped; its alpha calls a pixel valid where any band is."""
    data = _partial_scene()[0]
    first = write_raster(tmp_path / "a.tif", data, nodata=0, descriptions=TINY_BANDS)
    # the same pixels half a pixel further east: warped (bilinear) onto the first's grid
    moved = Affine(10, 0, 500005, 0, -10, 5100000)
    second = write_raster(
        tmp_path / "b.tif", data, nodata=0, descriptions=TINY_BANDS, transform=moved
    )
    bands = [1, 2, 3, 4]
    with open_dates([first, second]) as (_, dates):
        assert dates[1].warped
        valid = date_valid(dates[1], Window(0, 0, W, H), bands)
        # its alpha alone (the rule before): valid where any band holds data
        vrt_alpha = dates[1].src.read(dates[1].src.count, window=Window(0, 0, W, H)) > 0
        read = read_date_window(dates[1], dates[0].src, bands, PromptWindow(0, 0, 0, 32), 32)[1]
        np.testing.assert_array_equal(read[:H, :W], valid)
        without_2 = date_valid(dates[1], Window(0, 0, W, H), [1, 3, 4])
    # the block missing band 2 (cols 10-13, read half a px east) is nodata inside
    assert not valid[5:9, 11:13].any() and without_2[5:9, 11:13].all()
    assert vrt_alpha[5:9, 11:13].all()
    assert valid[12:, 5:].all()


def test_landsat_collar_pixels_missing_a_band_are_nodata(shared_data: Path) -> None:
    """The trial's scene: 710 pixels like (0, 5, 5) held a class."""
    path = shared_data / "landsat7_rgb_byte" / "RGB.byte.tif"
    valid = open_scene(path).valid.compute()
    with rasterio.open(path) as src:
        values = src.read()
        any_band = src.dataset_mask() > 0
    partial = (values == 0).any(axis=0) & ~(values == 0).all(axis=0)
    assert partial.sum() == 710
    np.testing.assert_array_equal(any_band & ~valid, partial)
    np.testing.assert_array_equal(valid, ~(values == 0).any(axis=0))


def _per_band_vrt(tmp_path: Path, data: np.ndarray, nodatas: list[float]) -> Path:
    """A VRT over a GeoTIFF (no nodata) of ``(C, H, W) uint16`` ``data`` in which band
    ``i`` declares ``nodatas[i]`` (a GeoTIFF holds one value for all bands; a VRT not)."""
    tif = write_raster(tmp_path / "src.tif", data, transform=Affine(10, 0, 0, 0, -10, 0))
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{i + 1}"><NoDataValue>{nd}</NoDataValue>'
        f'<SimpleSource><SourceFilename relativeToVRT="1">{tif.name}</SourceFilename>'
        f"<SourceBand>{i + 1}</SourceBand></SimpleSource></VRTRasterBand>"
        for i, nd in enumerate(nodatas)
    )
    _, h, w = data.shape
    vrt = tmp_path / "per_band.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>0, 10, 0, 0, 0, -10</GeoTransform>{bands}</VRTDataset>"
    )
    return vrt


def test_bands_with_their_own_nodata_are_each_masked_on_it(tmp_path: Path) -> None:
    """Band 1 declares 0 and band 2 declares 7: a 7 in band 2 is nodata, a 7 in band 1
    and a 0 in band 2 are data (``src.nodata``, band 1's value, said the opposite)."""
    data = np.full((2, H, W), 100, np.uint16)
    data[0, 0, :4] = 0  # band 1's nodata: invalid
    data[1, 1, :4] = 7  # band 2's nodata: invalid
    data[0, 2, :4] = 7  # 7 in band 1 is data
    data[1, 3, :4] = 0  # 0 in band 2 is data
    vrt = _per_band_vrt(tmp_path, data, [0, 7])
    expected = np.ones((H, W), bool)
    expected[0:2, :4] = False
    np.testing.assert_array_equal(open_scene(vrt).valid.compute(), expected)
    # band 2 alone: only its own nodata counts
    np.testing.assert_array_equal(
        open_scene(vrt, bands=["2"]).valid.compute()[:2, :4], np.array([[True] * 4, [False] * 4])
    )
    stats = sample_valid_pixels(vrt, [0, 1], max_side=64)
    assert stats.shape == (2, H * W - 8)
    by_hand = np.array([[0, 7], [1, 0], [2, 7]], float)
    np.testing.assert_array_equal(
        valid_values(by_hand.T[:, None, :], (0, 7)), [[False, True, False]]
    )
