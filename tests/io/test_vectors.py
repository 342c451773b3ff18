"""Vector writers: every format round-trips; atomic writes; refusals; Shapefile details."""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyogrio
import pytest
import shapely

from geoseg.errors import GeosegError, OutputExistsError
from geoseg.io import vectors
from geoseg.io.vectors import (
    FORMATS,
    SHAPEFILE_FIELDS,
    check_vector_output,
    read_vectors,
    vector_format,
    write_vectors,
)


@pytest.fixture
def frame() -> gpd.GeoDataFrame:
    """Three polygons in UTM 33N (one with a hole), geoseg's columns, a non-ASCII name."""
    x0, y0 = 500_000.0, 5_100_000.0
    ring = shapely.Polygon(
        [(x0, y0), (x0 + 30, y0), (x0 + 30, y0 + 30), (x0, y0 + 30)],
        [[(x0 + 10, y0 + 10), (x0 + 20, y0 + 10), (x0 + 20, y0 + 20), (x0 + 10, y0 + 20)]],
    )
    geoms = [
        ring,
        shapely.box(x0 + 10, y0 + 10, x0 + 20, y0 + 20),
        shapely.box(x0 + 30, y0, x0 + 40, y0 + 30),
    ]
    return gpd.GeoDataFrame(
        {
            "class_id": np.array([1, 4, 9], np.int32),
            "class_name": ["forêt", "water", "urban"],
            "instance_id": np.array([0, 0, 12], np.int64),
            "area_m2": [800.123456789, 100.0, 300.5],
            "area_ha": [0.0800123456789, 0.01, 0.03005],
            "area_ac": [0.197716, 0.0247105, 0.0742551],
            "perim_m": [160.0, 40.0, 80.0],
            "conf_mean": [0.5, 0.25, np.nan],
        },
        geometry=geoms,
        crs="EPSG:32633",
    )


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_round_trips(
    tmp_path: Path, frame: gpd.GeoDataFrame, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    monkeypatch.setattr(vectors, "_BATCH", 2)  # GeoPackage and Shapefile append in batches
    out = tmp_path / f"landcover{FORMATS[fmt][0]}"
    write_vectors(frame, out)
    got = gpd.read_parquet(out) if fmt == "parquet" else pyogrio.read_dataframe(out)
    if fmt == "shp":
        got = got.rename(columns={v: k for k, v in SHAPEFILE_FIELDS.items()})
    expected = frame.to_crs(4326) if fmt == "geojson" else frame
    assert got.crs == expected.crs
    got = got.sort_values("class_id", ignore_index=True)  # FlatGeobuf orders by its index
    assert list(got.columns) == list(frame.columns)
    for col in ("class_id", "instance_id"):
        np.testing.assert_array_equal(got[col].to_numpy(), frame[col].to_numpy())
    assert got["class_name"].tolist() == frame["class_name"].tolist()
    for col in ("area_m2", "area_ha", "area_ac", "perim_m", "conf_mean"):
        np.testing.assert_allclose(got[col].to_numpy(float), frame[col].to_numpy(float), rtol=1e-12)
    tolerance = 1e-6 if fmt == "geojson" else 0.0  # RFC 7946: 7 decimals of a degree
    a, b = shapely.normalize(got.geometry.values), shapely.normalize(expected.geometry.values)
    assert shapely.equals_exact(a, b, tolerance).all()
    assert read_vectors(out).shape == frame.shape


def test_layer_name_geojson_and_parquet_details(tmp_path: Path, frame: gpd.GeoDataFrame) -> None:
    write_vectors(frame, tmp_path / "a.gpkg", layer="lc_2024")
    assert pyogrio.list_layers(tmp_path / "a.gpkg")[0][0] == "lc_2024"
    write_vectors(frame, tmp_path / "b.fgb")
    assert pyogrio.list_layers(tmp_path / "b.fgb")[0][0] == "b"
    write_vectors(frame, tmp_path / "c.geojson")
    text = (tmp_path / "c.geojson").read_text()
    assert '"crs"' not in text  # RFC 7946: WGS84 lon/lat, no crs member
    assert "15.0" in text and "500000" not in text
    pq = pytest.importorskip("pyarrow.parquet")
    write_vectors(frame, tmp_path / "d.parquet")
    schema = pq.read_schema(tmp_path / "d.parquet")
    assert "bbox" in schema.names
    assert b'"covering"' in schema.metadata[b"geo"]


def test_shapefile_sidecars_and_field_names(tmp_path: Path, frame: gpd.GeoDataFrame) -> None:
    write_vectors(frame, tmp_path / "lc.shp")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["lc.cpg", "lc.dbf", "lc.prj", "lc.shp", "lc.shx"]
    assert (tmp_path / "lc.cpg").read_text().strip() == "UTF-8"
    assert "UTM_Zone_33N" in (tmp_path / "lc.prj").read_text()
    fields = pyogrio.read_info(tmp_path / "lc.shp")["fields"].tolist()
    assert fields == [SHAPEFILE_FIELDS[c] for c in frame.columns if c != "geometry"]
    assert all(len(f) <= 10 for f in SHAPEFILE_FIELDS.values())


def test_shapefile_size_warning(
    tmp_path: Path, frame: gpd.GeoDataFrame, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setattr(vectors, "_SHAPEFILE_LIMIT", 100)
    with caplog.at_level(logging.WARNING, logger="geoseg.io.vectors"):
        write_vectors(frame, tmp_path / "big.shp")
    assert "2 GB" in caplog.text


def test_refuses_existing_outputs_and_sidecars(tmp_path: Path, frame: gpd.GeoDataFrame) -> None:
    out = tmp_path / "lc.gpkg"
    write_vectors(frame, out)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_vectors(frame, out)
    write_vectors(frame.iloc[:1], out, overwrite=True)
    assert len(pyogrio.read_dataframe(out)) == 1
    (tmp_path / "old.dbf").write_bytes(b"")  # a stray sidecar of an older Shapefile
    with pytest.raises(OutputExistsError, match=r"old\.dbf"):
        write_vectors(frame, tmp_path / "old.shp")
    (tmp_path / "old.qix").write_bytes(b"stale index")
    write_vectors(frame, tmp_path / "old.shp", overwrite=True)
    assert not (tmp_path / "old.qix").exists()
    assert len(pyogrio.read_dataframe(tmp_path / "old.shp")) == 3


@pytest.mark.parametrize("name", ["lc.gpkg", "lc.shp", "lc.geojson"])
def test_a_failed_write_leaves_nothing(
    tmp_path: Path, frame: gpd.GeoDataFrame, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    def boom(reader: pa.RecordBatchReader, path: object, **kwargs: object) -> None:
        reader.read_next_batch()
        Path(str(path)).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(vectors.pyogrio, "write_arrow", boom)
    monkeypatch.setattr(vectors, "_BATCH", 1)  # the failure comes while batches still flow
    with pytest.raises(GeosegError, match=rf"{name}: could not write the layer: disk full"):
        write_vectors(frame, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:.*extension:RuntimeWarning")
def test_formats_and_errors(tmp_path: Path, frame: gpd.GeoDataFrame) -> None:
    assert vector_format("a.GPKG") == "gpkg"
    assert vector_format("a.geoparquet") == "parquet"
    assert vector_format("a.json") == "geojson"
    assert vector_format("noext") == "gpkg"
    assert vector_format("a.xyz", "shp") == "shp"
    assert vector_format("a.xyz", ".fgb") == "fgb"
    with pytest.raises(GeosegError, match=r"unknown vector format '\.kml'.*or pass --format$"):
        vector_format("a.kml", format_option="--format")
    with pytest.raises(GeosegError, match=r"\.geojson\)$"):  # no option to offer
        vector_format("a.kml")
    with pytest.raises(GeosegError, match="unknown vector format 'dxf'"):
        vector_format("a.gpkg", "dxf")
    with pytest.raises(GeosegError, match="does not exist"):
        check_vector_output(tmp_path / "missing" / "a.gpkg")
    with pytest.raises(GeosegError, match="no CRS"):
        write_vectors(frame.set_crs(None, allow_override=True), tmp_path / "a.gpkg")
    write_vectors(frame, tmp_path / "named.bin", fmt="gpkg")
    assert pyogrio.read_info(tmp_path / "named.bin")["features"] == 3


@pytest.mark.parametrize("ext", ["gpkg", "shp", "geojson", "fgb", "parquet"])
def test_all_null_columns_are_written(tmp_path: Path, ext: str) -> None:
    """A field with no value at all (an empty Shapefile field read in, carried onto
    outputs) has Arrow's null type, which OGR could not write ("Type 'n' not
    supported"): it is written as a string field of nulls, beside the other fields."""
    geoms = [shapely.box(500000 + i, 5100000, 500001 + i, 5100001) for i in range(3)]
    frame = gpd.GeoDataFrame(
        {"empty": [None] * 3, "name": ["a", None, "c"], "n": [1, 2, 3]},
        geometry=geoms, crs="EPSG:32633",
    )  # fmt: skip
    out = write_vectors(frame, tmp_path / f"v.{ext}")
    back = gpd.read_parquet(out) if ext == "parquet" else gpd.read_file(out)
    back = back.sort_values("n")  # FlatGeobuf's spatial index reorders the features
    assert back["empty"].isna().all() and len(back) == 3
    assert back["name"].tolist()[::2] == ["a", "c"] and back["n"].tolist() == [1, 2, 3]


def test_batches_share_one_schema() -> None:
    """Types come from the whole frame: a column empty in the first batch only is a
    string column in every batch (a batch-by-batch guess gave null, then string)."""
    import pandas as pd

    from geoseg.io.vectors import frame_batches

    late = pd.Series([None, None, "x"], dtype=object)  # object: as read from OGR files
    frame = gpd.GeoDataFrame({"late": late}, geometry=[shapely.box(0, 0, 1, 1)] * 3)
    types = {str(b.schema.field("late").type) for b in frame_batches(frame, 2)}
    assert len(types) == 1 and "string" in types.pop()
