"""Hostile and odd vector inputs: a clear error (exit 2) or a correct result, never 0 ha in silence.

Vector layers are read by ``change --aoi``, ``train``/``evaluate --labels`` (polygons)
and ``info``. A layer whose CRS is missing must not be read as lon/lat when its
coordinates are metres; ``info`` must describe vector files and refuse anything
else in one line.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pyproj
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.io.labels import CLASSES_TAG
from geoseg.types import ClassInfo, ClassSchema
from tests.change.helpers import write_labels
from tests.conftest import write_raster

#: The label maps' grid: 10 x 10 px of 10 m, EPSG:32633, x 500000-500100, y 5099900-5100000.
WEST = (500_000.0, 5_099_900.0, 500_050.0, 5_100_000.0)
CRS84 = "urn:ogc:def:crs:OGC:1.3:CRS84"
THINGS = ClassSchema(
    (ClassInfo(0, "ground", (90, 90, 90)), ClassInfo(1, "building", (200, 0, 0), is_thing=True))
)


def _geojson(path: Path, boxes: dict[str, tuple[float, ...]], crs: str | None = None) -> Path:
    """A FeatureCollection of boxes named by ``name``, with a ``crs`` member only if given."""
    doc: dict[str, object] = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": name},
         "geometry": shapely.geometry.mapping(shapely.box(*b))}
        for name, b in boxes.items()
    ]}  # fmt: skip
    if crs is not None:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


def _lonlat(bounds: tuple[float, ...]) -> tuple[float, ...]:
    """``bounds`` (EPSG:32633) as a lon/lat box that contains them."""
    box = gpd.GeoSeries([shapely.box(*bounds)], crs=32633).to_crs(4326)
    return tuple(box.total_bounds)


@pytest.fixture
def maps(tmp_path: Path) -> list[Path]:
    """Forest everywhere, then urban in the east half (columns 5-9)."""
    a = np.ones((10, 10), np.uint8)
    b = a.copy()
    b[:, 5:] = 9
    return [write_labels(tmp_path / "a.tif", a), write_labels(tmp_path / "b.tif", b)]


def _run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def _aoi_rows(report: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    rows = csv.DictReader((report / "transitions_by_aoi.csv").open())
    return {(r["aoi"], r["from"], r["to"]): r for r in rows}


# --- change --aoi: refused with a message that names the file, its bounds and the option ---


def _utm_no_crs(tmp: Path) -> tuple[Path, list[str]]:
    return _geojson(tmp / "fields.geojson", {"west": WEST}), []


def _declared_lonlat_in_metres(tmp: Path) -> tuple[Path, list[str]]:
    return _geojson(tmp / "fields.geojson", {"west": WEST}, CRS84), []


def _not_a_crs(tmp: Path) -> tuple[Path, list[str]]:
    return _geojson(tmp / "fields.geojson", {"west": WEST}), ["--aoi-crs", "EPSG:abc"]


def _given_lonlat_for_metres(tmp: Path) -> tuple[Path, list[str]]:
    return _geojson(tmp / "fields.geojson", {"west": WEST}), ["--aoi-crs", "EPSG:4326"]


def _shapefile_without_prj(tmp: Path) -> tuple[Path, list[str]]:
    path = tmp / "fields.shp"
    frame = gpd.GeoDataFrame({"name": ["west"]}, geometry=[shapely.box(*WEST)])
    with pytest.warns(UserWarning, match="crs"):
        frame.to_file(path)
    return path, []


def _text_file(tmp: Path) -> tuple[Path, list[str]]:
    path = tmp / "fields.geojson"
    path.write_text("these are my fields")
    return path, []


AOI_ERRORS: dict[str, tuple[Callable[[Path], tuple[Path, list[str]]], list[str]]] = {
    "GeoJSON without crs, UTM metres": (
        _utm_no_crs,
        ["declares no CRS", "(500000, 5099900, 500050, 5100000)", "--aoi-crs EPSG:XXXX", "raster"],
    ),
    "GeoJSON declaring CRS84, metres": (_declared_lonlat_in_metres, ["not degrees", "--aoi-crs"]),
    "--aoi-crs EPSG:4326 for metres": (_given_lonlat_for_metres, ["not degrees", "--aoi-crs"]),
    "--aoi-crs not a CRS": (_not_a_crs, ["--aoi-crs 'EPSG:abc' is not a CRS"]),
    "Shapefile without .prj, metres": (_shapefile_without_prj, ["declares no CRS", "--aoi-crs"]),
    "text named .geojson": (_text_file, ["not a vector layer"]),
}


@pytest.mark.parametrize("case", sorted(AOI_ERRORS))
def test_change_refuses_an_aoi_it_cannot_place(tmp_path: Path, maps: list[Path], case: str) -> None:
    make, words = AOI_ERRORS[case]
    aoi, extra = make(tmp_path)
    before = set(os.listdir(tmp_path))
    code, out = _run(
        "change", *maps, "-o", tmp_path / "r", "--aoi", aoi, "--aoi-field", "name", *extra
    )
    assert code == 2, out
    assert out.startswith("geoseg: error: ") and out.count("\n") == 1, out
    assert all(w in out for w in words), out
    assert case.startswith("--aoi-crs not") or aoi.name in out
    assert set(os.listdir(tmp_path)) == before  # no report folder left behind


# --- change --aoi: the right areas once the CRS is known ---


def _geodesic_area_m2(bounds: tuple[float, ...]) -> float:
    """Ellipsoidal area of a UTM 33N box, its edges densified to 1 m (pyproj, not geoseg)."""
    ring = shapely.segmentize(shapely.box(*bounds), 1.0)
    lonlat = gpd.GeoSeries([ring], crs=32633).to_crs(4326).iloc[0]
    area, _ = pyproj.Geod(ellps="WGS84").geometry_area_perimeter(lonlat)
    return abs(area)


@pytest.mark.parametrize("crs", ["EPSG:32633", "raster"])
def test_aoi_crs_gives_the_area_pyproj_computes(tmp_path: Path, maps: list[Path], crs: str) -> None:
    aoi = _geojson(tmp_path / "fields.geojson", {"west": WEST})
    code, out = _run(
        "change", *maps, "-o", tmp_path / "r", "--aoi", aoi, "--aoi-field", "name", "--aoi-crs", crs
    )
    assert code == 0, out
    rows = _aoi_rows(tmp_path / "r")
    west = rows[("west", "forest", "forest")]
    assert int(west["pixels"]) == 50
    assert float(west["area_ha"]) == pytest.approx(_geodesic_area_m2(WEST) / 1e4, rel=1e-6)
    assert float(west["area_ha"]) > 0.49  # 50 px of 10 m x 10 m, a little more on the ellipsoid
    assert int(rows[("west", "forest", "urban")]["pixels"]) == 0


def test_lonlat_aoi_without_crs_is_read_as_4326_with_a_warning(
    tmp_path: Path, maps: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    whole = _lonlat((500_000.0, 5_099_900.0, 500_100.0, 5_100_000.0))
    aoi = _geojson(tmp_path / "fields.geojson", {"whole": whole})
    with caplog.at_level(logging.WARNING):
        code, out = _run("change", *maps, "-o", tmp_path / "r", "--aoi", aoi, "--aoi-field", "name")
    assert code == 0, out
    assert "fields.geojson: declares no CRS" in caplog.text and "EPSG:4326" in caplog.text
    rows = _aoi_rows(tmp_path / "r")
    assert int(rows[("whole", "forest", "urban")]["pixels"]) == 50
    assert int(rows[("whole", "forest", "forest")]["pixels"]) == 50


@pytest.mark.parametrize("declared", [True, False])
def test_aoi_features_that_miss_the_maps_are_named(
    tmp_path: Path, maps: list[Path], caplog: pytest.LogCaptureFixture, declared: bool
) -> None:
    far = (600_000.0, 5_000_000.0, 600_100.0, 5_000_100.0)
    if declared:
        aoi = _geojson(tmp_path / "f.geojson", {"west": WEST, "far": far}, "EPSG:32633")
        extra: list[str] = []
    else:
        aoi = _geojson(tmp_path / "f.geojson", {"west": WEST, "far": far})
        extra = ["--aoi-crs", "raster"]
    with caplog.at_level(logging.WARNING):
        code, out = _run(
            "change", *maps, "-o", tmp_path / "r", "--aoi", aoi, "--aoi-field", "name", *extra
        )
    assert code == 0, out
    assert "1 of 2 AOI features overlap no valid pixel" in caplog.text
    assert "0 ha: far;" in caplog.text and "west" not in caplog.text.split("0 ha:")[1]
    assert int(_aoi_rows(tmp_path / "r")[("west", "forest", "forest")]["pixels"]) == 50


def test_aoi_over_nodata_only_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = np.ones((10, 10), np.uint8)
    a[:, :5] = 255  # the west half has no data on the first date
    maps = [write_labels(tmp_path / "a.tif", a), write_labels(tmp_path / "b.tif", a)]
    aoi = _geojson(tmp_path / "f.geojson", {"west": WEST}, "EPSG:32633")
    with caplog.at_level(logging.WARNING):
        code, out = _run("change", *maps, "-o", tmp_path / "r", "--aoi", aoi, "--aoi-field", "name")
    assert code == 0, out
    assert "1 of 1 AOI features overlap no valid pixel" in caplog.text and "west" in caplog.text


# --- evaluate / train: polygon labels follow the same rule (--labels-crs) ---


@pytest.fixture
def prediction(tmp_path: Path) -> Path:
    """An instance COG on the maps' grid: one building in rows 0-4, columns 0-4."""
    ids = np.zeros((10, 10), np.uint32)
    ids[:5, :5] = 1
    classes = np.where(ids > 0, 1, 255).astype(np.uint32)
    path = write_raster(tmp_path / "pred.tif", np.stack([classes, ids]),
                        descriptions=("class", "instance"))  # fmt: skip
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: json.dumps(THINGS.to_json())})
    return path


BUILDING = (500_000.0, 5_099_950.0, 500_050.0, 5_100_000.0)  # rows 0-4, columns 0-4


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        ([], 2, ["ref.geojson: declares no CRS", "--labels-crs EPSG:XXXX"]),
        (["--labels-crs", "EPSG:32633"], 0, ["PQ 1.0000"]),
        (["--labels-crs", "raster"], 0, ["PQ 1.0000"]),
    ],
)
def test_evaluate_polygon_reference_crs(
    tmp_path: Path, prediction: Path, extra: list[str], code: int, words: list[str]
) -> None:
    ref = _geojson(tmp_path / "ref.geojson", {"b1": BUILDING})
    args = ["evaluate", "--prediction", prediction, "--labels", ref, "-o", tmp_path / "ev",
            "--task", "instance", *extra]  # fmt: skip
    got, out = _run(*args)
    assert got == code, out
    assert all(w in out for w in words), out


def test_evaluate_labels_crs_with_a_raster_reference_is_refused(
    tmp_path: Path, prediction: Path
) -> None:
    args = ["evaluate", "--prediction", prediction, "--labels", prediction, "-o",
            tmp_path / "ev", "--task", "instance", "--labels-crs", "EPSG:32633"]  # fmt: skip
    code, out = _run(*args)
    assert code == 2 and "--labels-crs apply to a polygon reference" in out, out


def test_train_refuses_polygon_labels_in_metres_without_crs(tmp_path: Path) -> None:
    image = write_raster(tmp_path / "img.tif", np.full((1, 10, 10), 300, np.uint16))
    labels = _geojson(tmp_path / "labels.geojson", {"b1": BUILDING})
    classes = tmp_path / "classes.yaml"
    classes.write_text(json.dumps(THINGS.to_json()))
    code, out = _run("train", "--task", "instance", "--image", image, "--labels", labels,
                     "--classes", classes, "-o", tmp_path / "m.safetensors", "--epochs", "1",
                     "--steps-per-epoch", "1", "--batch-size", "1", "--window", "32",
                     "--margin", "0", "--device", "cpu")  # fmt: skip
    assert code == 2, out
    assert "labels.geojson: declares no CRS" in out and "--labels-crs" in out
    assert not (tmp_path / "m.safetensors").exists()


def test_train_labels_crs_is_refused_for_raster_labels(tmp_path: Path) -> None:
    image = write_raster(tmp_path / "img.tif", np.full((1, 10, 10), 300, np.uint16))
    classes = tmp_path / "classes.yaml"
    classes.write_text(json.dumps(THINGS.to_json()))
    code, out = _run("train", "--image", image, "--labels", image, "--classes", classes,
                     "-o", tmp_path / "m.safetensors", "--labels-crs", "EPSG:32633")  # fmt: skip
    assert code == 2 and "--labels-crs applies to polygon labels" in out, out


# --- info: vector files described, anything else one line ---


def _gpkg(tmp: Path) -> Path:
    path = tmp / "two.gpkg"
    gpd.GeoDataFrame(
        {"name": ["a", "b"], "n": [1, 2]}, geometry=[shapely.box(*WEST), shapely.box(*BUILDING)],
        crs=32633,
    ).to_file(path, layer="fields")  # fmt: skip
    gpd.GeoDataFrame({"v": [1.5]}, geometry=[shapely.Point(14.5, 45.9)], crs=4326).to_file(
        path, layer="wells", mode="a"
    )
    return path


def test_info_describes_every_layer_as_pyogrio_reads_it(tmp_path: Path) -> None:
    path = _gpkg(tmp_path)
    code, out = _run("info", path)
    assert code == 0, out
    assert "2 layer(s)" in out
    for name, _ in pyogrio.list_layers(path):
        info = pyogrio.read_info(path, layer=name, force_total_bounds=True)
        crs = pyproj.CRS(info["crs"])
        fields = ", ".join(
            f"{f} ({d})" for f, d in zip(info["fields"], info["dtypes"], strict=True)
        )
        bounds = ", ".join(f"{v:.10g}" for v in info["total_bounds"])
        assert (
            f"  layer {name}: {info['geometry_type']}, {info['features']} feature(s)\n"
            f"    crs: EPSG:{crs.to_epsg()} ({crs.name})\n"
            f"    bounds: {bounds}\n"
            f"    fields: {fields}\n"
        ) in out, out
    assert "WGS 84 / UTM zone 33N" in out and "500000, 5099900, 500050, 5100000" in out


def test_info_says_a_geojson_declares_no_crs(tmp_path: Path) -> None:
    code, out = _run("info", _geojson(tmp_path / "f.geojson", {"west": WEST}))
    assert code == 0 and "crs: none declared" in out and "1 feature(s)" in out, out


def test_info_describes_geoparquet(tmp_path: Path) -> None:
    from geoseg.io.vectors import write_vectors

    frame = gpd.GeoDataFrame({"name": ["a"]}, geometry=[shapely.box(*WEST)], crs=32633)
    path = write_vectors(frame, tmp_path / "f.parquet")
    code, out = _run("info", path)
    assert code == 0, out
    import pyarrow.parquet as pq

    kind = pq.read_schema(path).field("name").type
    assert "Polygon, 1 feature(s)" in out and "EPSG:32633" in out and f"name ({kind})" in out
    assert "500000, 5099900, 500050, 5100000" in out


def _text(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("not a map\n")
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.tif"
    path.write_bytes(b"")
    return path


def _junk(tmp: Path) -> Path:
    path = tmp / "junk.gpkg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    return path


def _json_not_geojson(tmp: Path) -> Path:
    path = tmp / "config.json"
    path.write_text(json.dumps({"a": [1, 2, 3]}))
    return path


INFO_ERRORS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "text": (_text, "neither a raster, a vector layer nor a geoseg checkpoint"),
    "empty": (_empty, "the file is empty (0 bytes)"),
    "binary junk named .gpkg": (_junk, "neither a raster, a vector layer nor a geoseg checkpoint"),
    "JSON that is no GeoJSON": (_json_not_geojson, "neither a raster"),
}


@pytest.mark.parametrize("case", sorted(INFO_ERRORS))
def test_info_refuses_other_files_in_one_line(tmp_path: Path, case: str) -> None:
    make, words = INFO_ERRORS[case]
    path = make(tmp_path)
    code, out = _run("info", path)
    assert code == 2, out
    assert out.startswith("geoseg: error: ") and out.count("\n") == 1, out
    assert words in out and path.name in out


@pytest.mark.usefixtures("maps")  # a.tif, b.tif
def test_workflow_takes_aoi_crs_beside_aoi(tmp_path: Path) -> None:
    from geoseg.errors import GeosegError
    from geoseg.pipelines.workflow import load_workflow

    _geojson(tmp_path / "zones.geojson", {"west": WEST})
    head = "scenes: [a.tif, b.tif]\nmodel: spectral\noutput: out\n"
    wf = tmp_path / "wf.yaml"
    wf.write_text(head + "aoi: zones.geojson\naoi_crs: EPSG:32633\n")
    assert load_workflow(wf, tmp_path).aoi_crs == "EPSG:32633"
    wf.write_text(head + "aoi_crs: EPSG:32633\n")
    with pytest.raises(GeosegError, match="aoi_crs is given without aoi"):
        load_workflow(wf, tmp_path)
    wf.write_text(head + "aoi: zones.geojson\nchange: {aoi_crs: EPSG:32633}\n")
    with pytest.raises(GeosegError, match=r"change.*unknown key 'aoi_crs'"):
        load_workflow(wf, tmp_path)
