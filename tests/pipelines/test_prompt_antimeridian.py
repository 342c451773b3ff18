"""Prompts on a geographic scene across the antimeridian: -179.998 and 180.002 are one place."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

from geoseg.errors import InvalidVectorError
from geoseg.pipelines.prompt_antimeridian import longitude_wrap
from geoseg.pipelines.prompt_inputs import SceneFrame, read_prompts

#: 200 x 200 px of 0.0001 deg from 179.99 E, -16.49: the scene spans 179.99 to 180.01.
T = Affine(0.0001, 0, 179.99, 0, -0.0001, -16.49)
N = 200


def _frame(crs: str = "EPSG:4326", transform: Affine = T) -> SceneFrame:
    return SceneFrame("fiji.tif", crs, transform, N, N, lambda r, c: np.ones(len(r), bool))


def _pixel(x: float, y: float) -> tuple[float, float]:
    inv = ~T
    return inv @ (x, y)


@pytest.mark.parametrize(
    "point",
    [
        "180.002,-16.505",
        "-179.998,-16.505,EPSG:4326",
        "-179.998,-16.505",
        "180.002,-16.505,OGC:CRS84",
    ],
)
def test_one_point_either_side_of_the_antimeridian(point: str) -> None:
    (prompt,) = read_prompts(_frame(), point=point).items
    # column (180.002 - 179.99) / 0.0001 = 120, row (-16.49 + 16.505) / 0.0001 = 150
    np.testing.assert_allclose(prompt.points, [[120.0, 150.0]], atol=1e-6)
    np.testing.assert_allclose(prompt.points[0], _pixel(180.002, -16.505), atol=1e-6)


def test_point_and_box_layers_in_minus_180_180(tmp_path: Path) -> None:
    points = gpd.GeoDataFrame(
        geometry=[shapely.Point(-179.998, -16.505), shapely.Point(179.995, -16.50)], crs=4326
    )
    points.to_file(tmp_path / "pts.geojson")
    found = read_prompts(_frame(), points=str(tmp_path / "pts.geojson"))
    assert len(found.items) == 2 and found.outside == 0
    np.testing.assert_allclose(found.items[0].points, [[120.0, 150.0]], atol=1e-6)
    np.testing.assert_allclose(found.items[1].points, [[50.0, 100.0]], atol=1e-6)
    # a box written across the antimeridian (its polygon 179.995 .. -179.995 E), and one
    # wholly on the west side
    across = shapely.Polygon(
        [(179.995, -16.50), (-179.995, -16.50), (-179.995, -16.51), (179.995, -16.51)]
    )
    west = shapely.box(-179.999, -16.505, -179.994, -16.50)
    boxes = gpd.GeoDataFrame(geometry=[across, west], crs=4326)
    boxes.to_file(tmp_path / "boxes.gpkg")
    found = read_prompts(_frame(), boxes=str(tmp_path / "boxes.gpkg"))
    assert found.outside == 0
    got = [p.box for p in found.items]
    np.testing.assert_allclose(got, [(50, 100, 150, 200), (110, 100, 160, 150)], atol=1e-6)
    assert shapely.bounds(found.shapes[0]) == pytest.approx((179.995, -16.51, 180.005, -16.50))


def test_far_away_points_stay_outside_and_other_scenes_are_untouched() -> None:
    with pytest.raises(InvalidVectorError, match=r"outside fiji\.tif"):
        read_prompts(_frame(), point="0.002,-16.505,EPSG:4326")
    # within -180..180 (and projected scenes): coordinates as given
    inside = Affine(0.0001, 0, 179.97, 0, -0.0001, -16.49)
    assert longitude_wrap("EPSG:4326", inside, N) is None
    assert longitude_wrap("EPSG:32760", Affine(10, 0, 900_000, 0, -10, 8_200_000), N) is None
    with pytest.raises(InvalidVectorError, match=r"outside fiji\.tif"):
        read_prompts(_frame(transform=inside), point="-179.998,-16.505,EPSG:4326")
    # a scene stored in 0..360 longitudes far past 180 takes -150 as 210
    wrap = longitude_wrap("EPSG:4326", Affine(0.01, 0, 209.0, 0, -0.01, 0), N)
    assert wrap is not None
    np.testing.assert_allclose(wrap(np.array([-150.0, 210.5, 30.0])), [210.0, 210.5, 30.0])
