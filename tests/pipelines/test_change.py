from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

import geoseg.pipelines.change_codes as change_codes_module
from geoseg.cli import cli
from geoseg.errors import GeosegError, OutputExistsError
from geoseg.pipelines.change import OUTPUT_FILES, ChangeOptions, change_report, change_schema
from geoseg.types import ClassInfo, ClassSchema
from tests.change.helpers import SCHEMA, random_labels, write_labels
from tests.conftest import write_raster


@pytest.fixture
def two_dates(tmp_path: Path) -> list[Path]:
    return [
        write_labels(tmp_path / "2019.tif", random_labels((70, 50), 0), date="2019-06-01"),
        write_labels(tmp_path / "2023.tif", random_labels((70, 50), 1), date="2023-06-01"),
    ]


def test_report_writes_every_output(two_dates: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = change_report(two_dates, out, ChangeOptions(chunk=32))
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    m = result.matrix
    rows = list(csv.DictReader((out / "transitions.csv").open()))
    assert len(rows) == 9 + 1 and rows[-1]["from"] == "nodata"
    assert int(rows[-1]["pixels"]) == m.nodata_pixels
    assert sum(int(r["pixels"]) for r in rows) == 70 * 50
    doc = json.loads((out / "transitions.json").read_text())
    assert doc["dates"] == ["2019-06-01", "2023-06-01"]
    total = sum(r["area_m2"] for r in doc["transitions"]) + doc["nodata"]["area_m2"]
    assert total == pytest.approx(doc["total_area_m2"], rel=1e-12)
    with rasterio.open(out / "change.tif") as src:
        codes = src.read(1)
        assert src.colormap(1)[0][:3] == (170, 170, 170)  # forest -> forest: unchanged grey
        assert src.colormap(1)[1][:3] == SCHEMA.classes[1].colour  # forest -> water
    with rasterio.open(two_dates[0]) as a, rasterio.open(two_dates[1]) as b:
        before, after = a.read(1), b.read(1)
    index = {c: i for i, c in enumerate(SCHEMA.ids)}
    r, c = 3, 4
    if before[r, c] != 255 and after[r, c] != 255:
        assert codes[r, c] == index[before[r, c]] * 3 + index[after[r, c]]
    np.testing.assert_array_equal(codes == 255, (before == 255) | (after == 255))
    page = (out / "index.html").read_text()
    assert "EPSG:32633" in page and "2023-06-01" in page and "ellipsoidal" in page


def test_transitions_csv_is_the_same_for_any_chunk_size(
    two_dates: list[Path], tmp_path: Path
) -> None:
    texts, codes, blocks = [], [], []
    # 7 and 32 px: GDAL's COG driver writes change.tif; 160 and 1024: the chunk tasks
    # compress its tiles (160 and 512 px)
    for chunk in (7, 32, 160, 1024):
        out = tmp_path / f"r{chunk}"
        change_report(two_dates, out, ChangeOptions(chunk=chunk))
        texts.append(((out / "transitions.csv").read_text(),
                      (out / "class_change.csv").read_text()))  # fmt: skip
        with rasterio.open(out / "change.tif") as src:
            codes.append(src.read())
            blocks.append(src.block_shapes[0])
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)  # no parts left
    assert texts[0] == texts[1] == texts[2] == texts[3]
    for got in codes[1:]:
        np.testing.assert_array_equal(got, codes[0])
    assert blocks == [(512, 512), (512, 512), (160, 160), (512, 512)]


def test_existing_outputs_are_refused_before_writing(two_dates: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "index.html").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"index\.html"):
        change_report(two_dates, out)
    assert [p.name for p in out.iterdir()] == ["index.html"]
    change_report(two_dates, out, ChangeOptions(overwrite=True))
    assert "Land-cover change report" in (out / "index.html").read_text()


def test_consistency_needs_enough_dates(two_dates: list[Path], tmp_path: Path) -> None:
    with pytest.raises(GeosegError, match="at least 3 maps"):
        change_report(two_dates, tmp_path / "r", ChangeOptions(consistency=2))


def test_three_dates_with_consistency(tmp_path: Path) -> None:
    a = np.ones((4, 4), np.uint8)
    b = a.copy()
    b[0, :] = 9  # persistent change to urban
    c = b.copy()
    c[1, :] = 9  # appears on the last date only: ignored with consistency 2
    maps = [write_labels(tmp_path / f"{i}.tif", x) for i, x in enumerate((a, b, c))]
    m = change_report(maps, tmp_path / "r", ChangeOptions(consistency=2)).matrix
    assert m.pixels[0, 2] == 4 and m.pixels[0, 0] == 12


def test_change_schema_limit() -> None:
    assert len(change_schema(SCHEMA)) == 9
    many = ClassSchema(tuple(ClassInfo(i, f"c{i}", (i, i, i)) for i in range(16)))
    with pytest.raises(GeosegError, match="at most 15"):
        change_schema(many)


def _disjoint(tmp_path: Path) -> list[Path]:
    return [write_labels(tmp_path / "b.tif", random_labels((10, 10), 1),
                         transform=Affine(10, 0, 700_000, 0, -10, 5_100_000))]  # fmt: skip


def _other_schema(tmp_path: Path) -> list[Path]:
    other = ClassSchema((ClassInfo(1, "tree", (0, 1, 0)),))
    return [write_labels(tmp_path / "b.tif", random_labels((10, 10), 1), schema=other)]


def _float(tmp_path: Path) -> list[Path]:
    return [write_raster(tmp_path / "b.tif", np.zeros((1, 10, 10), np.float32))]


@pytest.mark.parametrize("make", [_disjoint, _other_schema, _float])
def test_cli_exit_code_2_and_no_output(tmp_path: Path, make: Callable[[Path], list[Path]]) -> None:
    first = write_labels(tmp_path / "a.tif", random_labels((10, 10), 0))
    maps = [str(first), *map(str, make(tmp_path))]
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["change", *maps, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "b.tif" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_writes_report(two_dates: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["change", *map(str, two_dates), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "changed area" in result.output and (out / "change.tif").exists()


def test_mmu_drops_small_change_patches(tmp_path: Path) -> None:
    a = np.ones((10, 10), np.uint8)
    b = a.copy()
    b[0, 0] = 9  # 1 px = 0.01 ha: dropped
    b[5:8, 5:8] = 4  # 9 px = 0.09 ha: kept
    maps = [write_labels(tmp_path / "a.tif", a), write_labels(tmp_path / "b.tif", b)]
    for chunk in (10, 3):  # with 3 px chunks the kept patch spans four chunks
        out = tmp_path / f"r{chunk}"
        m = change_report(maps, out, ChangeOptions(mmu_ha=0.07, chunk=chunk)).matrix
        assert m.pixels[0, 2] == 0 and m.pixels[0, 1] == 9 and m.pixels[0, 0] == 91
        with rasterio.open(out / "change.tif") as src:
            assert src.read(1)[0, 0] == 0


def test_transitions_per_aoi_feature(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import geopandas as gpd
    from shapely import Polygon, box

    a = np.ones((10, 10), np.uint8)
    b = a.copy()
    b[:, 5:] = 9
    maps = [write_labels(tmp_path / "a.tif", a), write_labels(tmp_path / "b.tif", b)]
    # map grid: x 500000-500100, y 5099900-5100000 (EPSG:32633), 10 m pixels
    west = box(500_000, 5_099_900, 500_050, 5_100_000)  # columns 0-4: no change
    bowtie = Polygon(
        [(500_050, 5_099_900), (500_100, 5_100_000), (500_100, 5_099_900), (500_050, 5_100_000)]
    )  # fmt: skip  (invalid: self-intersecting)
    whole = box(500_000, 5_099_900, 500_100, 5_100_000)
    geoms = [west, bowtie, whole]
    aoi = gpd.GeoDataFrame({"name": ["west", "bowtie", "whole"]}, geometry=geoms, crs=32633)
    aoi = aoi.to_crs(4326)
    aoi.to_file(tmp_path / "aoi.gpkg")
    opts = ChangeOptions(aoi=str(tmp_path / "aoi.gpkg"), aoi_field="name", chunk=4)
    change_report(maps, tmp_path / "r", opts)
    assert "made valid" in caplog.text
    rows = list(csv.DictReader((tmp_path / "r" / "transitions_by_aoi.csv").open()))
    px = {(r["aoi"], r["from"], r["to"]): int(r["pixels"]) for r in rows}
    assert px[("west", "forest", "forest")] == 50 and px[("west", "forest", "urban")] == 0
    assert px[("whole", "forest", "urban")] == 50 and px[("whole", "forest", "forest")] == 50
    assert 0 < px[("bowtie", "forest", "urban")] < 50  # two triangles of the east half
    assert px[("bowtie", "forest", "forest")] == 0


def test_samples_then_reference_gives_error_adjusted_areas(
    two_dates: list[Path], tmp_path: Path
) -> None:
    from geoseg.io.vectors import read_vectors, write_vectors

    out = tmp_path / "r"
    m = change_report(two_dates, out, ChangeOptions(samples_se=0.05)).matrix
    samples = read_vectors(out / "samples.gpkg")
    assert (samples.groupby("stratum").size() >= 50).all() and samples["stratum"].nunique() == 9
    with rasterio.open(out / "change.tif") as src:
        codes = src.read(1)
    np.testing.assert_array_equal(codes[samples["row"], samples["col"]], samples["stratum"])
    samples["reference"] = samples["stratum_name"]  # a perfect map
    write_vectors(samples, tmp_path / "labelled.gpkg")
    opts = ChangeOptions(reference=str(tmp_path / "labelled.gpkg"))
    change_report(two_dates, tmp_path / "r2", opts)
    rows = list(csv.DictReader((tmp_path / "r2" / "accuracy.csv").open()))
    adjusted = np.array([float(r["adjusted_area_ha"]) for r in rows])
    np.testing.assert_allclose(adjusted, m.area("ha").ravel(), rtol=1e-6)
    assert json.loads((tmp_path / "r2" / "accuracy.json").read_text())["overall_accuracy"] == 1.0


def test_reference_missing_strata_is_refused(two_dates: list[Path], tmp_path: Path) -> None:
    import geopandas as gpd

    pts = gpd.GeoDataFrame({"stratum": [0, 0], "reference": ["forest -> forest", "0"]},
                           geometry=gpd.points_from_xy([500_005] * 2, [5_099_995] * 2),
                           crs=32633)  # fmt: skip
    pts.to_file(tmp_path / "ref.gpkg")
    opts = ChangeOptions(reference=str(tmp_path / "ref.gpkg"))
    with pytest.raises(GeosegError, match=r"ref\.gpkg: strata .*water -> forest"):
        change_report(two_dates, tmp_path / "r", opts)
    pts["reference"] = ["forest -> nowhere", "0"]
    pts.to_file(tmp_path / "bad.gpkg")
    with pytest.raises(GeosegError, match="not a change code"):
        change_report(
            two_dates, tmp_path / "r2", ChangeOptions(reference=str(tmp_path / "bad.gpkg"))
        )
    assert not (tmp_path / "r2").exists()


def test_identical_maps_report_no_change(tmp_path: Path) -> None:
    a = random_labels((20, 20), 0)
    maps = [write_labels(tmp_path / "a.tif", a), write_labels(tmp_path / "b.tif", a)]
    m = change_report(maps, tmp_path / "r").matrix
    assert (m.gross_gain_m2() == 0).all() and (m.net_change_m2() == 0).all()
    assert (m.pixels == np.diag(np.diag(m.pixels))).all()
    assert "metre" in (tmp_path / "r" / "index.html").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [16, 128])  # change.tif by GDAL / by the chunk tasks
def test_local_cluster_gives_the_same_tables(tmp_path: Path, chunk: int) -> None:
    maps = [
        write_labels(tmp_path / "2019.tif", random_labels((300, 270), 0), date="2019-06-01"),
        write_labels(tmp_path / "2023.tif", random_labels((300, 270), 1), date="2023-06-01"),
    ]
    change_report(maps, tmp_path / "t", ChangeOptions(chunk=chunk))
    opts = ChangeOptions(chunk=chunk, scheduler="local", workers=2)
    change_report(maps, tmp_path / "l", opts)
    for name in ("transitions.csv", "class_change.csv", "change.tif"):
        assert (tmp_path / "t" / name).read_bytes() == (tmp_path / "l" / name).read_bytes()


def test_change_polygons_carry_from_to_names_and_the_changed_area(
    two_dates: list[Path], tmp_path: Path
) -> None:
    import pyogrio

    result = change_report(two_dates, tmp_path / "rep")
    frame = pyogrio.read_dataframe(tmp_path / "rep" / "change.gpkg")
    m = result.matrix
    assert (frame["from_class"] != frame["to_class"]).all()
    assert set(frame["from_class"]) <= set(m.names) and set(frame["to_class"]) <= set(m.names)
    changed_m2 = float(m.area_m2.sum() - np.trace(m.area_m2))
    assert float(frame["area_m2"].sum()) == pytest.approx(changed_m2, rel=1e-6)
    forest = m.names.index(frame["from_class"].iloc[0])
    to = m.names.index(frame["to_class"].iloc[0])
    pair = frame[(frame["from_class"] == m.names[forest]) & (frame["to_class"] == m.names[to])]
    assert float(pair["area_m2"].sum()) == pytest.approx(float(m.area_m2[forest, to]), rel=1e-6)


def test_a_failure_mid_run_leaves_no_chunk_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    maps = [
        write_labels(tmp_path / "2019.tif", random_labels((640, 640), 0), date="2019-06-01"),
        write_labels(tmp_path / "2023.tif", random_labels((640, 640), 1), date="2023-06-01"),
    ]
    real, calls, lock = change_codes_module.persistent_after, [0], threading.Lock()

    def failing(*args: object, **kw: object) -> object:
        with lock:
            calls[0] += 1
            if calls[0] == 12:  # 25 chunks of 128 px; others are in flight on 4 threads
                raise RuntimeError("disk on fire")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(change_codes_module, "persistent_after", failing)
    out = tmp_path / "report"
    with pytest.raises(RuntimeError, match="disk on fire"):
        change_report(maps, out, ChangeOptions(chunk=128, workers=4))
    time.sleep(0.5)  # tasks handed out before the failure finish meanwhile
    assert not out.exists()  # the run made the folder: it is removed again
