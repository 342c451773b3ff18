"""Vertex edits on flat coordinate arrays."""

from __future__ import annotations

import numpy as np
import shapely

from geoseg.vector.rings import insert_vertices_on_lines, remove_collinear_vertices


def test_remove_collinear_vertices_keeps_the_shape_and_corners() -> None:
    square = shapely.Polygon(
        [(0, 0), (0, 2), (0, 4), (2, 4), (4, 4), (4, 0), (2, 0), (0, 0)],
        [[(1, 1), (1, 2), (1, 3), (3, 3), (3, 1), (1, 1)]],
    )
    multi = shapely.MultiPolygon([shapely.box(10, 0, 12, 1), shapely.box(12, 1, 14, 2)])
    out = remove_collinear_vertices(np.array([square, multi]))
    assert out[0].geom_type == "Polygon" and out[1].geom_type == "MultiPolygon"
    assert shapely.equals(out[0], square) and shapely.equals(out[1], multi)
    assert shapely.get_num_coordinates(out[0]) == 10  # 4 + 1 per ring
    assert shapely.get_num_coordinates(out[1]) == 10


def test_insert_vertices_on_lines_only_on_seam_edges() -> None:
    poly = shapely.box(0, 0, 4, 3)
    out = insert_vertices_on_lines(np.array([poly]), np.array([4.0]), np.array([]))[0]
    xy = shapely.get_coordinates(out)
    assert shapely.equals(out, poly)
    on_seam = xy[xy[:, 0] == 4]
    assert sorted(set(on_seam[:, 1].tolist())) == [0, 1, 2, 3]
    assert shapely.get_num_coordinates(out) == 5 + 2
