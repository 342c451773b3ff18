from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geoseg.change.align import align_label_maps
from geoseg.errors import GeosegError, InputNotFoundError, InvalidRasterError
from geoseg.types import ClassInfo, ClassSchema
from tests.change.helpers import random_labels, write_labels
from tests.conftest import write_raster


def test_same_grid_is_used_as_is(tmp_path: Path) -> None:
    a = random_labels((40, 30), 0)
    b = random_labels((40, 30), 1)
    p = [write_labels(tmp_path / "a.tif", a, date="2019-07-01"),
         write_labels(tmp_path / "b.tif", b)]  # fmt: skip
    aligned = align_label_maps(p, chunk=16)
    assert aligned.resampled == (False, False)
    assert aligned.dates == ("2019-07-01", None)
    np.testing.assert_array_equal(aligned.labels[0].compute(), a)
    np.testing.assert_array_equal(aligned.labels[1].compute(), b)
    assert aligned.labels[0].chunks[0][0] == 16


def test_other_grid_is_resampled_onto_the_first_over_the_common_extent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = random_labels((40, 30), 0, nodata_share=0)
    first = write_labels(tmp_path / "a.tif", a, transform=Affine(10, 0, 500_000, 0, -10, 5_100_000))
    # 5 m pixels shifted by 100 m east: covers columns 10-29 of the first map's grid
    fine = np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)[:, 20:]
    second = write_labels(
        tmp_path / "b.tif", np.ascontiguousarray(fine),
        transform=Affine(5, 0, 500_100, 0, -5, 5_100_000),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="geoseg.change.align"):
        aligned = align_label_maps([first, second], chunk=8)
    assert "resampled (nearest)" in caplog.text
    assert aligned.resampled == (False, True)
    assert (aligned.height, aligned.width) == (40, 20)
    assert aligned.transform == Affine(10, 0, 500_100, 0, -10, 5_100_000)
    np.testing.assert_array_equal(aligned.labels[0].compute(), a[:, 10:])
    np.testing.assert_array_equal(aligned.labels[1].compute(), a[:, 10:])


def test_other_crs_is_reprojected(tmp_path: Path) -> None:
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    a = np.kron(random_labels((8, 8), 0, nodata_share=0), np.ones((8, 8), np.uint8))
    src_t = Affine(10, 0, 500_000, 0, -10, 5_100_000)
    first = write_labels(tmp_path / "a.tif", a, transform=src_t)
    dst_t, w, h = calculate_default_transform("EPSG:32633", "EPSG:4326", 64, 64,
                                              500_000, 5_099_360, 500_640, 5_100_000)  # fmt: skip
    lonlat = np.full((h, w), 255, np.uint8)
    reproject(a, lonlat, src_transform=src_t, src_crs="EPSG:32633", dst_transform=dst_t,
              dst_crs="EPSG:4326", resampling=Resampling.nearest, dst_nodata=255)  # fmt: skip
    second = write_labels(tmp_path / "b.tif", lonlat, crs="EPSG:4326", transform=dst_t)
    aligned = align_label_maps([first, second], chunk=16)
    assert aligned.resampled == (False, True)
    back = aligned.labels[1].compute()
    core = back[4:-4, 4:-4]
    before = aligned.labels[0].compute()[4:-4, 4:-4]
    assert np.mean(core == before) > 0.95  # nearest there and back moves only edge pixels


def test_disjoint_extents_are_refused(tmp_path: Path) -> None:
    a = random_labels((10, 10), 0)
    first = write_labels(tmp_path / "a.tif", a)
    far = write_labels(tmp_path / "b.tif", a, transform=Affine(10, 0, 600_000, 0, -10, 5_100_000))
    with pytest.raises(InvalidRasterError, match=r"b\.tif.*disjoint"):
        align_label_maps([first, far])


def test_different_schemas_are_refused(tmp_path: Path) -> None:
    a = random_labels((10, 10), 0)
    other = ClassSchema((ClassInfo(1, "tree", (0, 1, 0)), ClassInfo(4, "lake", (0, 0, 1))))
    p = [write_labels(tmp_path / "a.tif", a), write_labels(tmp_path / "b.tif", a, schema=other)]
    with pytest.raises(GeosegError, match=r"b\.tif.*differ.*same model"):
        align_label_maps(p)


def test_float_raster_and_missing_schema_are_refused(tmp_path: Path) -> None:
    a = write_labels(tmp_path / "a.tif", random_labels((10, 10), 0))
    flt = write_raster(tmp_path / "f.tif", np.zeros((1, 10, 10), np.float32))
    with pytest.raises(InvalidRasterError, match=r"f\.tif.*float32.*not a label map"):
        align_label_maps([a, flt])
    bare = write_raster(tmp_path / "u.tif", np.zeros((1, 10, 10), np.uint8))
    with pytest.raises(InvalidRasterError, match=r"u\.tif.*no class schema"):
        align_label_maps([a, bare])
    with pytest.raises(InputNotFoundError):
        align_label_maps([a, tmp_path / "missing.tif"])
    with pytest.raises(GeosegError, match="at least two"):
        align_label_maps([a])
