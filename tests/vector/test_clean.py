"""Minimum mapping unit, coverage simplification and class filter."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from geoseg.vector.clean import filter_classes, merge_small_polygons, simplify_coverage
from geoseg.vector.polygonize import polygonize_array
from geoseg.vector.polygons import Polygons
from tests.vector.synthetic import blob_labels


def _shared(geoms: np.ndarray, i: int, j: int) -> float:
    return float(shapely.intersection(geoms[i].boundary, geoms[j].boundary).length)


def _neighbours(geoms: np.ndarray, i: int) -> list[int]:
    return [j for j in range(len(geoms)) if j != i and _shared(geoms, i, j) > 0]


def _overlap_area(geoms: np.ndarray) -> float:
    a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    k = a < b
    return float(shapely.area(shapely.intersection(geoms[a[k]], geoms[b[k]])).sum())


def test_small_polygon_joins_the_neighbour_with_the_longest_boundary() -> None:
    labels = np.zeros((10, 10), np.uint8)
    labels[:, 5:] = 2
    labels[3:6, 5:7] = 1  # 6 px: 3 px of border with class 0 (50 px), 7 with class 2 (44 px)
    polys = polygonize_array(labels)
    area = shapely.area(polys.geometry)  # 1 px = 1 m2 here
    merged, merged_area = merge_small_polygons(polys, area, 7.0)
    assert merged_area.sum() == area.sum() == 100
    assert merged.class_id.tolist() == [0, 2]  # not the larger class 0
    np.testing.assert_array_equal(shapely.area(merged.geometry), [50, 50])
    assert shapely.equals(merged.geometry[1], shapely.box(5, 0, 10, 10))


def test_merged_polygons_merge_again_while_still_small() -> None:
    labels = np.zeros((10, 10), np.uint8)
    labels[4, 4] = 1  # 1 px inside a 2 px patch of class 3 inside class 0
    labels[4, 5] = 3
    polys = polygonize_array(labels)
    merged, merged_area = merge_small_polygons(polys, shapely.area(polys.geometry), 3.0)
    assert merged.class_id.tolist() == [0] and merged_area.tolist() == [100.0]


def test_mmu_conserves_area_and_leaves_no_small_polygon_with_a_neighbour() -> None:
    labels = blob_labels(80, 90, seed=7, speckle=0.03, nodata=0.0)
    labels[:10, :10] = 255
    labels[3:6, 3:6] = 2  # an island in nodata: no neighbour, kept though small
    polys = polygonize_array(labels, chunk=32)
    area = shapely.area(polys.geometry) * 100.0  # 10 m pixels
    merged, merged_area = merge_small_polygons(polys, area, 5000.0)
    assert merged_area.sum() == pytest.approx(area.sum(), rel=1e-12)
    np.testing.assert_allclose(shapely.area(merged.geometry) * 100.0, merged_area, rtol=1e-12)
    assert len(merged) < len(polys) / 3
    small = np.flatnonzero(merged_area < 5000.0)
    assert any(shapely.area(merged.geometry[i]) == 9 for i in small), "island must stay"
    for i in small:
        assert _neighbours(merged.geometry, i) == []
    assert shapely.is_valid(merged.geometry).all()
    assert _overlap_area(merged.geometry) == 0
    union = shapely.union_all(merged.geometry).area
    assert union == pytest.approx(shapely.union_all(polys.geometry).area)
    # Same-class neighbours left by the merges are dissolved.
    for i in range(len(merged)):
        same = [
            j for j in _neighbours(merged.geometry, i) if merged.class_id[j] == merged.class_id[i]
        ]
        assert same == []


def test_simplified_coverage_has_no_gaps_or_overlaps() -> None:
    labels = blob_labels(120, 140, seed=8, speckle=0.0, nodata=0.0)
    polys = polygonize_array(labels, chunk=40)
    simple = simplify_coverage(polys, 2.0)
    geoms = simple.geometry
    assert shapely.is_valid(geoms).all()
    np.testing.assert_array_equal(simple.class_id, polys.class_id)
    assert shapely.coverage_is_valid(geoms)
    assert _overlap_area(geoms) < 1e-9
    before = shapely.area(polys.geometry).sum()
    assert shapely.area(geoms).sum() == pytest.approx(before, rel=1e-3)
    assert shapely.union_all(geoms).area == pytest.approx(before, rel=1e-3)
    assert (
        shapely.get_num_coordinates(geoms).sum()
        < 0.6 * shapely.get_num_coordinates(polys.geometry).sum()
    )


def test_zero_tolerance_and_filter() -> None:
    polys = polygonize_array(blob_labels(30, 30, seed=9))
    assert simplify_coverage(polys, 0.0) is polys
    kept = filter_classes(polys, [1])
    assert set(kept.class_id.tolist()) == {1}
    assert filter_classes(polys, None) is polys
    assert len(filter_classes(Polygons.empty(), [1])) == 0
