"""``predict --normalize-to`` and the workflow key ``normalize_dates``: a later date is
predicted in the first date's radiometry (IR-MAD), so a gain/offset is no land-cover change."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from geoseg.cli import cli
from geoseg.errors import GeosegError
from geoseg.io.checkpoint import load_checkpoint, save_checkpoint
from geoseg.pipelines.workflow import WorkflowResult, load_workflow, run_workflow
from tests.conftest import TINY_BANDS, textured_scene, write_raster

GAIN, OFFSET = 0.7, 150.0  # date 1 = GAIN * date 2 + OFFSET
#: The fit as printed: ``band gain/offset`` of each band, by name, near GAIN and OFFSET.
_FIT = ", ".join(rf"{b} 0\.(7|69)\d*/1[45]\d(\.\d)?" for b in TINY_BANDS)


def _dates(tmp_path: Path) -> tuple[Path, Path]:
    """Date 1 and the same ground seen darker and flatter (a known gain and offset)."""
    a = textured_scene(128, 128, seed=1).astype(float)
    b = (a - OFFSET) / GAIN + np.random.default_rng(2).normal(0, 3, a.shape)
    first = write_raster(tmp_path / "d1.tif", a.astype(np.uint16), descriptions=TINY_BANDS)
    later = b.round().astype(np.uint16)
    return first, write_raster(tmp_path / "d2.tif", later, descriptions=TINY_BANDS)


def _predict(scene: Path, model: Path, out: Path, *extra: str) -> np.ndarray:
    args = ["predict", str(scene), "-m", str(model), "-o", str(out), "--device", "cpu", *extra]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    # the fit is printed, with the band names, before the map it made
    line = run.output.splitlines()[0]
    assert line.startswith(f"{scene}: normalised to d1.tif (irmad): ") == bool(extra), line
    if extra:
        assert f"% of {128 * 128:,} sampled px invariant; 4 bands, gain/offset B02 0." in line
        assert re.search(_FIT, line), line
    with rasterio.open(out) as src:
        return src.read(1)


def test_normalised_later_date_predicts_like_the_first(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    first, later = _dates(tmp_path)
    truth = _predict(first, tiny_checkpoint, tmp_path / "truth.tif")
    raw = _predict(later, tiny_checkpoint, tmp_path / "raw.tif")
    out = tmp_path / "fixed.tif"
    fixed = _predict(later, tiny_checkpoint, out, "--normalize-to", str(first))
    assert (raw != truth).mean() > 0.05  # the radiometry alone changes the model's answer
    assert (fixed != truth).mean() < 0.01
    with rasterio.open(out) as src:
        fit = json.loads(src.tags()["GEOSEG_NORMALIZED_TO"])
    assert fit["reference"] == "d1.tif" and fit["method"] == "irmad"
    assert fit["bands"] == list(TINY_BANDS) and fit["sampled_pixels"] == 128 * 128
    assert fit["invariant_pixels"] / fit["sampled_pixels"] == fit["invariant_share"] > 0.04
    assert fit["gains"] == pytest.approx([GAIN] * 4, abs=0.01)
    assert fit["offsets"] == pytest.approx([OFFSET] * 4, abs=15)


def _other(tmp_path: Path, first: Path, kind: str) -> Path:
    """A reference unfit for normalising the later date, by ``kind``."""
    a = textured_scene(128, 128, seed=1)
    if kind == "grid":
        shifted = from_origin(500_100.0, 5_100_000.0, 10, 10)
        return write_raster(tmp_path / "r.tif", a, transform=shifted, descriptions=TINY_BANDS)
    if kind == "bands":
        return write_raster(tmp_path / "r.tif", a[:3], descriptions=TINY_BANDS[:3])
    if kind == "grid+dtype":  # another grid is named as such, not as another type
        shifted = from_origin(500_100.0, 5_100_000.0, 10, 10)
        data = a.astype(np.float32)
        return write_raster(tmp_path / "r.tif", data, transform=shifted, descriptions=TINY_BANDS)
    if kind == "dtype":
        return write_raster(tmp_path / "r.tif", a.astype(np.float32), descriptions=TINY_BANDS)
    if kind == "unrelated":  # another place: nothing in common with the later date
        noise = np.random.default_rng(9).integers(300, 4000, a.shape).astype(np.uint16)
        return write_raster(tmp_path / "r.tif", noise, descriptions=TINY_BANDS)
    return first if kind == "first" else tmp_path / "missing.tif"


@pytest.mark.parametrize(
    ("kind", "model", "message"),
    [
        ("grid", "tiny", "not on the grid of the reference"),
        ("grid+dtype", "tiny", "d2.tif: not on the grid of the reference"),
        (
            "grid+dtype",
            "tiny",
            "gdalwarp -t_srs EPSG:32633 -te 500100 5098720 501380 5100000 -ts 128 128 ",
        ),
        ("bands", "tiny", "r.tif: the model needs 4 bands"),
        ("dtype", "tiny", "float32 bands"),
        ("unrelated", "tiny", "invariant pixels"),
        ("missing", "tiny", "missing.tif"),
        ("self", "tiny", "names the scene itself"),
        ("first", "spectral", "--normalize-to applies to checkpoint models"),
        ("first", "change", "use --normalize-dates"),
    ],
)
def test_normalize_to_refusals(
    tmp_path: Path, tiny_checkpoint: Path, kind: str, model: str, message: str
) -> None:
    first, later = _dates(tmp_path)
    reference = later if kind == "self" else _other(tmp_path, first, kind)
    m = str(tiny_checkpoint) if model == "tiny" else model
    if model == "change":
        tensors, meta = load_checkpoint(tiny_checkpoint)
        bands = ("t1_B02", "t1_B03", "t2_B02", "t2_B03")
        m = str(save_checkpoint(tmp_path / "c.safetensors", tensors,
                                dataclasses.replace(meta, task="change", bands=bands)))  # fmt: skip
    out = tmp_path / "o.tif"
    args = ["predict", str(later), "-m", m, "-o", str(out), "--normalize-to", str(reference)]
    run = CliRunner().invoke(cli, [*args, "--device", "cpu"])
    assert run.exit_code == 2 and len(run.output.splitlines()) == 1, run.output
    assert message in run.output and not out.exists()


def _workflow(tmp_path: Path, model: str, extra: str) -> Path:
    focus = "focus: {from: [forest], to: [water, urban]}\n" if model != "spectral" else ""
    path = tmp_path / "wf.yaml"
    path.write_text(
        f"version: 1\nscenes: [d1.tif, d2.tif]\nmodel: {model}\noutput: out\n{focus}{extra}"
    )
    return path


def test_workflow_normalize_dates_predicts_later_dates_normalised(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    first, _ = _dates(tmp_path)
    (tmp_path / "m.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    truth = _predict(first, tiny_checkpoint, tmp_path / "truth.tif")
    runs = {}
    for name, extra in (("off", ""), ("on", "normalize_dates: irmad\n")):
        wf = load_workflow(_workflow(tmp_path, "m.safetensors", extra), tmp_path)
        runs[name] = run_workflow(dataclasses.replace(wf, output=tmp_path / name))
    maps = {}
    for name, result in runs.items():
        with rasterio.open(result.maps[1]) as src:
            maps[name], tags = src.read(1), src.tags()
        assert ("GEOSEG_NORMALIZED_TO" in tags) == (name == "on")
        with rasterio.open(result.maps[0]) as src:  # date 1 is the reference, as it is
            assert "GEOSEG_NORMALIZED_TO" not in src.tags()
            assert np.array_equal(src.read(1), truth)
    assert (maps["off"] != truth).mean() > 0.05
    assert (maps["on"] != truth).mean() < 0.01
    assert runs["on"].summary["normalize_dates"] == "irmad"
    assert runs["off"].summary["normalize_dates"] is None
    assert runs["on"].summary["area_m2"] < runs["off"].summary["area_m2"]
    _assert_reported(runs["on"], tmp_path / "on", "map_2_d2.tif")
    assert runs["off"].normalized == () and runs["off"].summary["normalization"] == [None, None]


def _assert_reported(run: WorkflowResult, out: Path, normalised_map: str) -> None:
    """The run's line for date 2 and its report: transitions.json, summary.json, index.html."""
    (line,) = run.normalized
    assert line.startswith("date 2 (") and "d2.tif): normalised to d1.tif (irmad): " in line
    assert re.search(_FIT, line), line
    report = json.loads((out / "report" / "transitions.json").read_text("utf-8"))
    first, second = report["normalization"]
    assert first is None and second["bands"] == list(TINY_BANDS)
    assert second["gains"] == pytest.approx([GAIN] * 4, abs=0.01)
    assert json.loads((out / "summary.json").read_text("utf-8"))["normalization"] == [None, second]
    page = (out / "report" / "index.html").read_text("utf-8")
    assert (
        f"radiometric normalisation: map 2 ({normalised_map}) was predicted normalised to "
        f"d1.tif (irmad): {100 * second['invariant_share']:.1f} %" in page
    )
    assert "map 1" not in page.split("radiometric normalisation")[1]


def test_geoseg_run_prints_the_fit_and_change_reports_it(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """``geoseg run`` prints the fit of date 2; ``geoseg change`` on the maps of
    ``predict --normalize-to`` reports it from their tags."""
    first, later = _dates(tmp_path)
    (tmp_path / "m.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    _workflow(tmp_path, "m.safetensors", "normalize_dates: irmad\n")
    run = CliRunner().invoke(cli, ["run", str(tmp_path / "wf.yaml"), "--root", str(tmp_path)])
    assert run.exit_code == 0, run.output
    line = run.output.splitlines()[0]  # printed first, before the files written
    assert line.startswith(f"date 2 ({tmp_path / 'd2.tif'}): normalised to d1.tif (irmad)")
    _predict(first, tiny_checkpoint, tmp_path / "a.tif")
    _predict(later, tiny_checkpoint, tmp_path / "b.tif", "--normalize-to", str(first))
    args = ["change", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "-o", str(tmp_path / "c")]
    assert CliRunner().invoke(cli, args).exit_code == 0
    report = json.loads((tmp_path / "c" / "transitions.json").read_text("utf-8"))
    assert report["normalization"][0] is None and report["normalization"][1]["bands"] == list(
        TINY_BANDS
    )
    page = (tmp_path / "c" / "index.html").read_text("utf-8")
    assert "radiometric normalisation: map 2 (b.tif) was predicted normalised to d1.tif" in page


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("m.safetensors", "normalize_dates: histogram\n", "normalize_dates: expected one of irmad"),
        ("m.safetensors", "normalize_dates: [irmad]\n", "normalize_dates: expected one of irmad"),
        ("m.safetensors", "normalize_dates: true\n", "normalize_dates: expected one of irmad"),
        ("m.safetensors", "normalize_dates: ''\n", "normalize_dates: expected one of irmad"),
        ("spectral", "normalize_dates: irmad\n", "normalize_dates: applies to checkpoint models"),
    ],
)
def test_workflow_normalize_dates_refusals(
    tmp_path: Path, tiny_checkpoint: Path, model: str, extra: str, message: str
) -> None:
    _dates(tmp_path)
    (tmp_path / "m.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    path = _workflow(tmp_path, model, extra)
    with pytest.raises(GeosegError) as info:
        load_workflow(path, tmp_path)
    assert message in str(info.value) and "wf.yaml" in str(info.value)
