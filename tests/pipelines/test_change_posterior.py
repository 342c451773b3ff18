"""``change_report(rule="posterior")``: codes, uncertain area, chunk invariance, filters, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.areas import pixel_area_m2
from geoseg.change.posterior import posterior_codes
from geoseg.cli import cli
from geoseg.pipelines.change import ChangeOptions, change_report
from geoseg.pipelines.change_codes import file_codes
from tests.change.helpers import (
    SCHEMA,
    labels_of,
    random_probabilities,
    write_labels,
    write_probabilities,
)
from tests.conftest import write_raster

SHAPE = (70, 50)


def _dates(tmp: Path, n: int = 2, shape: tuple[int, int] = SHAPE) -> list[Path]:
    """``n`` label maps with probability files (tagged), 5 % nodata on each; the later
    dates are the first with part of its probabilities replaced (some real change)."""
    rng = np.random.default_rng(7)
    first = random_probabilities(shape, 0, sharpness=2.0)
    maps = []
    for i in range(n):
        probs = first.copy()
        if i:
            other = random_probabilities(shape, i, sharpness=2.0)
            swap = rng.random(shape) < 0.5
            probs[:, swap] = other[:, swap]
        nodata = rng.random(shape) < 0.05
        path = write_labels(tmp / f"lc{i}.tif", labels_of(probs, nodata), date=f"201{i}-06-01")
        write_probabilities(path, probs)
        maps.append(path)
    return maps


def _stored(path: Path) -> np.ndarray:
    with rasterio.open(path.with_name(path.stem + "_probs.tif")) as src:
        return np.asarray(src.read())


def test_change_tif_holds_the_rule_s_codes(tmp_path: Path) -> None:
    maps = _dates(tmp_path)
    out = tmp_path / "r"
    result = change_report(maps, out, ChangeOptions(rule="posterior", chunk=16))
    expected = file_codes(posterior_codes(_stored(maps[0]), _stored(maps[1]), 0.7), 3)
    with rasterio.open(out / "change.tif") as src:
        codes = src.read(1)
        assert src.colormap(1)[9][:3] == (255, 0, 255)  # K*K = uncertain: magenta
    with rasterio.open(maps[0]) as a, rasterio.open(maps[1]) as b:
        unmapped = (a.read(1) == 255) | (b.read(1) == 255)
    expected[unmapped] = 255
    np.testing.assert_array_equal(codes, expected)
    m = result.matrix
    assert m.uncertain_pixels == int((codes == 9).sum()) > 100
    assert m.nodata_pixels == int((codes == 255).sum())
    changed = (codes < 9) & (codes // 3 != codes % 3)
    assert int(m.pixels.sum() - np.trace(m.pixels)) == int(changed.sum()) > 100


def test_areas_add_up_to_the_map(tmp_path: Path) -> None:
    maps = _dates(tmp_path)
    out = tmp_path / "r"
    m = change_report(maps, out, ChangeOptions(rule="posterior", chunk=16)).matrix
    with rasterio.open(maps[0]) as src:
        grid = pixel_area_m2(src.crs, src.transform, np.arange(SHAPE[0]), np.arange(SHAPE[1]))
    change = m.changed_area_m2
    same = float(np.trace(m.area_m2))
    assert m.uncertain_area_m2 is not None and m.uncertain_area_m2 > 0 and change > 0
    total = change + same + m.uncertain_area_m2 + m.nodata_area_m2
    assert total == pytest.approx(float(grid.sum()), rel=1e-9)
    assert m.total_area_m2 == pytest.approx(float(grid.sum()), rel=1e-9)
    rows = list(csv.DictReader((out / "transitions.csv").open()))
    assert [r["from"] for r in rows[-2:]] == ["uncertain", "nodata"]
    assert sum(float(r["area_m2"]) for r in rows) == pytest.approx(float(grid.sum()), rel=1e-9)
    assert sum(int(r["pixels"]) for r in rows) == SHAPE[0] * SHAPE[1]
    doc = json.loads((out / "transitions.json").read_text())
    assert doc["rule"] == "posterior" and doc["min_change_prob"] == 0.7
    assert doc["uncertain"]["pixels"] == m.uncertain_pixels and len(doc["transitions"]) == 9
    assert doc["map_difference"]["changed_area_m2"] > change  # differencing counts more
    page = (out / "index.html").read_text()
    assert "uncertain (posterior rule)" in page and "by map differencing" in page


@pytest.mark.parametrize("consistency", [1, 2])
def test_same_result_for_any_chunk_size_and_scheduler(tmp_path: Path, consistency: int) -> None:
    maps = _dates(tmp_path, 3)
    tables, rasters = set(), []
    # 7 px: GDAL's COG driver writes change.tif; 160: the chunk tasks do
    for chunk, scheduler in ((7, "threads"), (32, "sync"), (160, "threads")):
        out = tmp_path / f"r{chunk}"
        opts = ChangeOptions(
            rule="posterior", chunk=chunk, scheduler=scheduler, consistency=consistency,
            mmu_ha=0.03,
        )  # fmt: skip
        change_report(maps, out, opts)
        tables.add((out / "transitions.csv").read_bytes())
        with rasterio.open(out / "change.tif") as src:
            rasters.append(src.read(1))
    assert len(tables) == 1
    for r in rasters[1:]:
        np.testing.assert_array_equal(r, rasters[0])


def test_mmu_aoi_and_samples_with_the_posterior_rule(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    maps = _dates(tmp_path)
    with rasterio.open(maps[0]) as src:
        left, bottom, right, top = src.bounds
    mid = (left + right) / 2
    gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[box(left, bottom, mid, top), box(mid, bottom, right, top)], crs="EPSG:32633",
    ).to_file(tmp_path / "aoi.gpkg")  # fmt: skip
    opts = ChangeOptions(
        rule="posterior", chunk=16, mmu_ha=0.02, aoi=str(tmp_path / "aoi.gpkg"),
        aoi_field="name", samples_se=0.05,
    )  # fmt: skip
    m = change_report(maps, tmp_path / "r", opts).matrix
    plain = change_report(maps, tmp_path / "p", ChangeOptions(rule="posterior", chunk=16)).matrix
    assert 0 < m.changed_area_m2 < plain.changed_area_m2  # the MMU dropped small patches
    assert m.uncertain_pixels == plain.uncertain_pixels  # and left uncertain pixels alone
    rows = list(csv.DictReader((tmp_path / "r" / "transitions_by_aoi.csv").open()))
    uncertain = [r for r in rows if r["from"] == "uncertain"]
    assert [r["aoi"] for r in uncertain] == ["west", "east"]
    assert sum(int(r["pixels"]) for r in uncertain) == m.uncertain_pixels
    samples = gpd.read_file(tmp_path / "r" / "samples.gpkg")
    uncertain_points = samples[samples["stratum"] == 9]  # the uncertain area is a stratum too
    assert len(uncertain_points) >= 50 and set(uncertain_points["stratum_name"]) == {"uncertain"}


def test_cli_posterior_with_given_files(tmp_path: Path) -> None:
    maps = _dates(tmp_path)
    probs = [str(p.with_name(p.stem + "_probs.tif")) for p in maps]
    out = tmp_path / "r"
    args = ["change", *map(str, maps), "--rule", "posterior", "--min-change-prob", "0.8",
            "--probabilities-of", *probs, "-o", str(out), "--chunk", "16"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "uncertain" in res.output and "map differencing" in res.output
    doc = json.loads((out / "transitions.json").read_text())
    assert doc["min_change_prob"] == 0.8


def test_map_rule_is_unchanged(tmp_path: Path) -> None:
    maps = _dates(tmp_path)
    m = change_report(maps, tmp_path / "r", ChangeOptions(chunk=16)).matrix
    assert m.uncertain_area_m2 is None
    rows = list(csv.DictReader((tmp_path / "r" / "transitions.csv").open()))
    assert len(rows) == 10 and rows[-1]["from"] == "nodata"
    doc = json.loads((tmp_path / "r" / "transitions.json").read_text())
    assert doc["rule"] == "map" and "uncertain" not in doc


def test_resampled_maps_bring_their_probabilities(tmp_path: Path) -> None:
    """A later map on another grid (shifted by 3 px) is resampled, and so are its
    probabilities: the codes equal the rule on the overlapping window."""
    from affine import Affine

    maps = _dates(tmp_path)
    with rasterio.open(maps[1]) as src:
        labels, t = src.read(1), src.transform
    shifted = Affine(t.a, 0, t.c + 30, 0, t.e, t.f)
    moved = write_labels(tmp_path / "moved.tif", labels, transform=shifted)
    stored = _stored(maps[1])
    write_raster(tmp_path / "moved_p.tif", stored, transform=shifted, nodata=255)
    with rasterio.open(tmp_path / "moved_p.tif", "r+") as dst:
        dst.update_tags(GEOSEG_CLASSES=json.dumps(SCHEMA.to_json()))
    opts = ChangeOptions(
        rule="posterior", chunk=16,
        probabilities_of=(str(maps[0].with_name("lc0_probs.tif")), str(tmp_path / "moved_p.tif")),
    )  # fmt: skip
    change_report([maps[0], moved], tmp_path / "r", opts)
    with rasterio.open(tmp_path / "r" / "change.tif") as src:
        codes = src.read(1)
    assert codes.shape == (SHAPE[0], SHAPE[1] - 3)
    expected = file_codes(posterior_codes(_stored(maps[0])[:, :, 3:], stored[:, :, :-3], 0.7), 3)
    with rasterio.open(maps[0]) as a:
        unmapped = (a.read(1)[:, 3:] == 255) | (labels[:, :-3] == 255)
    expected[unmapped] = 255
    np.testing.assert_array_equal(codes, expected)


def test_reference_samples_cover_the_uncertain_stratum(tmp_path: Path) -> None:
    """Labelled points of the uncertain stratum say what it really is: the error-adjusted
    areas then place the uncertain area into true transitions (Olofsson et al. 2014)."""
    import geopandas as gpd

    from geoseg.errors import GeosegError

    maps = _dates(tmp_path)
    first = ChangeOptions(rule="posterior", chunk=16, samples_se=0.05)
    m = change_report(maps, tmp_path / "s", first).matrix
    samples = gpd.read_file(tmp_path / "s" / "samples.gpkg")
    # every mapped stratum is right, and every uncertain point is truly forest -> water
    samples["reference"] = np.where(samples["stratum"] == 9, 1, samples["stratum"])
    samples.to_file(tmp_path / "labelled.gpkg")
    opts = ChangeOptions(rule="posterior", chunk=16, reference=str(tmp_path / "labelled.gpkg"))
    change_report(maps, tmp_path / "a", opts)
    rows = {r["stratum"]: r for r in csv.DictReader((tmp_path / "a" / "accuracy.csv").open())}
    assert float(rows["uncertain"]["mapped_area_ha"]) == pytest.approx(
        m.uncertain_area_m2 / 1e4, rel=1e-6
    )
    assert float(rows["uncertain"]["adjusted_area_ha"]) == 0.0
    adjusted = float(rows["forest -> water"]["adjusted_area_ha"])
    mapped = (m.area_m2[0, 1] + m.uncertain_area_m2) / 1e4
    assert adjusted == pytest.approx(mapped, rel=1e-6)
    samples["reference"] = "uncertain"
    samples.to_file(tmp_path / "bad.gpkg")
    with pytest.raises(GeosegError, match="never 'uncertain'"):
        change_report(
            maps, tmp_path / "b",
            ChangeOptions(rule="posterior", chunk=16, reference=str(tmp_path / "bad.gpkg")),
        )  # fmt: skip


def test_end_to_end_from_predict_probabilities(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """``geoseg predict --probabilities`` on two dates, then ``geoseg change --rule
    posterior`` finds the files through the maps' tags; change.tif is the rule's codes."""
    from tests.conftest import TINY_BANDS, textured_scene

    runner = CliRunner()
    maps, probs = [], []
    for i in range(2):
        data = textured_scene(60, 70, seed=i)
        scene = write_raster(tmp_path / f"s{i}.tif", data, nodata=0, descriptions=TINY_BANDS)
        lc, prob = tmp_path / f"lc{i}.tif", tmp_path / "probs" / f"p{i}.tif"
        prob.parent.mkdir(exist_ok=True)
        res = runner.invoke(cli, ["predict", str(scene), "-m", str(tiny_checkpoint), "-o",
                                  str(lc), "--probabilities", str(prob)])  # fmt: skip
        assert res.exit_code == 0, res.output
        maps.append(lc)
        probs.append(prob)
    out = tmp_path / "r"
    res = runner.invoke(cli, ["change", *map(str, maps), "--rule", "posterior", "-o", str(out)])
    assert res.exit_code == 0, res.output
    with rasterio.open(probs[0]) as a, rasterio.open(probs[1]) as b:
        k = a.count
        expected = file_codes(posterior_codes(a.read(), b.read(), 0.7), k)
    with rasterio.open(maps[0]) as a, rasterio.open(maps[1]) as b:
        expected[(a.read(1) == 255) | (b.read(1) == 255)] = 255
    with rasterio.open(out / "change.tif") as src:
        np.testing.assert_array_equal(src.read(1), expected)


def test_report_names_the_probability_files_it_read(tmp_path: Path) -> None:
    """From the maps' tags or given: transitions.json and index.html name each date's
    probability file by its absolute path."""
    maps = _dates(tmp_path)
    probs = [str(m.with_name(f"{m.stem}_probs.tif").resolve()) for m in maps]
    change_report(maps, tmp_path / "r", ChangeOptions(rule="posterior", chunk=16))
    doc = json.loads((tmp_path / "r" / "transitions.json").read_text())
    assert doc["probabilities"] == probs
    page = (tmp_path / "r" / "index.html").read_text()
    assert f"{maps[0]} (2010-06-01): {probs[0]}; {maps[1]} (2011-06-01): {probs[1]}" in page
    plain = change_report(maps, tmp_path / "m", ChangeOptions(chunk=16))
    assert plain.map_difference is None
    assert "probabilities" not in json.loads((tmp_path / "m" / "transitions.json").read_text())


def test_three_dates_say_the_middle_one_is_not_compared(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    maps = _dates(tmp_path, 3)
    change_report(maps, tmp_path / "r", ChangeOptions(rule="posterior", chunk=16))
    (warning,) = [r.getMessage() for r in caplog.records if "middle dates" in r.getMessage()]
    assert warning.startswith(f"posterior rule between the first and last date ({maps[0]}, ")
    page = (tmp_path / "r" / "index.html").read_text()
    line = "posterior rule between the first and last date; middle dates used only by"
    assert line in page
    caplog.clear()
    opts = ChangeOptions(rule="posterior", chunk=16, consistency=2, overwrite=True)
    change_report(maps, tmp_path / "r", opts)
    assert not [r for r in caplog.records if "middle dates" in r.getMessage()]


def test_resampled_map_is_checked_against_its_own_probabilities(tmp_path: Path) -> None:
    """A map on another grid: its probability file is compared with it on its own grid
    (before resampling), so another date's file on that grid is refused."""
    from affine import Affine

    from geoseg.errors import InvalidRasterError

    maps = _dates(tmp_path)
    with rasterio.open(maps[1]) as src:
        labels, t = src.read(1), src.transform
    shifted = Affine(t.a, 0, t.c + 30, 0, t.e, t.f)
    moved = write_labels(tmp_path / "moved.tif", labels, transform=shifted)
    wrong = write_probabilities(  # date 0's probabilities on the moved map's grid
        moved, random_probabilities(SHAPE, 0, sharpness=2.0), tmp_path / "moved_p.tif",
        transform=shifted, tag=False,
    )  # fmt: skip
    first = str(maps[0].with_name("lc0_probs.tif"))
    opts = ChangeOptions(rule="posterior", chunk=16, probabilities_of=(first, str(wrong)))
    with pytest.raises(InvalidRasterError, match=r"moved_p.tif: its most likely classes "
                       r"disagree with \S+moved.tif at [1-9]"):  # fmt: skip
        change_report([maps[0], moved], tmp_path / "r", opts)
    assert not (tmp_path / "r").exists()


def test_uncertain_colour_stays_apart_from_the_class_colours() -> None:
    from geoseg.pipelines.change_codes import change_schema, uncertain_colour
    from geoseg.types import ClassInfo, ClassSchema

    gold = ClassSchema((ClassInfo(1, "cultivated land", (255, 211, 0)),
                        ClassInfo(2, "forest", (27, 120, 55))))  # fmt: skip
    assert change_schema(gold, uncertain=True).classes[-1].colour == (255, 0, 255)
    pinkish = ClassSchema((ClassInfo(1, "a", (250, 10, 240)), ClassInfo(2, "b", (0, 0, 255))))
    assert uncertain_colour(pinkish) == (0, 255, 255)  # magenta is taken: cyan
    both = ClassSchema((ClassInfo(1, "a", (255, 0, 255)), ClassInfo(2, "b", (0, 250, 250))))
    assert uncertain_colour(both) == (128, 0, 128)  # 285 from magenta, 293 from cyan
