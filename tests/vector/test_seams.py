"""Seam dissolve with 8-connectivity: corner contacts and holes cut by chunk seams.

Each case is checked for every chunk size against the whole raster in one chunk
(vertex for vertex, areas, perimeters) and against an independent construction:
``scipy.ndimage.label`` 8-connected regions, each the union of its 4-connected
``rasterio.features.shapes`` polygons, its true area the sum of its pixels' areas.
"""

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
from geoseg.vector.rings import nested_parts

UTM = Georef("EPSG:32633", Affine(10.0, 0, 500_000.0, 0, -10.0, 5_100_000.0))

#: Class 1: a ring reaching the top row and the right column (a seam polygon wherever
#: chunks cut those), with a bump at (1, 1); in its hole an island ring touching the
#: bump at a corner only (a part nested in a hole of another part), itself with a hole
#: (a lone class-2 pixel); at (1, 10) a class-0 cell closed on four sides but open at
#: its corners (GDAL's ring around it is no hole); a chain of corner contacts from
#: (7, 7) down to (9, 7). Class 2: a ring around a lone class-0 pixel.
_HAND = """
11111111111111
11000001010111
10111001001001
10121001010101
10111001000001
10000001022201
10000001020201
11111111022201
00000000100011
00000001000001
"""


def _hand_labels() -> np.ndarray:
    rows = [list(r) for r in _HAND.split()]
    return np.array(rows, np.uint8)


def _random_labels(seed: int) -> np.ndarray:
    """``(7..9, 7..9)`` three classes and nodata, cell by cell: corner contacts everywhere."""
    rng = np.random.default_rng(seed)
    h, w = rng.integers(7, 10, 2)
    labels = rng.integers(0, 3, (h, w)).astype(np.uint8)
    labels[rng.random((h, w)) < 0.08] = 255
    return labels


def _canonical(p: Polygons) -> tuple[list[bytes], np.ndarray, np.ndarray, np.ndarray]:
    """Polygons (WKB, normalized), classes, areas and perimeters in one order."""
    wkb = shapely.to_wkb(shapely.normalize(p.geometry))
    order = np.lexsort([p.class_id, wkb])
    assert p.area_m2 is not None and p.perim_m is not None
    return wkb[order].tolist(), p.class_id[order], p.area_m2[order], p.perim_m[order]


def _check_independent(labels: np.ndarray, got: Polygons) -> None:
    """Each polygon is one 8-connected region: its pixels' union and their total area."""
    pixel = pixel_area_m2(UTM.crs_wkt, UTM.transform, np.arange(labels.shape[0]),
                          np.arange(labels.shape[1]))  # fmt: skip
    t = UTM.transform
    pixel_geoms = shapely.transform(got.geometry, lambda xy: (xy - (t.c, t.f)) / (t.a, t.e))
    seen = set()
    for geom, k, area in zip(pixel_geoms, got.class_id, got.area_m2, strict=True):  # type: ignore[arg-type]
        comp, _ = ndimage.label(labels == k, structure=np.ones((3, 3)))
        x, y = shapely.get_coordinates(shapely.point_on_surface(geom))[0]
        region = comp == comp[int(y), int(x)]
        pieces = rasterio.features.shapes(region.astype(np.uint8), mask=region, connectivity=4)
        expected = shapely.union_all([shapely.geometry.shape(g) for g, _ in pieces])
        assert shapely.equals(shapely.set_precision(geom, 1e-6), expected), (k, geom.wkt)
        assert area == pytest.approx(pixel[region].sum(), rel=1e-5)
        seen.add((int(k), int(comp[int(y), int(x)])))
    regions = sum(ndimage.label(labels == k, np.ones((3, 3)))[1] for k in range(3))
    assert len(seen) == len(got) == regions


def _check_every_chunk_size(labels: np.ndarray) -> None:
    whole = polygonize_array(labels, connectivity=8, georef=UTM)
    wkb, classes, area, perim = _canonical(whole)
    _check_independent(labels, whole)
    for chunk in range(2, max(labels.shape)):
        got = polygonize_array(labels, chunk=chunk, connectivity=8, georef=UTM)
        assert shapely.is_valid(got.geometry).all(), f"chunk {chunk}"
        g_wkb, g_classes, g_area, g_perim = _canonical(got)
        assert g_wkb == wkb, f"chunk {chunk}"
        np.testing.assert_array_equal(g_classes, classes)
        np.testing.assert_allclose(g_area, area, rtol=1e-9, err_msg=f"chunk {chunk}")
        np.testing.assert_allclose(g_perim, perim, rtol=1e-9, err_msg=f"chunk {chunk}")
        back = rasterio.features.rasterize(
            zip(got.geometry, got.class_id.tolist(), strict=True), out_shape=labels.shape,
            transform=UTM.transform, fill=255, dtype="uint8",
        )  # fmt: skip
        np.testing.assert_array_equal(back, labels, err_msg=f"chunk {chunk}")


def test_hand_made_corner_contacts_and_holes_for_every_chunk_size() -> None:
    labels = _hand_labels()
    whole = polygonize_array(labels, connectivity=8)
    ring = whole.geometry[(whole.class_id == 1) & (shapely.area(whole.geometry) > 50)][0]
    parts, _, nested = nested_parts(np.array([ring]))
    assert nested.sum() == 1 and shapely.area(parts[nested]).tolist() == [8.0]
    _check_every_chunk_size(labels)


@pytest.mark.parametrize("seed", range(3))
def test_random_corner_contacts_for_every_chunk_size(seed: int) -> None:
    _check_every_chunk_size(_random_labels(seed))


def test_nested_parts() -> None:
    ring = shapely.Polygon([(0, 0), (5, 0), (5, 5), (0, 5)], [[(1, 1), (4, 1), (4, 4), (1, 4)]])
    island = shapely.box(2, 2, 3, 3)  # in the ring's hole
    beside = shapely.box(5, 5, 6, 6)  # touches the ring's outside at a corner
    geoms = np.array([shapely.MultiPolygon([ring, island, beside]), island, ring])
    parts, part_geom, nested = nested_parts(geoms)
    assert part_geom.tolist() == [0, 0, 0, 1, 2]
    # Only parts of one geometry count: the lone island (geometry 1) is no part of the ring's.
    assert nested.tolist() == [False, True, False, False, False]
    assert parts[1].equals(island)
