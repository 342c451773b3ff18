"""vectorize_labels end to end: attributes, invariance, options, errors, real data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine

from geoseg.areas import ACRE_M2, pixel_area_m2, polygon_area_m2
from geoseg.errors import GeosegError, InputNotFoundError, InvalidRasterError, OutputExistsError
from geoseg.io.labels import CLASSES_TAG
from geoseg.io.vectors import FORMATS, read_vectors, write_vectors
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.pipelines.vectorize import VectorizeOptions, label_polygons, vectorize_labels
from tests.conftest import TINY_SCHEMA, write_raster
from tests.vector.synthetic import blob_labels, components

UTM = Affine(10.0, 0, 500_000.0, 0, -10.0, 5_100_000.0)


def _label_raster(
    path: Path, labels: np.ndarray, crs: str | None = "EPSG:32633", transform: Affine = UTM,
    conf: np.ndarray | None = None,
) -> Path:  # fmt: skip
    """A label raster as predict writes it: uint8, 255 nodata, class names in a tag."""
    ids = {0: 1, 1: 4, 2: 9, 3: 3, 255: 255}  # blob classes -> TINY_SCHEMA ids (3 has no name)
    data = np.vectorize(ids.get)(labels).astype(np.uint8)[None]
    names = ["class"]
    if conf is not None:
        data = np.concatenate([data, conf[None]])
        names.append("confidence")
    write_raster(path, data, crs=crs, transform=transform, nodata=255, descriptions=names)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: json.dumps(TINY_SCHEMA.to_json())})
    return path


@pytest.fixture
def labels() -> np.ndarray:
    return blob_labels(150, 170, seed=11)


def _rasterize(frame: gpd.GeoDataFrame, shape: tuple[int, int], transform: Affine) -> np.ndarray:
    pairs = zip(frame.geometry, frame["class_id"].tolist(), strict=True)
    return rasterio.features.rasterize(
        pairs, out_shape=shape, transform=transform, fill=255, dtype="uint8"
    )


def test_polygons_attributes_and_exact_round_trip(tmp_path: Path, labels: np.ndarray) -> None:
    src = _label_raster(tmp_path / "landcover.tif", labels)
    result = vectorize_labels(src, tmp_path / "lc.gpkg", VectorizeOptions(chunk=64))
    frame = pyogrio.read_dataframe(tmp_path / "lc.gpkg")
    assert pyogrio.list_layers(tmp_path / "lc.gpkg")[0][0] == "landcover"
    assert frame.crs.to_epsg() == 32633
    assert result.polygons == len(frame) == components(labels, 4)
    assert list(frame.columns) == [
        "class_id", "class_name", "area_m2", "area_ha", "area_ac", "perim_m", "geometry"
    ]  # fmt: skip
    names = dict(zip(frame["class_id"], frame["class_name"], strict=True))
    assert names == {1: "forest", 4: "water", 9: "urban", 3: "3"}
    with rasterio.open(src) as ds:
        raster = ds.read(1)
    np.testing.assert_array_equal(_rasterize(frame, raster.shape, UTM), raster)
    per_pixel = pixel_area_m2("EPSG:32633", UTM, np.arange(150), np.arange(170))
    for k in (1, 4, 9, 3):
        rows = frame["class_id"] == k
        planar = frame.geometry[rows].area.sum()
        assert planar == pytest.approx(100.0 * np.count_nonzero(raster == k), rel=1e-9)
        expected = per_pixel[raster == k].sum()
        assert frame["area_m2"][rows].sum() == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(frame["area_ha"], frame["area_m2"] / 1e4, rtol=1e-12)
    np.testing.assert_allclose(frame["area_ac"], frame["area_m2"] / ACRE_M2, rtol=1e-12)
    # UTM 33N at 500 km E: scale 0.9996, so ground lengths are 1/0.9996 of planar ones.
    ratio = frame["perim_m"] / frame.geometry.length
    np.testing.assert_allclose(ratio, 1 / 0.9996, rtol=2e-4)
    assert result.area_ha == pytest.approx(frame["area_ha"].sum())


def test_same_result_for_any_chunk_size_and_scheduler(tmp_path: Path, labels: np.ndarray) -> None:
    src = _label_raster(tmp_path / "lc.tif", labels)
    frames = [
        label_polygons(src, VectorizeOptions(chunk=chunk, scheduler=scheduler))
        for chunk, scheduler in ((48, "threads"), (64, "local"), (4096, "sync"))
    ]
    for other in frames[1:]:
        assert list(shapely.to_wkb(other.geometry.values)) == list(
            shapely.to_wkb(frames[0].geometry.values)
        )
        np.testing.assert_array_equal(other["class_id"], frames[0]["class_id"])
        for col in ("area_m2", "perim_m"):
            np.testing.assert_allclose(other[col], frames[0][col], rtol=1e-9)


def test_geographic_raster_true_areas(tmp_path: Path, labels: np.ndarray) -> None:
    t = Affine(0.0001, 0, -0.78, 0, -0.0001, 38.13)  # ~9 x 11 m pixels near Murcia
    src = _label_raster(tmp_path / "lonlat.tif", labels, crs="EPSG:4326", transform=t)
    frame = label_polygons(src, VectorizeOptions(chunk=64))
    with rasterio.open(src) as ds:
        raster = ds.read(1)
    per_pixel = pixel_area_m2("EPSG:4326", t, np.arange(150), np.arange(170))
    assert frame["area_m2"].sum() == pytest.approx(per_pixel[raster != 255].sum(), rel=1e-9)
    assert 90 < per_pixel.mean() < 100


def test_confidence_band_from_predict(tmp_path: Path) -> None:
    from tests.conftest import TINY_BANDS, textured_scene

    scene = write_raster(tmp_path / "scene.tif", textured_scene(90, 100), descriptions=TINY_BANDS)
    out = tmp_path / "lc.tif"
    predict_scene(scene, "spectral", out, PredictOptions(confidence=True, sensor="rgbnir"))
    frame = label_polygons(out, VectorizeOptions(chunk=32))
    assert "conf_mean" in frame.columns
    assert ((frame["conf_mean"] >= 0) & (frame["conf_mean"] <= 1)).all()
    with rasterio.open(out) as ds:
        labels, conf = ds.read(1), ds.read(2)
    whole = frame.geometry.area.sum() / 100.0
    mean = np.average(frame["conf_mean"], weights=frame.geometry.area / 100.0)
    assert whole == np.count_nonzero(labels != 255)
    assert mean == pytest.approx(conf[labels != 255].mean() / 254, rel=1e-9)


def test_mmu_simplify_classes_connectivity(tmp_path: Path, labels: np.ndarray) -> None:
    src = _label_raster(tmp_path / "lc.tif", labels)
    plain = label_polygons(src, VectorizeOptions(chunk=64))
    mmu = label_polygons(src, VectorizeOptions(chunk=64, min_area_ha=0.5))
    # Merged polygons are measured anew (edges densified differently): equal to 1e-7.
    assert mmu["area_m2"].sum() == pytest.approx(plain["area_m2"].sum(), rel=1e-7)
    assert len(mmu) < len(plain) / 2
    small = mmu[mmu["area_ha"] < 0.5]
    touching = mmu.sindex.query(small.geometry, predicate="intersects")
    shared = [
        mmu.geometry.iloc[j].boundary.intersection(small.geometry.iloc[i].boundary).length
        for i, j in zip(*touching, strict=True)
        if mmu.index[j] != small.index[i]
    ]
    assert all(length == 0 for length in shared)
    simple = label_polygons(src, VectorizeOptions(chunk=64, simplify_m=15, min_area_ha=0.5))
    assert shapely.coverage_is_valid(simple.geometry.values)
    assert simple.geometry.apply(shapely.get_num_coordinates).sum() < 0.7 * (
        mmu.geometry.apply(shapely.get_num_coordinates).sum()
    )
    assert simple["area_m2"].sum() == pytest.approx(mmu["area_m2"].sum(), rel=2e-2)
    water = label_polygons(src, VectorizeOptions(classes=["Water", "9"]))
    assert set(water["class_name"]) == {"water", "urban"}
    assert len(water) == (plain["class_id"].isin([4, 9])).sum()
    filtered_mmu = label_polygons(src, VectorizeOptions(classes=["water"], min_area_ha=0.5))
    assert filtered_mmu.geometry.equals(mmu[mmu["class_id"] == 4].geometry.reset_index(drop=True))
    eight = label_polygons(src, VectorizeOptions(chunk=64, connectivity=8))
    assert len(eight) == components(labels, 8) < len(plain)


def test_errors_name_the_file_and_write_nothing(tmp_path: Path, labels: np.ndarray) -> None:
    src = _label_raster(tmp_path / "lc.tif", labels)
    floats = write_raster(tmp_path / "prob.tif", np.random.default_rng(0).random((1, 20, 20)))
    nocrs = _label_raster(tmp_path / "nocrs.tif", labels, crs=None)
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 20, 20), np.uint8))
    empty = _label_raster(tmp_path / "empty.tif", np.full((20, 20), 255, np.uint8))
    cases = [
        (floats, "out.gpkg", {}, InvalidRasterError, r"prob\.tif: not a label raster.*predict"),
        (nocrs, "out.gpkg", {}, InvalidRasterError, r"nocrs\.tif: the raster has no CRS"),
        (tmp_path / "nope.tif", "out.gpkg", {}, InputNotFoundError, r"nope\.tif: no such file"),
        (src, "out.kml", {}, GeosegError, r"out\.kml: unknown vector format"),
        (src, "out.gpkg", {"format": "dxf"}, GeosegError, "unknown vector format 'dxf'"),
        (rgb, "out.gpkg", {}, InvalidRasterError, r"rgb\.tif: not a label raster \(3 bands"),
        (src, "out.gpkg", {"classes": ["lava"]}, GeosegError, "no class 'lava'.*forest, water"),
        (empty, "out.gpkg", {}, InvalidRasterError, r"empty\.tif: no labelled pixel"),
        (src, "lc.tif", {}, GeosegError, "unknown vector format"),
    ]
    before = {p.name for p in tmp_path.iterdir()}
    for path, out, opts, error, message in cases:
        with pytest.raises(error, match=message):
            vectorize_labels(path, tmp_path / out, VectorizeOptions(**opts))
    assert {p.name for p in tmp_path.iterdir()} == before
    with pytest.raises(GeosegError, match="connectivity must be 4 or 8"):
        VectorizeOptions(connectivity=6)


def test_overwrite_and_shapefile_sidecars(tmp_path: Path, labels: np.ndarray) -> None:
    src = _label_raster(tmp_path / "lc.tif", labels)
    out = tmp_path / "lc.shp"
    vectorize_labels(src, out)
    with pytest.raises(OutputExistsError):
        vectorize_labels(src, out)
    out.unlink()  # sidecars left alone still block a new Shapefile
    with pytest.raises(OutputExistsError, match=r"lc\.shx: exists"):
        vectorize_labels(src, out)
    result = vectorize_labels(src, out, VectorizeOptions(overwrite=True, classes=["forest"]))
    assert len(read_vectors(out)) == result.polygons
    assert set(read_vectors(out)["class_name"]) == {"forest"}


def test_slovenia_polygons_raster_round_trip(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "eolearn_slovenia_lulc"
    reference = pyogrio.read_dataframe(folder / "LULC.gpkg", layer="LULC")
    assert len(reference) == 88
    with rasterio.open(folder / "geotiff" / "lulc.tif") as src:
        mask, transform, crs = src.read(1), src.transform, src.crs
    expected = rasterio.transform.from_bounds(
        465181.0522318204, 5079244.8912012065, 466180.53145382757, 5080254.63349641, 100, 101
    )
    assert transform.almost_equals(expected) and crs.to_epsg() == 32633
    pairs = zip(reference.geometry, reference["LULC_ID"].tolist(), strict=True)
    burnt = rasterio.features.rasterize(pairs, out_shape=mask.shape, transform=transform, fill=0)
    np.testing.assert_array_equal(burnt, mask)
    out = tmp_path / "lulc.gpkg"
    vectorize_labels(folder / "geotiff" / "lulc.tif", out, VectorizeOptions(chunk=32))
    ours = pyogrio.read_dataframe(out)
    pairs = zip(ours.geometry, ours["class_id"].tolist(), strict=True)
    again = rasterio.features.rasterize(pairs, out_shape=mask.shape, transform=transform, fill=0)
    np.testing.assert_array_equal(again, mask)  # class 0 is the raster's nodata
    pixel = pixel_area_m2(crs, transform, [50], [50])[0, 0]
    box = shapely.box(*rasterio.transform.array_bounds(101, 100, transform))
    clipped = reference.geometry.intersection(box)
    reference["area_m2"] = polygon_area_m2(clipped.values, crs)
    for k in sorted(set(ours["class_id"])):
        ref = reference[(reference["LULC_ID"] == k) & (reference["area_m2"] > 0)]
        gap = abs(ours.loc[ours["class_id"] == k, "area_m2"].sum() - ref["area_m2"].sum())
        assert gap < len(ref) * pixel, f"class {k}: {gap / pixel:.1f} px for {len(ref)} polygons"


def test_landsat_prediction_in_every_format(shared_data: Path, tmp_path: Path) -> None:
    scene = shared_data / "landsat7_rgb_byte" / "RGB.byte.tif"
    labels = tmp_path / "landsat.tif"
    predict_scene(scene, "spectral", labels, PredictOptions(chunk=256))
    full = vectorize_labels(labels, tmp_path / "full.gpkg", VectorizeOptions(chunk=256))
    with rasterio.open(labels) as src:
        raster, transform = src.read(1), src.transform
    back = read_vectors(tmp_path / "full.gpkg")
    assert len(back) == full.polygons > 1000
    assert back.geometry.area.sum() == pytest.approx(
        np.count_nonzero(raster != 255) * abs(transform.a * transform.e), rel=1e-9
    )
    frame = label_polygons(labels, VectorizeOptions(chunk=256, min_area_ha=200))
    assert 10 < len(frame) < full.polygons / 10
    assert frame["area_ha"].sum() == pytest.approx(full.area_ha, rel=1e-9)
    for fmt, (ext, _) in sorted(FORMATS.items()):
        if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
            continue  # GeoParquet needs pyarrow (write_vectors says so)
        out = write_vectors(frame, tmp_path / f"landsat{ext}")
        back = read_vectors(out)
        assert len(back) == len(frame), fmt
        assert back.crs.to_epsg() == (4326 if fmt == "geojson" else 32618), fmt
        assert back["area_ha"].sum() == pytest.approx(frame["area_ha"].sum(), rel=1e-9), fmt


def _cli(*args: object) -> tuple[int, str]:
    from click.testing import CliRunner

    from geoseg.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_cli_vectorize_and_errors(tmp_path: Path, labels: np.ndarray) -> None:
    src = _label_raster(tmp_path / "lc.tif", labels)
    options = ("--min-area-ha", "0.5", "--simplify", "5", "--classes", "forest,water")
    code, out = _cli("vectorize", src, "-o", tmp_path / "lc.shp", *options, "--connectivity", "8")
    assert code == 0, out
    assert out.startswith(f"wrote {tmp_path / 'lc.shp'} (")
    frame = read_vectors(tmp_path / "lc.shp")
    assert set(frame["class_name"]) == {"forest", "water"}
    assert 0 < len(frame) < components(labels, 8)
    floats = write_raster(tmp_path / "prob.tif", np.ones((1, 8, 8), np.float32))
    for args, words in [
        ((floats, "-o", tmp_path / "p.gpkg"), "prob.tif: not a label raster"),
        ((src, "-o", tmp_path / "lc.shp"), "exists; pass --overwrite"),
        ((src, "-o", tmp_path / "lc.dxf"), "unknown vector format '.dxf'"),
        ((src, "-o", tmp_path / "x.gpkg", "--format", "kml"), "unknown vector format 'kml'"),
        ((tmp_path / "none.tif", "-o", tmp_path / "x.gpkg"), "none.tif: no such file"),
    ]:
        code, out = _cli("vectorize", *args)
        assert code == 2 and out.startswith("geoseg: error:") and words in out, out
        assert out.count("\n") == 1
    assert not (tmp_path / "p.gpkg").exists() and not (tmp_path / "x.gpkg").exists()


def test_cli_predict_with_vector(tmp_path: Path) -> None:
    from tests.conftest import TINY_BANDS, textured_scene

    scene = write_raster(tmp_path / "scene.tif", textured_scene(60, 70), descriptions=TINY_BANDS)
    args = ("predict", scene, "-m", "spectral", "--sensor", "rgbnir")
    code, out = _cli(*args, "-o", tmp_path / "lc.tif", "--vector", tmp_path / "lc.gpkg")
    assert code == 0, out
    assert "wrote" in out and "polygons" in out
    assert pyogrio.list_layers(tmp_path / "lc.gpkg")[0][0] == "lc"
    code, out = _cli(*args, "-o", tmp_path / "again.tif", "--vector", tmp_path / "lc.gpkg")
    assert code == 2 and "lc.gpkg: exists" in out
    assert not (tmp_path / "again.tif").exists(), "the vector output is checked before predicting"
    code, out = _cli(*args, "-o", tmp_path / "lc.tif", "--vector", tmp_path / "lc.gpkg",
                     "--overwrite")  # fmt: skip
    assert code == 0, out


def test_streamed_layer_is_the_same_for_any_scheduler_and_merge_batch(
    tmp_path: Path, labels: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks finish in any order; the file lists them in chunk order, then the seam unions."""
    from geoseg.vector import seams

    src = _label_raster(tmp_path / "lc.tif", labels)
    whole = label_polygons(src, VectorizeOptions(chunk=4096, scheduler="sync"))
    layers = []
    for n, (scheduler, per_batch) in enumerate((("sync", 4096), ("threads", 3), ("local", 1))):
        monkeypatch.setattr(seams, "_PARTS_PER_BATCH", per_batch)
        out = tmp_path / f"lc{n}.gpkg"
        opts = VectorizeOptions(chunk=40, scheduler=scheduler, workers=2)
        result = vectorize_labels(src, out, opts)
        layers.append(pyogrio.read_dataframe(out))
        assert result.polygons == len(whole) == len(layers[-1])
    for other in layers[1:]:
        assert list(shapely.to_wkb(other.geometry.values)) == list(
            shapely.to_wkb(layers[0].geometry.values)
        )
        np.testing.assert_array_equal(other["area_m2"], layers[0]["area_m2"])
    # The same rows as the in-memory (sorted, whole-raster) result, in another order.
    got = {bytes(w) for w in shapely.to_wkb(shapely.normalize(layers[0].geometry.values))}
    assert got == {bytes(w) for w in shapely.to_wkb(shapely.normalize(whole.geometry.values))}
    assert layers[0]["area_m2"].sum() == pytest.approx(whole["area_m2"].sum(), rel=1e-12)


@pytest.mark.parametrize(
    "options",
    [{}, {"simplify_m": 25.0}, {"min_area_ha": 0.5}, {"simplify_m": 25.0, "min_area_ha": 0.5}],
    ids=["plain", "simplify", "mmu", "simplify-mmu"],
)
def test_every_path_writes_rings_by_the_right_hand_rule(
    tmp_path: Path, labels: np.ndarray, options: dict[str, float]
) -> None:
    """Exteriors counter-clockwise, holes clockwise, whatever the options (a simplified
    coverage came out with 125 of 303 exteriors one way and the rest the other, an MMU
    one with every exterior the other way from the plain layer); so a signed geodesic
    area is the polygon's area."""
    from pyproj import Geod

    t = Affine(0.0001, 0, -0.78, 0, -0.0001, 38.13)  # ~9 x 11 m pixels near Murcia
    src = _label_raster(tmp_path / "lonlat.tif", labels, crs="EPSG:4326", transform=t)
    vectorize_labels(src, tmp_path / "lc.gpkg", VectorizeOptions(chunk=64, **options))
    frame = pyogrio.read_dataframe(tmp_path / "lc.gpkg")
    parts = shapely.get_parts(frame.geometry.values)
    assert shapely.is_ccw(shapely.get_exterior_ring(parts)).all()
    holes = [ring for p in parts for ring in p.interiors]
    assert len(holes) > 10 and not shapely.is_ccw(holes).any()
    # Geod's edges are geodesics, a pixel's are parallels: densified, they agree to 1e-7.
    # A simplified diagonal edge is straight in (lon, authalic y) for geoseg, in lon/lat
    # once densified here: those curves differ by up to 2e-6 of the area.
    geod = Geod(ellps="WGS84")
    dense = shapely.segmentize(frame.geometry.values, 1e-5)
    signed = np.array([geod.geometry_area_perimeter(g)[0] for g in dense])
    assert (signed > 0).all()
    rtol = 5e-6 if "simplify_m" in options else 1e-6
    np.testing.assert_allclose(signed, frame["area_m2"], rtol=rtol)


@pytest.mark.parametrize(("simplify_m", "min_area_ha"), [(40.0, 1.0), (60.0, 2.0)])
def test_simplify_with_min_area_is_a_clean_coverage(
    tmp_path: Path, simplify_m: float, min_area_ha: float
) -> None:
    """Merged on the pixel grid, then simplified: no overlaps, no gaps, areas = geometry
    areas, and no polygon with a neighbour under the minimum (merging already simplified
    polygons rounded their vertices to pixel corners, off their neighbours' edges)."""
    labels = blob_labels(120, 140, seed=7, speckle=0.01, nodata=0.0)
    src = _label_raster(tmp_path / "lc.tif", labels)
    opts = VectorizeOptions(chunk=64, simplify_m=simplify_m, min_area_ha=min_area_ha)
    frame = label_polygons(src, opts)
    geoms = frame.geometry.values
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pair = left < right
    overlap = shapely.area(shapely.intersection(geoms[left[pair]], geoms[right[pair]]))
    assert pair.sum() > 10 and overlap.max() < 1e-6
    # No gaps: the union is the raster's footprint, simplified at its outer edge only.
    union = shapely.union_all(geoms)
    assert shapely.get_num_interior_rings(union) == 0 and shapely.get_num_geometries(union) == 1
    assert union.area == pytest.approx(shapely.area(geoms).sum(), rel=1e-12)
    assert union.area == pytest.approx(labels.size * 100.0, rel=1e-3)
    np.testing.assert_allclose(frame["area_m2"], polygon_area_m2(geoms, "EPSG:32633"), rtol=1e-12)
    assert frame["area_ha"].min() >= min_area_ha
