"""Tests for geoseg.synthetic: the deterministic demo/test scene pair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from numpy.typing import NDArray
from rasterio.transform import Affine

from geoseg.errors import GeosegError, OutputExistsError
from geoseg.io.vectors import read_vectors
from geoseg.synthetic import (
    SENTINEL2_BANDS,
    TRUTH_SCHEMA,
    ScenePair,
    aoi_zones,
    generate_scene_pair,
    main,
    write_sample_data,
)
from geoseg.types import ClassSchema

ID = {name: cid for cid, name in zip(TRUTH_SCHEMA.ids, TRUTH_SCHEMA.names, strict=True)}
BAND = {name: i for i, name in enumerate(SENTINEL2_BANDS)}


@pytest.fixture(scope="module")
def scene() -> ScenePair:
    return generate_scene_pair(seed=0)


def _index(dn: NDArray[np.uint16], a: str, b: str) -> NDArray[np.float64]:
    """Normalised difference (a - b) / (a + b) of two bands, per pixel."""
    x, y = dn[BAND[a]].astype(float), dn[BAND[b]].astype(float)
    return (x - y) / np.maximum(x + y, 1)


def test_schema_and_bands() -> None:
    names = ("water", "forest", "cropland", "grassland", "built-up", "bare", "cloud")
    assert TRUTH_SCHEMA.names == names
    assert TRUTH_SCHEMA.ids == tuple(range(7))
    assert TRUTH_SCHEMA.classes[ID["water"]].colour == (31, 120, 180)
    assert TRUTH_SCHEMA.classes[ID["cloud"]].colour == (240, 240, 240)
    assert SENTINEL2_BANDS == ("B02", "B03", "B04", "B08", "B11", "B12")


def test_same_seed_same_arrays_other_seed_differs() -> None:
    a, b, c = (generate_scene_pair(128, 160, seed) for seed in (3, 3, 4))
    for name in ("before", "after", "labels_before", "labels_after"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))


def test_shapes_dtypes_georeference(scene: ScenePair) -> None:
    assert scene.before.shape == scene.after.shape == (6, 768, 1024)
    assert scene.labels_before.shape == scene.labels_after.shape == (768, 1024)
    assert scene.before.dtype == scene.after.dtype == np.uint16
    assert scene.labels_before.dtype == scene.labels_after.dtype == np.uint8
    assert scene.crs == "EPSG:32633"
    assert scene.transform == Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_100_000.0)
    assert not scene.before.flags.writeable


def test_nodata_is_consistent_and_a_corner_collar(scene: ScenePair) -> None:
    for dn, labels in ((scene.before, scene.labels_before), (scene.after, scene.labels_after)):
        all_zero = (dn == 0).all(axis=0)
        np.testing.assert_array_equal(all_zero, labels == 255)
        assert ((dn == 0).any(axis=0) == all_zero).all()  # no partly-empty pixels
        assert 0.03 < all_zero.mean() < 0.2
        assert all_zero[0, -1] and not all_zero[-1, 0] and not all_zero[0, 0]
    # The second swath edge sits a few pixels west: strictly more nodata.
    assert (scene.labels_after == 255).sum() > (scene.labels_before == 255).sum()


def test_all_classes_before_and_little_cloud_after(scene: ScenePair) -> None:
    present = set(np.unique(scene.labels_before).tolist())
    assert present == {*TRUTH_SCHEMA.ids, 255}
    valid_before = scene.labels_before != 255
    cloud_before = (scene.labels_before[valid_before] == ID["cloud"]).mean()
    valid_after = scene.labels_after != 255
    cloud_after = (scene.labels_after[valid_after] == ID["cloud"]).mean()
    assert 0.04 < cloud_before < 0.15
    assert cloud_after < 0.02


def _both_clear(scene: ScenePair) -> NDArray[np.bool_]:
    before, after = scene.labels_before, scene.labels_after
    return (before != 255) & (before != ID["cloud"]) & (after != 255) & (after != ID["cloud"])


def test_deforestation_between_dates(scene: ScenePair) -> None:
    before, after = scene.labels_before, scene.labels_after
    cleared = _both_clear(scene) & (before == ID["forest"])
    cleared &= np.isin(after, (ID["bare"], ID["grassland"]))
    assert cleared.sum() > 1000  # > 10 ha
    assert (cleared & (after == ID["bare"])).any() and (cleared & (after == ID["grassland"])).any()
    assert not (_both_clear(scene) & (before != ID["forest"]) & (after == ID["forest"])).any()
    # The clear-cut shows in the spectrum: NDVI drops.
    drop = _index(scene.before, "B08", "B04") - _index(scene.after, "B08", "B04")
    assert drop[cleared].mean() > 0.3


def test_flooding_between_dates(scene: ScenePair) -> None:
    before, after = scene.labels_before, scene.labels_after
    flooded = _both_clear(scene) & (before != ID["water"]) & (after == ID["water"])
    assert flooded.sum() > 1000
    assert set(np.unique(before[flooded]).tolist()) <= {ID["cropland"], ID["grassland"], ID["bare"]}
    assert not (_both_clear(scene) & (before == ID["water"]) & (after != ID["water"])).any()
    assert _index(scene.after, "B08", "B04")[flooded].mean() < 0


@pytest.mark.parametrize("date", ["before", "after"])
def test_class_spectra_are_plausible(scene: ScenePair, date: str) -> None:
    dn, labels = getattr(scene, date), getattr(scene, f"labels_{date}")
    ndvi, ndbi = _index(dn, "B08", "B04"), _index(dn, "B11", "B08")

    def mean(index: NDArray[np.float64], name: str) -> float:
        return float(index[labels == ID[name]].mean())

    assert mean(ndvi, "forest") > 0.5
    assert mean(ndvi, "water") < 0
    assert mean(ndbi, "built-up") > 0
    assert mean(ndvi, "forest") > mean(ndvi, "grassland") > mean(ndvi, "bare")
    assert mean(ndvi, "cropland") > mean(ndvi, "built-up")
    blue = dn[BAND["B02"]] / 10_000
    assert float(blue[labels == ID["cloud"]].mean()) > 0.3
    assert float(blue[labels == ID["water"]].mean()) < 0.1
    # reflectance x 10000: nothing outside 0-1
    assert int(dn.max()) <= 10_000


def test_illumination_differs_slightly_on_unchanged_land(scene: ScenePair) -> None:
    same = _both_clear(scene) & (scene.labels_before == scene.labels_after)
    same &= scene.labels_before == ID["forest"]
    ratio = scene.after[BAND["B08"]][same].mean() / scene.before[BAND["B08"]][same].mean()
    assert ratio != 1.0
    assert 0.85 < ratio < 1.15


def test_rejects_tiny_scene() -> None:
    with pytest.raises(GeosegError, match="at least 64"):
        generate_scene_pair(32, 100)


def test_write_and_read_back(tmp_path: Path) -> None:
    paths = write_sample_data(tmp_path / "out", height=256, width=320, seed=1)
    assert set(paths) == {"before", "after", "truth_before", "truth_after", "aoi"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["scene_before.tif", "scene_after.tif", "truth_before.tif", "truth_after.tif",
         "districts.gpkg"]
    )  # fmt: skip
    districts = read_vectors(paths["aoi"])
    assert districts.crs.to_epsg() == 32633
    assert districts["name"].tolist() == ["west bank", "east bank", "uplands"]
    expected = generate_scene_pair(256, 320, seed=1)
    for key, date in (("before", "2024-07-15"), ("after", "2025-07-20")):
        with rasterio.open(paths[key]) as src:
            assert (src.count, src.dtypes[0], src.nodata) == (6, "uint16", 0)
            assert src.crs.to_epsg() == 32633
            assert src.transform == expected.transform
            assert src.descriptions == SENTINEL2_BANDS
            assert src.block_shapes[0] == (256, 256)
            assert src.compression.name == "deflate"
            assert src.tags()["DATE"] == date
            assert src.tags()["SENSOR"] == "synthetic Sentinel-2-like"
            np.testing.assert_array_equal(src.read(), getattr(expected, key))
        with rasterio.open(paths[f"truth_{key}"]) as src:
            assert (src.count, src.dtypes[0], src.nodata) == (1, "uint8", 255)
            assert src.descriptions == ("class",)
            assert src.colormap(1)[ID["forest"]] == (27, 120, 55, 255)
            assert src.colormap(1)[255] == (0, 0, 0, 0)
            schema = ClassSchema.from_json(json.loads(src.tags()["GEOSEG_CLASSES"]))
            assert schema == TRUTH_SCHEMA
            np.testing.assert_array_equal(src.read(1), getattr(expected, f"labels_{key}"))


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    paths = write_sample_data(tmp_path, height=64, width=64, seed=0)
    with pytest.raises(OutputExistsError, match=r"scene_before\.tif.*overwrite"):
        write_sample_data(tmp_path, height=64, width=80, seed=0)
    with rasterio.open(paths["before"]) as src:
        assert src.width == 64  # untouched
    write_sample_data(tmp_path, height=64, width=80, seed=0, overwrite=True)
    with rasterio.open(paths["truth_after"]) as src:
        assert src.width == 80
    assert len(list(tmp_path.iterdir())) == 5  # no temporary files left behind


def test_main_writes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--size", "64x96", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "truth_after.tif") in out
    with rasterio.open(tmp_path / "scene_after.tif") as src:
        assert (src.height, src.width) == (64, 96)
    assert main([str(tmp_path), "--size", "64x96"]) == 2
    assert "overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--size", "big"])


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geoseg.synthetic import files as synthetic

    real = synthetic._write_outputs

    def write_then_fail(tmp: dict[str, Path], scene: ScenePair) -> None:
        real(tmp, scene)
        raise OSError("disk full")

    monkeypatch.setattr(synthetic, "_write_outputs", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_sample_data(tmp_path, height=64, width=64)
    assert list(tmp_path.iterdir()) == []


def test_districts_tile_most_of_the_scene_on_pixel_edges() -> None:
    scene = generate_scene_pair(256, 320, seed=1)
    frame = aoi_zones(256, 320, scene.transform, scene.crs)
    assert frame["name"].tolist() == ["west bank", "east bank", "uplands"]
    assert frame.crs.to_epsg() == 32633
    # Hand-computed in 10 m pixels: west bank columns 0-63 (0.2 * 320), east bank 64-159,
    # uplands 160-319 in rows 0-127, then a slanted edge down to (240, 192): 160 * 128 +
    # 64 rows tapering from 160 to 80 px.
    px = (frame.area / 100).round(6).tolist()
    assert px == [64 * 256, 96 * 256, 160 * 128 + 120 * 64]
    assert frame.union_all().area == pytest.approx(sum(px) * 100)  # no overlap
    x0, y0 = scene.transform.c, scene.transform.f
    assert tuple(frame.total_bounds) == (x0, y0 - 2560, x0 + 3200, y0)
    # Every vertex is a pixel corner
    for geom in frame.geometry:
        for x, y in geom.exterior.coords:
            col, row = ~scene.transform @ (x, y)
            assert col == round(col) and row == round(row)
