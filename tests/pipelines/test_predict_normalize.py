"""``geoseg predict --normalize-dates irmad``: a change model sees date 2 in date 1's radiometry."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.io.checkpoint import load_checkpoint, save_checkpoint
from geoseg.io.stack import stack_dates
from tests.conftest import textured_scene, write_raster

PAIR_BANDS = ("t1_B02", "t1_B03", "t2_B02", "t2_B03")


@pytest.fixture(scope="module")
def change_model(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The tiny 4-band U-Net read as a change model of two 2-band dates."""
    tensors, meta = load_checkpoint(tiny_checkpoint)
    out = tmp_path_factory.mktemp("change") / "change.safetensors"
    return save_checkpoint(out, tensors, dataclasses.replace(meta, task="change", bands=PAIR_BANDS))


def _stack(tmp_path: Path, name: str, a: np.ndarray, b: np.ndarray) -> Path:
    pa = write_raster(tmp_path / f"{name}_1.tif", a, descriptions=("B02", "B03"))
    pb = write_raster(tmp_path / f"{name}_2.tif", b, descriptions=("B02", "B03"))
    return stack_dates([pa, pb], tmp_path / f"{name}.tif")


def _predict(scene: Path, model: Path, out: Path, *extra: str) -> np.ndarray:
    args = ["predict", str(scene), "-m", str(model), "-o", str(out), "--device", "cpu", *extra]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    first = run.output.splitlines()[0]  # the fit of date 2, by band name, before the map
    assert first.startswith(f"{scene}: date 2 normalised to date 1 (irmad): ") == bool(extra), first
    assert bool(extra) == bool(re.search(r"2 bands, gain/offset B02 0\.(7|69)\d*/1[45]\d", first))
    with rasterio.open(out) as src:
        fit = src.tags().get("GEOSEG_NORMALIZE_T2")
        assert (fit is not None and json.loads(fit)["bands"] == ["B02", "B03"]) == bool(extra)
        return src.read(1)


def test_normalised_pair_predicts_like_a_pair_of_one_radiometry(
    tmp_path: Path, change_model: Path
) -> None:
    a = textured_scene(128, 128, bands=2, seed=1).astype(float)
    b = (a - 150) / 0.7 + np.random.default_rng(2).normal(0, 3, a.shape)  # darker, flatter
    same = _stack(tmp_path, "same", a.astype(np.uint16), a.astype(np.uint16))
    pair = _stack(tmp_path, "pair", a.astype(np.uint16), b.round().astype(np.uint16))
    truth = _predict(same, change_model, tmp_path / "same_map.tif")
    raw = _predict(pair, change_model, tmp_path / "raw.tif")
    fixed = _predict(pair, change_model, tmp_path / "fixed.tif", "--normalize-dates", "irmad")
    assert (raw != truth).mean() > 0.05  # the radiometry alone changes the model's answer
    assert (fixed != truth).mean() < 0.01


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("tiny", (), "band 'B02' is not named t<date>_<band>"),
        ("spectral", (), "--normalize-dates applies to change checkpoints"),
    ],
)
def test_normalize_dates_refusals(
    tmp_path: Path, tiny_checkpoint: Path, change_model: Path, model: str,
    extra: tuple[str, ...], message: str,
) -> None:  # fmt: skip
    scene = write_raster(
        tmp_path / "s.tif", textured_scene(64, 64), descriptions=("B02", "B03", "B04", "B08")
    )
    m = {"tiny": str(tiny_checkpoint), "change": str(change_model)}.get(model, model)
    out = tmp_path / "o.tif"
    args = ["predict", str(scene), "-m", m, "-o", str(out), "--normalize-dates", "irmad", *extra]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 2 and len(run.output.splitlines()) == 1, run.output
    assert message in run.output and not out.exists()
