"""Chunked polygonization: seam invariance, exactness, instances, confidence, holes."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage

from geoseg.areas import pixel_area_m2
from geoseg.vector.attributes import Georef
from geoseg.vector.polygonize import polygonize_array
from geoseg.vector.polygons import Polygons
from tests.vector.synthetic import blob_labels, components

UTM = Affine(10.0, 0, 500_000.0, 0, -10.0, 5_100_000.0)


@pytest.fixture(scope="module")
def big_labels() -> np.ndarray:
    """1100 x 1300: regions several hundred px across, so many span 256 and 1024 px chunks."""
    return blob_labels(1100, 1300, seed=3, smooth=8, speckle=0.002)


def _crossing(geometry: np.ndarray, chunk: int) -> int:
    """Polygons that span a chunk seam of a ``chunk`` px grid."""
    b = shapely.bounds(geometry)
    x = np.floor((b[:, 2] - 1) / chunk) > np.floor(b[:, 0] / chunk)
    y = np.floor((b[:, 3] - 1) / chunk) > np.floor(b[:, 1] / chunk)
    return int((x | y).sum())


def _wkb(p: Polygons) -> list[bytes]:
    return list(shapely.to_wkb(shapely.normalize(p.geometry)))


def _gdal_polygons(labels: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's polygons of the whole raster (255 = nodata) and their class ids.

    8-connected rings that touch themselves at a corner are invalid as GDAL writes
    them; ``make_valid`` splits them as geoseg does (valid polygons pass unchanged).
    """
    pairs = rasterio.features.shapes(labels, mask=labels != 255, connectivity=connectivity)
    geoms, values = zip(*((shapely.geometry.shape(g), int(v)) for g, v in pairs), strict=True)
    return shapely.make_valid(np.array(geoms)), np.array(values)


def _sorted_pairs(geometry: np.ndarray, class_id: np.ndarray) -> list[tuple[bytes, int]]:
    wkb = shapely.to_wkb(shapely.normalize(geometry))
    return sorted(zip(wkb, np.asarray(class_id).astype(int).tolist(), strict=True))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_polygons_equal_gdal_whole_raster_polygons_for_any_chunk_size(
    big_labels: np.ndarray, connectivity: int
) -> None:
    gdal, values = _gdal_polygons(big_labels, connectivity)
    expected = _sorted_pairs(gdal, values)
    assert len(gdal) == components(big_labels, connectivity)
    assert _crossing(gdal, 256) > 100 and _crossing(gdal, 1024) > 10, "too few seam regions"
    for chunk in (256, 1024, None):
        got = polygonize_array(big_labels, chunk=chunk, connectivity=connectivity)
        assert shapely.is_valid(got.geometry).all()
        assert _sorted_pairs(got.geometry, got.class_id) == expected, f"chunk {chunk}"


def test_odd_chunk_sizes_and_speckle() -> None:
    labels = blob_labels(150, 170, seed=1, speckle=0.05, nodata=0.05)
    whole = polygonize_array(labels)
    for chunk in (17, 64):
        for connectivity in (4, 8):
            got = polygonize_array(labels, chunk=chunk, connectivity=connectivity)
            assert len(got) == components(labels, connectivity)
            assert shapely.is_valid(got.geometry).all()
    assert _wkb(polygonize_array(labels, chunk=17)) == _wkb(whole)


def test_exact_areas_and_rasterizing_back() -> None:
    labels = blob_labels(300, 260, seed=5)
    transform = Affine(9.99479, 0, 465181.05, 0, -9.99745, 5080254.63)
    georef = Georef("EPSG:32633", transform)
    polys = polygonize_array(labels, chunk=64, georef=georef)
    pixel = abs(transform.a * transform.e)
    for k in range(4):
        planar = shapely.area(polys.geometry[polys.class_id == k]).sum()
        expected = np.count_nonzero(labels == k) * pixel
        assert abs(planar - expected) <= 1e-9 * expected
    back = rasterio.features.rasterize(
        zip(polys.geometry, polys.class_id.tolist(), strict=True),
        out_shape=labels.shape, transform=transform, fill=255, dtype="uint8",
    )  # fmt: skip
    np.testing.assert_array_equal(back, labels)


@pytest.mark.parametrize(
    ("crs", "transform"),
    [
        ("EPSG:32633", Affine(10.0, 0, 300_000.0, 0, -10.0, 6_650_000.0)),
        ("EPSG:4326", Affine(0.001, 0, 14.0, 0, -0.001, 60.0)),
        ("EPSG:3857", Affine(20.0, 0, 1.5e6, 0, -20.0, 8_399_737.89)),
    ],
)
def test_true_areas_add_up_to_the_pixel_areas(crs: str, transform: Affine) -> None:
    labels = blob_labels(120, 150, seed=2)
    polys = polygonize_array(labels, chunk=50, georef=Georef(crs, transform))
    assert polys.area_m2 is not None
    per_pixel = pixel_area_m2(crs, transform, np.arange(120), np.arange(150))
    for k in range(4):
        expected = per_pixel[labels == k].sum()
        got = polys.area_m2[polys.class_id == k].sum()
        assert abs(got - expected) <= 1e-6 * expected


def test_instances_merge_only_with_the_same_instance() -> None:
    labels = np.ones((40, 40), np.uint8)
    instances = np.zeros((40, 40), np.uint32)
    instances[:, :20] = 7  # crosses the 16 px chunk seams
    instances[:, 20:] = 9
    polys = polygonize_array(labels, chunk=16, instances=instances)
    assert len(polys) == 2
    assert polys.instance_id is not None
    assert sorted(polys.instance_id.tolist()) == [7, 9]
    assert shapely.area(polys.geometry).tolist() == [800.0, 800.0]


def test_confidence_mean_is_the_mean_over_each_region() -> None:
    labels = blob_labels(60, 70, seed=4)
    conf = np.random.default_rng(0).integers(0, 255, size=labels.shape).astype(np.uint8)
    conf[labels == 255] = 255
    polys = polygonize_array(labels, chunk=16, confidence=conf)
    mean = polys.conf_mean
    assert mean is not None
    back = rasterio.features.rasterize(
        zip(polys.geometry, range(len(polys)), strict=True), out_shape=labels.shape, fill=-1,
        dtype="int32", transform=Affine.identity(),
    )  # fmt: skip
    has = (back >= 0) & (conf != 255)
    expected = ndimage.mean(conf / 254.0, back, index=np.arange(len(polys)))
    np.testing.assert_allclose(mean, expected, rtol=1e-12)
    assert has.sum() == polys.conf_n.sum()  # type: ignore[union-attr]


def test_diagonal_contacts_across_seams_merge_only_with_8_connectivity() -> None:
    labels = np.zeros((12, 12), np.uint8)
    labels[np.arange(12), np.arange(12)] = 1  # a diagonal through every chunk corner
    for chunk in (4, 5, None):
        four = polygonize_array(labels, chunk=chunk, connectivity=4)
        eight = polygonize_array(labels, chunk=chunk, connectivity=8)
        assert (four.class_id == 1).sum() == 12
        assert (eight.class_id == 1).sum() == 1
        assert (eight.class_id == 0).sum() == 1  # the two triangles touch diagonally too
        assert shapely.is_valid(eight.geometry).all()


def test_holes_and_islands_across_seams() -> None:
    labels = np.zeros((30, 30), np.uint8)
    labels[5:25, 5:25] = 1
    labels[10:20, 10:20] = 2  # a lake in the forest, cut by the 8 px chunks
    labels[14:16, 14:16] = 1  # an island in the lake
    polys = polygonize_array(labels, chunk=8)
    assert len(polys) == 4
    ring = polys.geometry[(polys.class_id == 1) & (shapely.area(polys.geometry) > 100)][0]
    lake = polys.geometry[polys.class_id == 2][0]
    assert shapely.get_num_interior_rings(ring) == 1
    assert shapely.get_num_interior_rings(lake) == 1
    assert lake.area == 96 and ring.area == 300
    assert shapely.is_valid(polys.geometry).all()


def test_nodata_valid_mask_and_class_filter() -> None:
    labels = blob_labels(50, 60, seed=6)
    valid = np.ones(labels.shape, bool)
    valid[:, :10] = False
    polys = polygonize_array(labels, valid, chunk=16, keep=[1, 2])
    covered = np.count_nonzero(np.isin(labels, [1, 2]) & valid)
    assert shapely.area(polys.geometry).sum() == covered
    assert set(polys.class_id.tolist()) == {1, 2}
    assert shapely.bounds(polys.geometry)[:, 0].min() >= 10


def test_empty_and_all_nodata_chunks() -> None:
    labels = np.full((20, 20), 255, np.uint8)
    assert len(polygonize_array(labels, chunk=8)) == 0
    labels[15:, 15:] = 3
    polys = polygonize_array(labels, chunk=8)
    assert len(polys) == 1 and polys.geometry[0].area == 25


@pytest.mark.parametrize("connectivity", [4, 8])
def test_speckle_shortcut_matches_gdal_polygons(connectivity: int) -> None:
    """Lone pixels are built without ``shapes``; the polygons must equal GDAL's own."""
    labels = blob_labels(300, 260, seed=5, speckle=0.03)
    labels[40:60, 100:130] = 255  # nodata next to speckle
    mask = labels != 255
    gdal = [
        shapely.geometry.shape(g)
        for g, _ in rasterio.features.shapes(labels, mask=mask, connectivity=connectivity)
    ]
    ours = polygonize_array(labels, chunk=100, connectivity=connectivity).geometry
    gdal_geoms = np.array(gdal)
    assert int((shapely.area(gdal_geoms) == 1).sum()) > 500, "needs many one-pixel polygons"
    if connectivity == 4:
        expected = sorted(shapely.to_wkb(shapely.normalize(gdal_geoms)))
        assert sorted(shapely.to_wkb(shapely.normalize(ours))) == expected
        return

    # 8-connected rings touching themselves at a corner are made valid (a MultiPolygon
    # where one splits): the same count, areas and, class by class, the same cover.
    got = polygonize_array(labels, chunk=100, connectivity=8)
    assert ours.size == gdal_geoms.size
    np.testing.assert_array_equal(np.sort(shapely.area(ours)), np.sort(shapely.area(gdal_geoms)))
    values = np.array([v for _, v in rasterio.features.shapes(labels, mask=mask, connectivity=8)])
    for k in np.unique(values):
        a = shapely.union_all(got.geometry[got.class_id == k])
        b = shapely.union_all(shapely.make_valid(gdal_geoms[values == k]))
        assert shapely.symmetric_difference(a, b).area == 0
