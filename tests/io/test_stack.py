"""Stacking dates for early-fusion change models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.errors import GeosegError
from geoseg.io.stack import stack_dates, stack_normalized
from tests.conftest import TINY_BANDS, textured_scene, write_raster


def test_bands_of_each_date_follow_in_order(tmp_path: Path) -> None:
    a, b = textured_scene(300, 270, bands=2, seed=1), textured_scene(300, 270, bands=2, seed=2)
    pa = write_raster(tmp_path / "a.tif", a, nodata=0, descriptions=("red", "nir"))
    pb = write_raster(tmp_path / "b.tif", b, nodata=0, descriptions=("red", "nir"))
    out = stack_dates([pa, pb], tmp_path / "ab.tif")
    with rasterio.open(out) as src:
        assert src.descriptions == ("t1_red", "t1_nir", "t2_red", "t2_nir")
        assert src.nodata == 0 and src.crs.to_epsg() == 32633
        np.testing.assert_array_equal(src.read(), np.concatenate([a, b]))


def test_dates_on_different_grids_are_refused(tmp_path: Path) -> None:
    pa = write_raster(tmp_path / "a.tif", textured_scene(20, 20, bands=1))
    pb = write_raster(
        tmp_path / "b.tif", textured_scene(20, 20, bands=1), transform=Affine(20, 0, 0, 0, -20, 0)
    )
    with pytest.raises(GeosegError, match="not on the grid"):
        stack_dates([pa, pb], tmp_path / "ab.tif")
    assert not (tmp_path / "ab.tif").exists()


def _as(x: np.ndarray, dtype: str) -> np.ndarray:
    return (x if np.dtype(dtype).kind == "f" else x.round()).astype(dtype)


def _dates(tmp_path: Path, dtype: str = "uint16", scale: float = 1.0) -> tuple[Path, Path]:
    """Date 1 and date 2 = date 1 under another radiometry (first = 0.9 x second + 150),
    with a 60 x 60 px block of other land; nodata 0 in a corner of both."""
    a = textured_scene(200, 180, bands=3, seed=1).astype(float) * scale
    b = (a - 150 * scale) / 0.9 + np.random.default_rng(2).normal(0, 5 * scale, a.shape)
    b[:, 20:80, 30:90] = textured_scene(200, 180, bands=3, seed=7)[:, 20:80, 30:90] * scale
    a[:, :5, :5] = b[:, :5, :5] = 0
    names = ("B02", "B04", "B08")
    return (
        write_raster(tmp_path / "a.tif", _as(a, dtype), nodata=0, descriptions=names),
        write_raster(tmp_path / "b.tif", _as(b, dtype), nodata=0, descriptions=names),
    )


def test_stack_normalize_maps_date_2_onto_date_1(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geoseg.cli import cli

    pa, pb = _dates(tmp_path)
    out = tmp_path / "ab.tif"
    run = CliRunner().invoke(
        cli, ["stack", str(pa), str(pb), "-o", str(out), "--normalize", "irmad"]
    )
    assert run.exit_code == 0, run.output
    line, wrote = run.output.splitlines()
    assert line.startswith(f"date 2 ({pb}): ") and "sampled px invariant; 3 bands," in line
    fitted = ", ".join(rf"{b} 0\.(9|89)\d*/1[45]\d(\.\d)?" for b in ("B02", "B04", "B08"))
    assert re.search(f"gain/offset {fitted}; ", line), line
    assert line.endswith("; 0 values clipped") and wrote == f"wrote {out}"
    with rasterio.open(out) as src:
        stacked, tags = src.read().astype(float), src.tags()
        assert src.dtypes == ("uint16",) * 6 and src.nodata == 0
    fit = json.loads(tags["GEOSEG_NORMALIZE_T2"])
    assert fit["bands"] == ["B02", "B04", "B08"]
    np.testing.assert_allclose(fit["gains"], 0.9, rtol=0.005)
    np.testing.assert_allclose(fit["offsets"], 150, atol=5)
    assert 0 < fit["invariant_share"] < 1 and fit["clipped_values"] == 0
    assert tags["GEOSEG_NORMALIZE"].startswith("irmad")
    assert (stacked[:, :5, :5] == 0).all()  # nodata stays nodata
    same = np.ones((200, 180), bool)
    same[20:80, 30:90] = same[:5, :5] = False
    assert np.abs(stacked[3:] - stacked[:3])[:, same].mean() < 6  # noise 5 DN x 0.9, rounding


def test_stack_normalize_is_deterministic(tmp_path: Path) -> None:
    pa, pb = _dates(tmp_path, "float32", 1e-4)
    first = stack_normalized([pa, pb], tmp_path / "1.tif")
    second = stack_normalized([pa, pb], tmp_path / "2.tif")
    assert first.fits == second.fits
    with rasterio.open(first.path) as one, rasterio.open(second.path) as two:
        assert one.dtypes[0] == "float32"
        np.testing.assert_array_equal(one.read(), two.read())


def _other_bands(tmp_path: Path) -> list[Path]:
    pa, _ = _dates(tmp_path)
    c = write_raster(tmp_path / "c.tif", textured_scene(200, 180, bands=3), nodata=0,
                     descriptions=("B02", "B03", "B08"))  # fmt: skip
    return [pa, c]


def _unrelated(tmp_path: Path) -> list[Path]:
    pa, _ = _dates(tmp_path)
    c = write_raster(tmp_path / "c.tif", textured_scene(200, 180, bands=3, seed=5), nodata=0,
                     descriptions=("B02", "B04", "B08"))  # fmt: skip
    return [pa, c]


def _overflowing(tmp_path: Path) -> list[Path]:
    """uint8 dates, date 1 twice as bright; a bright new roof on date 2 (200) maps to ~400."""
    a = (textured_scene(200, 180, bands=3, seed=1) // 16).astype(np.uint8)  # 18-250
    b = (a / 2 + np.random.default_rng(3).normal(0, 2, a.shape)).round().astype(np.uint8)
    b[:, 20:80, 30:90] = 200
    rgb = ("r", "g", "b")
    return [
        write_raster(tmp_path / "a.tif", a, nodata=0, descriptions=rgb),
        write_raster(tmp_path / "b.tif", b, nodata=0, descriptions=rgb),
    ]


def _nan_band(tmp_path: Path) -> list[Path]:
    """float32 dates; band B04 of date 2 lost in an export (every value NaN)."""
    pa, pb = _dates(tmp_path, "float32", 1e-4)
    with rasterio.open(pb, "r+") as dst:
        dst.write(np.full((200, 180), np.nan, np.float32), 2)
    return [pa, pb]


@pytest.mark.parametrize(
    ("dates", "named", "message"),
    [
        (_other_bands, "c.tif",
         r"c.tif: bands \['B02', 'B03', 'B08'\], \S+a.tif has \['B02', 'B04'.*--normalize"),
        (_unrelated, "c.tif", "date 2: on its invariant pixels most bands hardly correlate"),
        (_overflowing, "ab.tif", r"normalising date 2 pushes \d+ of \d+ values outside uint8"),
        # not "ab.tif: date 2: 0 invariant pixels of 0 sampled ... the dates differ too much"
        (_nan_band, "b.tif", r"band B04 holds no valid value \(every value is NaN, infinite "
         r"or the nodata value 0\), so no pixel is valid on every date"),
    ],
)  # fmt: skip
def test_stack_normalize_refusals(tmp_path: Path, dates: Any, named: str, message: str) -> None:
    from click.testing import CliRunner

    from geoseg.cli import cli

    paths = [str(p) for p in dates(tmp_path)]
    out = tmp_path / "ab.tif"
    run = CliRunner().invoke(cli, ["stack", *paths, "-o", str(out), "--normalize", "irmad"])
    assert run.exit_code == 2 and len(run.output.splitlines()) == 1, run.output
    assert re.search(message, run.output), run.output
    assert run.output.startswith(f"geoseg: error: {tmp_path / named}: "), run.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir() if "ab" in p.name) == []


@pytest.mark.parametrize("normalize", [[], ["--normalize", "irmad"]])
def test_an_input_as_the_output_is_refused_and_kept(tmp_path: Path, normalize: list[str]) -> None:
    from click.testing import CliRunner

    from geoseg.cli import cli

    pa, pb = _dates(tmp_path)
    before = pa.read_bytes()
    args = ["stack", str(pa), str(pb), "-o", str(pa), "--overwrite", *normalize]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert f"{pa}: is also an input" in result.output
    assert pa.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_a_vrt_source_as_the_output_is_refused(tmp_path: Path) -> None:
    pa, pb = _dates(tmp_path)
    vrt = tmp_path / "b.vrt"
    vrt.write_text(
        '<VRTDataset rasterXSize="180" rasterYSize="200"><SRS>EPSG:32633</SRS>'
        "<GeoTransform>500000, 10, 0, 5100000, 0, -10</GeoTransform>"
        + "".join(
            f'<VRTRasterBand dataType="UInt16" band="{i}"><NoDataValue>0</NoDataValue>'
            f'<SimpleSource><SourceFilename relativeToVRT="1">b.tif</SourceFilename>'
            f"<SourceBand>{i}</SourceBand></SimpleSource></VRTRasterBand>"
            for i in (1, 2, 3)
        )
        + "</VRTDataset>"
    )
    before = pb.read_bytes()
    with pytest.raises(GeosegError, match=re.escape(f"{pb}: is also an input")):
        stack_dates([pa, vrt], pb, overwrite=True)
    assert pb.read_bytes() == before


def test_dates_with_nan_nodata_keep_nan_nodata(tmp_path: Path) -> None:
    a = textured_scene(40, 50, bands=2, seed=1).astype(np.float32) / 1e4
    b = textured_scene(40, 50, bands=2, seed=2).astype(np.float32) / 1e4
    a[0, :3, :4] = np.nan  # one band missing in date 1: the pixel is nodata
    b[:, 10:12, 20:25] = np.nan
    pa = write_raster(tmp_path / "a.tif", a, nodata=np.nan)
    pb = write_raster(tmp_path / "b.tif", b, nodata=np.nan)
    out = stack_dates([pa, pb], tmp_path / "ab.tif")
    with rasterio.open(out) as src:
        assert src.nodata is not None and np.isnan(src.nodata)
        stacked = src.read()
    invalid = np.zeros((40, 50), bool)
    invalid[:3, :4] = invalid[10:12, 20:25] = True
    assert np.isnan(stacked[:, invalid]).all()
    np.testing.assert_array_equal(stacked[:, ~invalid], np.concatenate([a, b])[:, ~invalid])


def test_dates_with_different_nodata_keep_every_invalid_pixel_invalid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from geoseg.io.raster import open_scene

    a = textured_scene(300, 270, bands=2, seed=1)
    b = textured_scene(300, 270, bands=2, seed=2)
    a[:, :, :7] = 0  # a Landsat collar, nodata 0
    a[0, 50:60, 100:103] = 0  # a collar pixel like (0, 5): one band missing
    b[:, 280:, :] = 65535  # the other date's nodata
    b[1, 10, 200] = 0  # a valid value of date 2 equal to date 1's nodata
    pa = write_raster(tmp_path / "a.tif", a, nodata=0)
    pb = write_raster(tmp_path / "b.tif", b, nodata=65535)
    out = stack_dates([pa, pb], tmp_path / "ab.tif")
    invalid = np.zeros((300, 270), bool)
    invalid[:, :7] = invalid[50:60, 100:103] = invalid[280:, :] = True
    with rasterio.open(out) as src:
        assert src.nodata == 0
        stacked = src.read()
    assert (stacked[:, invalid] == 0).all()
    np.testing.assert_array_equal(stacked[:, ~invalid], np.concatenate([a, b])[:, ~invalid])
    lost = invalid.copy()
    lost[10, 200] = True  # the one valid pixel holding the stack's nodata value
    np.testing.assert_array_equal(open_scene(out).valid.compute(), ~lost)
    assert "1 pixels valid in every date hold the stack's nodata value 0" in caplog.text


def test_normalized_dates_with_different_nodata_keep_every_invalid_pixel_invalid(
    tmp_path: Path,
) -> None:
    pa, pb = _dates(tmp_path)
    with rasterio.open(pb) as src:
        b = src.read()
    b[b == 0] = 9  # date 2's corner: nodata 9 instead of 0
    b[:, 190:, 170:] = 9
    pb = write_raster(tmp_path / "b9.tif", b, nodata=9, descriptions=("B02", "B04", "B08"))
    out = stack_normalized([pa, pb], tmp_path / "ab.tif").path
    invalid = np.zeros((200, 180), bool)
    invalid[:5, :5] = invalid[190:, 170:] = True
    with rasterio.open(out) as src:
        assert src.nodata == 0
        stacked = src.read()
    assert (stacked[:, invalid] == 0).all() and (stacked[:, ~invalid] != 0).all()


def test_stack_of_one_date_says_so(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geoseg.cli import cli

    one = write_raster(tmp_path / "a.tif", textured_scene(20, 20), descriptions=TINY_BANDS)
    out = tmp_path / "s.tif"
    run = CliRunner().invoke(cli, ["stack", str(one), "-o", str(out)])
    assert run.exit_code == 2 and len(run.output.splitlines()) == 1, run.output
    assert "stack needs at least two dates, got 1" in run.output and not out.exists()
