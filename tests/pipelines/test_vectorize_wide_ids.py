"""Vectorize label rasters whose class ids do not fit uint8 (int16, uint16, uint32)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geoseg.errors import InvalidRasterError
from geoseg.io.labels import CLASSES_TAG
from geoseg.io.vectors import read_vectors
from geoseg.pipelines.vectorize import VectorizeOptions, label_polygons, vectorize_labels
from tests.conftest import TINY_SCHEMA, write_raster

UTM = Affine(10.0, 0, 500_000.0, 0, -10.0, 5_100_000.0)  # 100 m2 pixels
PIXEL_M2 = 100.0


def _quadrants(values: tuple[int, int, int, int], dtype: str) -> np.ndarray:
    """``(1, 40, 40)`` raster whose 20 x 20 px quadrants hold ``values`` (TL, TR, BL, BR)."""
    a, b, c, d = values
    top = np.hstack([np.full((20, 20), a), np.full((20, 20), b)])
    bottom = np.hstack([np.full((20, 20), c), np.full((20, 20), d)])
    return np.vstack([top, bottom]).astype(dtype)[None]


def _areas(frame: object) -> dict[int, float]:
    return {int(k): float(v) for k, v in frame.groupby("class_id")["area_m2"].sum().items()}  # type: ignore[attr-defined]


def _planar(frame: object) -> dict[int, float]:
    groups = frame.groupby("class_id")  # type: ignore[attr-defined]
    return {int(k): float(g.geometry.area.sum()) for k, g in groups}


@pytest.mark.parametrize("chunk", [16, 2048])
def test_int16_ids_outside_0_254_are_polygons_not_nodata(tmp_path: Path, chunk: int) -> None:
    src = write_raster(tmp_path / "i16.tif", _quadrants((256, 300, -5, 3), "int16"), transform=UTM)
    result = vectorize_labels(src, tmp_path / "i16.gpkg", VectorizeOptions(chunk=chunk))
    frame = read_vectors(tmp_path / "i16.gpkg")
    assert result.polygons == len(frame) == 4
    assert sorted(frame["class_id"]) == [-5, 3, 256, 300]
    assert sorted(frame["class_name"]) == ["-5", "256", "3", "300"]
    # 400 px of 100 m2 each (planar exactly; true area within the UTM scale factor)
    assert _planar(frame) == {k: 400 * PIXEL_M2 for k in (-5, 3, 256, 300)}
    for area in _areas(frame).values():
        assert area == pytest.approx(400 * PIXEL_M2 / 0.9996**2, rel=2e-4)
    assert result.area_ha == pytest.approx(4 * 400 * PIXEL_M2 / 1e4, rel=1e-3)


def test_uint16_corine_codes_keep_their_nodata(tmp_path: Path) -> None:
    # 0 is the declared nodata; 255 is an ordinary class in a uint16 map.
    data = _quadrants((1000, 1255, 0, 255), "uint16")
    src = write_raster(tmp_path / "clc.tif", data, transform=UTM, nodata=0)
    frame = label_polygons(src, VectorizeOptions(chunk=16))
    assert _planar(frame) == {1000: 400 * PIXEL_M2, 1255: 400 * PIXEL_M2, 255: 400 * PIXEL_M2}
    only = label_polygons(src, VectorizeOptions(classes=["1255"], min_area_ha=0.01))
    assert list(only["class_id"]) == [1255]


def test_ids_outside_the_schema_warn_with_their_areas(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import rasterio

    src = write_raster(tmp_path / "s.tif", _quadrants((1, 4, 9, 523), "int16"), transform=UTM)
    with rasterio.open(src, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: json.dumps(TINY_SCHEMA.to_json())})
    with caplog.at_level(logging.WARNING):
        result = vectorize_labels(src, tmp_path / "s.gpkg", VectorizeOptions(chunk=16))
    assert result.polygons == 4
    assert "523: 1 polygon(s)" in caplog.text and "s.tif" in caplog.text


def test_ids_beyond_int32_are_refused_by_name(tmp_path: Path) -> None:
    data = _quadrants((1, 2, 3, 3_000_000_000), "uint32")
    src = write_raster(tmp_path / "u32.tif", data, transform=UTM)
    with pytest.raises(InvalidRasterError, match=r"u32\.tif: holds class id 3000000000.*nodata"):
        vectorize_labels(src, tmp_path / "u32.gpkg", VectorizeOptions(chunk=16))
    assert not (tmp_path / "u32.gpkg").exists()
    # the same value declared nodata is masked, not refused
    src = write_raster(tmp_path / "n32.tif", data, transform=UTM, nodata=3_000_000_000)
    frame = label_polygons(src, VectorizeOptions(chunk=16))
    assert _planar(frame) == {k: 400 * PIXEL_M2 for k in (1, 2, 3)}
