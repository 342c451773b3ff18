"""Tests for lazy scene opening and header validation (geoseg/io/raster.py)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.errors import GeosegError, InputNotFoundError, InvalidRasterError
from geoseg.io.raster import open_scene, select_bands

UTM33 = CRS.from_epsg(32633)
NORTH_UP = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    crs: CRS | None = UTM33,
    transform: Affine = NORTH_UP,
    nodata: float | None = None,
    descriptions: tuple[str, ...] = (),
    mask: np.ndarray | None = None,
) -> Path:
    """Write ``(bands, H, W)`` ``data`` as a tiled GeoTIFF and return its path."""
    count, height, width = data.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": data.dtype,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions, start=1):
            dst.set_band_description(i, text)
        if mask is not None:
            dst.write_mask(np.where(mask, 255, 0).astype(np.uint8))
    return path


def ramp(count: int = 3, height: int = 40, width: int = 48, dtype: str = "uint16") -> np.ndarray:
    """``(count, H, W)`` distinct values per band and pixel."""
    values = np.arange(count * height * width).reshape(count, height, width) % 5000 + 1
    return values.astype(dtype)


# --- lazy loading and georeferencing -------------------------------------------------


def test_open_scene_is_lazy_band_y_x_with_georeferencing(tmp_path: Path) -> None:
    data = ramp()
    path = write_tif(tmp_path / "s.tif", data, nodata=0, descriptions=("B02", "B03", "B04"))

    scene = open_scene(path, chunk=16)

    assert scene.data.dims == ("band", "y", "x")
    assert isinstance(scene.data.data, da.Array)
    assert scene.data.data.chunks[1] == (16, 16, 8)
    assert scene.data.data.chunks[2] == (16, 16, 16)
    assert isinstance(scene.valid, da.Array)
    assert scene.crs == UTM33
    assert scene.transform == NORTH_UP
    assert scene.nodata == 0
    assert scene.band_names == ("B02", "B03", "B04")
    assert (scene.count, scene.height, scene.width) == (3, 40, 48)
    assert scene.dtype == np.uint16
    assert scene.path == str(path)
    np.testing.assert_array_equal(scene.data.values, data)
    assert scene.data.rio.crs == UTM33


def test_bands_without_description_are_named_by_number(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "s.tif", ramp(count=2))
    assert open_scene(path).band_names == ("1", "2")


# --- band selection ------------------------------------------------------------------


def test_band_selection_by_one_based_index(tmp_path: Path) -> None:
    data = ramp()
    path = write_tif(tmp_path / "s.tif", data, descriptions=("B02", "B03", "B04"))

    scene = open_scene(path, bands=["3", "1"])

    assert scene.band_names == ("B04", "B02")
    np.testing.assert_array_equal(scene.data.values, data[[2, 0]])


def test_band_selection_by_name_is_case_insensitive(tmp_path: Path) -> None:
    data = ramp()
    path = write_tif(tmp_path / "s.tif", data, descriptions=("B02", "B03", "B04"))

    scene = open_scene(path, bands=["b04", "B03", "2"])

    assert scene.band_names == ("B04", "B03", "B03")
    np.testing.assert_array_equal(scene.data.values, data[[2, 1, 1]])


def test_unknown_band_name_lists_the_bands(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "s.tif", ramp(), descriptions=("B02", "B03", "B04"))

    with pytest.raises(InvalidRasterError, match="B08") as info:
        open_scene(path, bands=["B08"])

    message = str(info.value)
    assert str(path) in message
    assert "B02, B03, B04" in message


def test_band_index_out_of_range_says_how_many_bands(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "s.tif", ramp())
    with pytest.raises(InvalidRasterError, match="bands 1-3"):
        open_scene(path, bands=["4"])
    with pytest.raises(InvalidRasterError, match="bands 1-3"):
        open_scene(path, bands=["0"])


def test_select_bands_none_selects_all() -> None:
    assert select_bands("x.tif", ["a", "b", "c"], None) == [0, 1, 2]


# --- valid mask -----------------------------------------------------------------------


def test_valid_is_false_where_any_band_is_nodata(tmp_path: Path) -> None:
    """A pixel missing one band is missing an input, as NaN in one band already was
    (geoseg.io.nodata); it used to count as data unless every band was nodata."""
    data = ramp()
    data[:, 0, 0] = 0  # all bands nodata -> invalid
    data[0, 1, 1] = 0  # one band nodata -> invalid
    data[:2, 2, 2] = 0  # two of three bands nodata -> invalid
    data[:, 5:7, 10:20] = 0
    path = write_tif(tmp_path / "s.tif", data, nodata=0)

    valid = open_scene(path, chunk=16).valid.compute()

    expected = np.ones(data.shape[1:], dtype=bool)
    expected[0, 0] = expected[1, 1] = expected[2, 2] = False
    expected[5:7, 10:20] = False
    np.testing.assert_array_equal(valid, expected)


def test_valid_looks_only_at_the_selected_bands(tmp_path: Path) -> None:
    data = ramp()
    data[0, 3, 3] = 0  # only band 1 is nodata here
    path = write_tif(tmp_path / "s.tif", data, nodata=0)

    valid = open_scene(path, bands=["1"]).valid.compute()

    assert not valid[3, 3]
    assert valid.sum() == valid.size - 1


def test_valid_is_false_where_any_float_band_is_nan(tmp_path: Path) -> None:
    data = ramp(dtype="float32")
    data[1, 4, 7] = np.nan
    data[:, 30, 40] = np.nan
    path = write_tif(tmp_path / "s.tif", data)

    valid = open_scene(path, chunk=16).valid.compute()

    expected = np.ones(data.shape[1:], dtype=bool)
    expected[4, 7] = expected[30, 40] = False
    np.testing.assert_array_equal(valid, expected)


def test_valid_with_nan_nodata_value(tmp_path: Path) -> None:
    data = ramp(dtype="float32")
    data[:, 0, :5] = np.nan
    path = write_tif(tmp_path / "s.tif", data, nodata=float("nan"))

    valid = open_scene(path).valid.compute()

    assert not valid[0, :5].any()
    assert valid.sum() == valid.size - 5


def test_valid_follows_the_internal_mask_band(tmp_path: Path) -> None:
    data = ramp()
    mask = np.ones(data.shape[1:], dtype=bool)
    mask[:20, :24] = False
    mask[33, 45] = False
    path = write_tif(tmp_path / "s.tif", data, mask=mask)
    with rasterio.open(path) as src:
        assert src.nodata is None  # the mask band, not a nodata value, drives validity

    scene = open_scene(path, chunk=16)

    np.testing.assert_array_equal(scene.valid.compute(), mask)


def test_valid_is_all_true_without_nodata_or_mask(tmp_path: Path) -> None:
    data = ramp()
    data[:, 0, 0] = 0
    path = write_tif(tmp_path / "s.tif", data)
    assert open_scene(path).valid.compute().all()


# --- errors ----------------------------------------------------------------------------


def test_missing_file_is_input_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.tif"
    with pytest.raises(InputNotFoundError, match="check the path") as info:
        open_scene(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, GeosegError)


def _bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.tif"
    if kind == "text":
        path.write_text("this is not a raster\n" * 20)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    ("kind", "hint"),
    [
        ("text", "check that the file is complete"),
        ("pickle", "check that the file is complete"),
        ("empty", "re-export"),
        ("folder", "folder"),
    ],
)
def test_unreadable_inputs_are_invalid_raster(tmp_path: Path, kind: str, hint: str) -> None:
    path = _bad_file(tmp_path, kind)

    with pytest.raises(InvalidRasterError, match=hint) as info:
        open_scene(path)

    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_no_crs_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "s.tif", ramp(), crs=None)

    with pytest.raises(InvalidRasterError, match="no CRS") as info:
        open_scene(path)

    message = str(info.value)
    assert str(path) in message
    assert "--assume-crs" in message
    assert "gdal_edit.py -a_srs" in message
    assert isinstance(info.value, ValueError)


def test_assume_crs_fills_a_missing_crs(tmp_path: Path) -> None:
    data = ramp()
    path = write_tif(tmp_path / "s.tif", data, crs=None)

    scene = open_scene(path, assume_crs="EPSG:32633")

    assert scene.crs == UTM33
    assert scene.transform == NORTH_UP
    np.testing.assert_array_equal(scene.data.values, data)


def test_assume_crs_does_not_override_the_file_crs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_tif(tmp_path / "s.tif", ramp())
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        assert open_scene(path, assume_crs="EPSG:4326").crs == UTM33
        assert open_scene(path, ["1"], assume_crs="EPSG:4326").crs == UTM33  # once a file
    # it was silently ignored: say so (a warning, as a batch may mix files with and without)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: has its own CRS (EPSG:32633), kept; --assume-crs EPSG:4326 applies only to "
        "scenes without one (fix a wrong CRS with `gdal_edit.py -a_srs`)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        nocrs = write_tif(tmp_path / "n.tif", ramp(), crs=None)
        assert open_scene(nocrs, assume_crs="EPSG:4326").crs == CRS.from_epsg(4326)
        open_scene(path, assume_crs="EPSG:32633")  # what it has: nothing to say
    assert caplog.records == []


@pytest.mark.parametrize("text", ["EPSG:not-a-code", "EPSG:999999", "no such crs"])
def test_invalid_assume_crs_is_refused(tmp_path: Path, text: str) -> None:
    path = write_tif(tmp_path / "s.tif", ramp(), crs=None)

    with pytest.raises(InvalidRasterError, match="not a CRS") as info:
        open_scene(path, assume_crs=text)

    assert repr(text) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "transform",
    [
        Affine(10.0, 2.0, 500_000.0, 0.0, -10.0, 4_000_000.0),  # shear in x
        Affine(10.0, 0.0, 500_000.0, 1.5, -10.0, 4_000_000.0),  # shear in y
        Affine.translation(500_000.0, 4_000_000.0) @ Affine.rotation(30) @ Affine.scale(10, -10),
    ],
    ids=["shear-x", "shear-y", "rotated"],
)
def test_rotated_or_sheared_transform_is_refused(tmp_path: Path, transform: Affine) -> None:
    path = write_tif(tmp_path / "s.tif", ramp(), transform=transform)

    with pytest.raises(InvalidRasterError, match="rotated or sheared") as info:
        open_scene(path)

    assert str(path) in str(info.value)
    assert "gdalwarp" in str(info.value)


def test_south_up_transform_is_refused(tmp_path: Path) -> None:
    south_up = Affine(10.0, 0.0, 500_000.0, 0.0, 10.0, 3_999_600.0)
    path = write_tif(tmp_path / "s.tif", ramp(), transform=south_up)

    with pytest.raises(InvalidRasterError, match="not north-up") as info:
        open_scene(path)

    assert str(path) in str(info.value)
    assert "gdalwarp" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_header_errors_come_before_any_pixel_is_read(tmp_path: Path) -> None:
    # A band selection error on a rotated file reports the transform: header first.
    rotated = Affine(10.0, 2.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
    path = write_tif(tmp_path / "s.tif", ramp(), transform=rotated)
    with pytest.raises(InvalidRasterError, match="rotated"):
        open_scene(path, bands=["B99"])
