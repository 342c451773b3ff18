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


@pytest.mark.parametrize(
    ("shift_px", "rows", "cols"),
    [
        # the second map covers [s, s + n) of the first map's pixel coordinates; a pixel
        # i is compared where its centre i + 0.5 lies inside that and inside [0, n)
        (0.3, (0, 21), (0, 17)),
        (0.5, (0, 21), (0, 17)),
        (0.7, (1, 21), (1, 17)),
        (1.0, (1, 21), (1, 17)),
        (-0.3, (0, 21), (0, 17)),
        (-0.5, (0, 20), (0, 16)),
        (-0.7, (0, 20), (0, 16)),
    ],
)
def test_sub_pixel_shift_compares_every_pixel_both_maps_cover(
    tmp_path: Path, shift_px: float, rows: tuple[int, int], cols: tuple[int, int]
) -> None:
    from rasterio.warp import Resampling, reproject

    # the trial's grid (9.995 x 10 m pixels); the second map shifted east and south
    t1 = Affine(9.995, 0, 465_181.05, 0, -10, 5_080_254.63)
    t2 = Affine(9.995, 0, t1.c + 9.995 * shift_px, 0, -10, t1.f - 10 * shift_px)
    a = random_labels((21, 17), 0, nodata_share=0)
    b = random_labels((21, 17), 1, nodata_share=0)
    first = write_labels(tmp_path / "a.tif", a, transform=t1)
    second = write_labels(tmp_path / "b.tif", b, transform=t2)
    # independent: GDAL's nearest reprojection of the whole second map onto the first grid
    expected = np.full(a.shape, 255, np.uint8)
    reproject(b, expected, src_transform=t2, src_crs="EPSG:32633", dst_transform=t1,
              dst_crs="EPSG:32633", resampling=Resampling.nearest, src_nodata=255,
              dst_nodata=255)  # fmt: skip
    valid_rows = np.flatnonzero((expected != 255).any(axis=1))
    valid_cols = np.flatnonzero((expected != 255).any(axis=0))
    assert (valid_rows[0], valid_rows[-1] + 1) == rows  # the hand count agrees with GDAL
    assert (valid_cols[0], valid_cols[-1] + 1) == cols
    aligned = align_label_maps([first, second], chunk=8)
    ys, xs = slice(*rows), slice(*cols)
    assert (aligned.height, aligned.width) == (rows[1] - rows[0], cols[1] - cols[0])
    assert aligned.transform.almost_equals(t1 @ Affine.translation(cols[0], rows[0]))
    np.testing.assert_array_equal(aligned.labels[0].compute(), a[ys, xs])
    after = aligned.labels[1].compute()
    assert not (after == 255).any()  # no pixel of the window lost to the shift
    np.testing.assert_array_equal(after, expected[ys, xs])


def test_no_common_data_names_the_map_that_is_all_nodata(tmp_path: Path) -> None:
    from geoseg.change.align import no_common_data_error

    a = random_labels((12, 10), 0, nodata_share=0)
    empty = np.full((12, 10), 255, np.uint8)
    maps = [write_labels(tmp_path / f"{n}.tif", x) for n, x in (("a", a), ("b", empty), ("c", a))]
    text = str(no_common_data_error(align_label_maps(maps, chunk=8)))
    assert text.startswith(f"{maps[1]}: every pixel is nodata (255) on the maps' common grid")
    assert "a.tif" not in text and "c.tif" not in text
    west, east = a.copy(), a.copy()
    west[:, 5:] = 255
    east[:, :5] = 255
    halves = [write_labels(tmp_path / "w.tif", west), write_labels(tmp_path / "e.tif", east)]
    text = str(no_common_data_error(align_label_maps(halves, chunk=8)))
    assert text.startswith(f"{halves[0]}, {halves[1]}: no pixel holds data on every date")
