"""The data fingerprint of hand-built rasters: GSD, band statistics, classes, objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from pyproj import Geod

from geoseg.training import fingerprint
from geoseg.training.fingerprint import SAMPLE_WINDOW, data_fingerprint, object_sizes
from geoseg.types import ClassInfo, ClassSchema
from tests.conftest import write_raster


def _labels() -> np.ndarray:
    """40 x 50: class 1 everywhere, a 3x3 and a 5x5 square of 2, a 2x4 bar of 3, 255 corner."""
    lab = np.ones((40, 50), np.uint8)
    lab[2:5, 2:5] = 2
    lab[20:25, 30:35] = 2
    lab[10:12, 40:44] = 3
    lab[35:, 45:] = 255  # nodata (the file's nodata value)
    return lab


def _pair(tmp: Path, crs: str = "EPSG:32633", transform: Affine | None = None) -> tuple[str, str]:
    image = np.full((2, 40, 50), 100, np.uint16)
    image[0, :, 25:] = 300  # band 1: half 100, half 300 (x 1e-4: 0.01 / 0.03)
    image[:, :4, :] = 0  # 4 rows of nodata (200 px)
    kw = {"crs": crs, "transform": transform}
    img = write_raster(tmp / "img.tif", image, nodata=0, **kw)  # type: ignore[arg-type]
    lab = write_raster(tmp / "lab.tif", _labels()[None], nodata=255, **kw)  # type: ignore[arg-type]
    return str(img), str(lab)


def test_fingerprint_of_a_hand_built_scene(tmp_path: Path) -> None:
    img, lab = _pair(tmp_path)
    fp = data_fingerprint([img], [lab])
    assert fp.gsd_m == 10.0 and fp.dtype == "uint16" and fp.scale == 1e-4
    assert fp.scene_shapes == ((40, 50),) and fp.sampled_px == 2000
    assert fp.nodata_share == 200 / 2000
    # labels count where the image has data: rows 0-3 dropped, so the 3x3 square keeps 1 row
    assert fp.class_px == {1: 1800 - 25 - 3 - 8 - 25, 2: 3 + 25, 3: 8}
    assert fp.objects[2].count == 2 and fp.objects[2].median_px == 14.0  # (3 + 25) / 2
    assert fp.objects[2].pixel_median_px == 25.0  # 25 of the 28 px lie in the 5x5 square
    assert fp.objects[3].count == 1 and fp.objects[3].p90_px == 8.0
    b1, b2 = fp.bands
    assert b1.mean == pytest.approx(0.02) and b1.pct(50.0) == pytest.approx(0.02)
    assert b2.mean == pytest.approx(0.01) and b2.std == pytest.approx(0.0, abs=1e-12)


def test_the_gsd_of_a_geographic_scene_is_in_metres(tmp_path: Path) -> None:
    step = 8.983152841e-05  # Sen1Floods11's pixel, near 38 N
    transform = Affine(step, 0, -0.78189, 0, -step, 38.12881)
    img, lab = _pair(tmp_path, "EPSG:4326", transform)
    fp = data_fingerprint([img], [lab])
    # the centre pixel (row 20, col 25) as a geodesic polygon on WGS84
    x0, y0 = transform @ (25, 20)
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(
        [x0, x0 + step, x0 + step, x0], [y0, y0, y0 - step, y0 - step]
    )
    assert fp.gsd_m == pytest.approx(np.sqrt(abs(area)), rel=1e-6)
    assert 8.8 < fp.gsd_m < 9.0  # about 10 m N-S by 7.9 m E-W


def test_instances_are_counted_apart_where_components_would_merge() -> None:
    labels = np.zeros((10, 10), np.int64)
    labels[2:6, 2:8] = 1
    ids = np.zeros((10, 10), np.int64)
    ids[2:6, 2:5], ids[2:6, 5:8] = 1, 2  # two touching 4x3 buildings
    assert object_sizes(labels) == {0: [76], 1: [24]}
    assert object_sizes(labels, ids) == {1: [12, 12]}


def test_diagonal_neighbours_are_one_object() -> None:
    labels = np.zeros((5, 5), np.int64)
    labels[1, 1] = labels[2, 2] = labels[4, 0] = 3
    assert sorted(object_sizes(labels)[3]) == [1, 2]


def test_instance_ids_give_the_object_sizes(tmp_path: Path) -> None:
    img, _ = _pair(tmp_path)
    ids = np.zeros((1, 40, 50), np.uint32)
    ids[0, 10:20, 10:15], ids[0, 10:20, 15:20], ids[0, 30:32, 30:33] = 7, 8, 9
    lab = write_raster(tmp_path / "ids.tif", ids)
    schema = ClassSchema((ClassInfo(0, "background", (0, 0, 0)),
                          ClassInfo(1, "building", (200, 0, 0), is_thing=True)))  # fmt: skip
    fp = data_fingerprint([img], [str(lab)], schema=schema, task="instance")
    assert fp.objects[1].count == 3 and fp.objects[1].median_px == 50.0
    assert fp.class_px[1] == 106


def test_a_large_scene_is_sampled_in_bounded_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (1, 1024, 1536), dtype=np.uint8)
    img = write_raster(tmp_path / "big.tif", image)
    lab = write_raster(tmp_path / "big_lab.tif", (image > 128).astype(np.uint8))
    whole = data_fingerprint([str(img)], [str(lab)])
    assert whole.sampled_px == 1024 * 1536  # 6 tiles: under the limit, all read
    monkeypatch.setattr(fingerprint, "MAX_WINDOWS", 2)
    fp = data_fingerprint([str(img)], [str(lab)])
    assert fp.scene_shapes == ((1024, 1536),)
    assert fp.sampled_px == 2 * SAMPLE_WINDOW**2  # 2 of the 6 tiles
