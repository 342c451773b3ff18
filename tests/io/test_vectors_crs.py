"""The CRS rule for input vector layers (geoseg.io.vectors_crs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely

from geoseg.errors import InvalidVectorError
from geoseg.io.vectors_crs import declares_crs, features_outside, layer_crs, read_input_layer

UTM = np.array([465181.0, 5079244.9, 466180.5, 5080254.6])
LONLAT = np.array([14.55, 45.86, 14.57, 45.88])
UTM33 = pyproj.CRS("EPSG:32633")


@pytest.mark.parametrize(
    ("declared", "bounds", "given", "expected"),
    [
        (None, LONLAT, None, "EPSG:4326"),  # assumed, with a warning
        (UTM33, UTM, None, "EPSG:32633"),  # declared
        (None, UTM, "EPSG:32633", "EPSG:32633"),  # given
        (None, UTM, "raster", "EPSG:32633"),  # the raster's
        (pyproj.CRS("EPSG:4326"), UTM, "epsg:32633", "EPSG:32633"),  # given beats declared
        (pyproj.CRS("EPSG:4326"), np.array([10.0, 40.0, 350.0, 50.0]), None, "EPSG:4326"),
        (None, np.full(4, np.nan), None, "EPSG:4326"),  # no geometry: nothing contradicts
    ],
)
def test_layer_crs_picks(
    declared: pyproj.CRS | None, bounds: np.ndarray, given: str | None, expected: str
) -> None:
    crs = layer_crs("f.geojson", declared, bounds, given, raster_crs="EPSG:32633")
    assert crs.equals(pyproj.CRS(expected))


@pytest.mark.parametrize(
    ("declared", "bounds", "given", "raster", "words"),
    [
        (
            None,
            UTM,
            None,
            "EPSG:32633",
            "declares no CRS and its coordinates (465181, 5079244.9, 466180.5, 5080254.6)",
        ),
        (pyproj.CRS("OGC:CRS84"), UTM, None, None, "are not degrees"),
        (None, UTM, "EPSG:4326", None, "are not degrees"),
        (None, np.array([-181.0, 0.0, 0.0, 1.0]), None, None, "declares no CRS"),
        (None, np.array([0.0, 0.0, 1.0, 90.5]), None, None, "declares no CRS"),
        (None, UTM, "raster", None, "the raster has no CRS"),
        (None, UTM, "EPSG:abc", None, "'EPSG:abc' is not a CRS"),
    ],
)
def test_layer_crs_refuses(
    declared: pyproj.CRS | None, bounds: np.ndarray, given: str | None, raster: str | None,
    words: str,
) -> None:  # fmt: skip
    with pytest.raises(InvalidVectorError) as err:
        layer_crs("f.geojson", declared, bounds, given, raster, option="--labels-crs")
    assert words in str(err.value)
    assert "--labels-crs" in str(err.value)


def test_assumed_and_overridden_crs_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        layer_crs("a.geojson", None, LONLAT)
        layer_crs("b.gpkg", pyproj.CRS("EPSG:4326"), LONLAT, "EPSG:4258")
        layer_crs("c.gpkg", UTM33, UTM, "raster", raster_crs=UTM33)  # same: no word
    assert "a.geojson: declares no CRS" in caplog.text and "EPSG:4326" in caplog.text
    assert "b.gpkg: declares WGS 84; reading it as ETRS89 (--aoi-crs)" in caplog.text
    assert "c.gpkg" not in caplog.text


def _feature_collection(path: Path, crs: str | None, padding: int = 0) -> Path:
    doc: dict[str, object] = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"note": "x" * padding},
        "geometry": shapely.geometry.mapping(shapely.box(*UTM)),
    }]}  # fmt: skip
    if crs is not None:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}  # after the features
    path.write_text(json.dumps(doc))
    return path


def test_declares_crs_finds_the_member_anywhere_in_the_file(tmp_path: Path) -> None:
    late = _feature_collection(tmp_path / "late.geojson", "EPSG:32633", padding=3 << 20)
    assert declares_crs(late, "GeoJSON")
    assert not declares_crs(_feature_collection(tmp_path / "no.geojson", None), "GeoJSON")
    assert not declares_crs(late, "GeoJSONSeq")
    assert declares_crs(late, "GPKG")


def test_read_input_layer_sets_the_crs(tmp_path: Path) -> None:
    path = _feature_collection(tmp_path / "f.geojson", None)
    with pytest.raises(InvalidVectorError, match=r"f\.geojson: declares no CRS"):
        read_input_layer(path)
    frame = read_input_layer(path, "EPSG:32633")
    assert frame.crs.equals(UTM33)
    np.testing.assert_allclose(frame.total_bounds, UTM)
    declared = _feature_collection(tmp_path / "d.geojson", "urn:ogc:def:crs:EPSG::32633")
    assert read_input_layer(declared).crs.equals(UTM33)


def test_geoparquet_without_crs_metadata_is_not_taken_as_declared(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "f.parquet"
    gpd.GeoDataFrame(geometry=[shapely.box(*UTM)], crs=32633).to_parquet(path)
    assert read_input_layer(path).crs.equals(UTM33)
    table = pq.read_table(path)
    geo = json.loads(table.schema.metadata[b"geo"])
    del geo["columns"]["geometry"]["crs"]  # GeoParquet: a missing crs means OGC:CRS84
    pq.write_table(table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}), path)
    with pytest.raises(InvalidVectorError, match="declares no CRS"):
        read_input_layer(path)


def test_features_outside() -> None:
    geoms = np.array([shapely.box(0, 0, 1, 1), shapely.box(5, 5, 6, 6), None], dtype=object)
    assert features_outside(geoms, (0.5, 0.5, 2.0, 2.0)).tolist() == [False, True, True]


def _boxes(n: int) -> gpd.GeoDataFrame:
    geoms = [shapely.box(465200 + 10 * i, 5079300, 465205 + 10 * i, 5079305) for i in range(n)]
    return gpd.GeoDataFrame({"k": list(range(n))}, geometry=geoms, crs="EPSG:32633")


def test_several_layers_refused_by_name(tmp_path: Path) -> None:
    """A GeoPackage of two geometry layers was read as its first, the other ignored."""
    path = tmp_path / "multi.gpkg"
    _boxes(3).to_file(path, layer="aaa_three")
    _boxes(40).to_file(path, layer="buildings40")
    with pytest.raises(InvalidVectorError) as err:
        read_input_layer(path)
    assert str(err.value) == (
        f"{path}: holds 2 layers with geometries (aaa_three (3 features), buildings40 (40 "
        "features)); geoseg reads one layer per file: extract the one you mean, e.g. "
        "`ogr2ogr buildings40.gpkg multi.gpkg buildings40`, and give that file"
    )


def test_the_one_geometry_layer_beside_tables_is_read(tmp_path: Path) -> None:
    """A GeoPackage holding one geometry layer and an attribute table (listed first by
    GDAL here) reads the geometry layer, with no pyogrio warning about the other."""
    import warnings

    import pandas as pd
    import pyogrio

    path = tmp_path / "one.gpkg"
    pyogrio.write_dataframe(pd.DataFrame({"x": [1]}), path, layer="aaa_table")
    _boxes(5).to_file(path, layer="buildings")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = read_input_layer(path)
    assert frame["k"].tolist() == [0, 1, 2, 3, 4]
    assert frame.crs.equals(UTM33)
