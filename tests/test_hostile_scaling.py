"""Scenes whose bands declare a GDAL scale/offset that geoseg does not apply.

geoseg reads uint16 as reflectance x 10000 with no offset; a Sentinel-2 L2A file of
processing baseline 04.00 declares ``value x 0.0001 - 0.1``, and a model trained on
data without the offset then sees reflectance 0.1 too high. predict (checkpoint and
spectral models), evaluate and calibrate must say so, naming the band and the
``gdal_translate -unscale`` that converts the file; bands whose declaration agrees with
geoseg's reading (or that declare nothing) must not warn.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio

from geoseg.io.band_scaling import declared_scaling
from tests.cli_cases import CliCase, run_cli_case
from tests.conftest import TINY_BANDS, make_tiny_checkpoint, textured_scene, write_raster

WARNS = ("s.tif", "band B02", "value x 0.0001 - 0.1", "gdal_translate -unscale -ot Float32 s.tif")


def _scene(tmp: Path, scales: tuple[float, ...], offsets: tuple[float, ...]) -> Path:
    path = write_raster(tmp / "s.tif", textured_scene(64, 64), descriptions=TINY_BANDS)
    with rasterio.open(path, "r+") as dst:
        dst.scales, dst.offsets = scales, offsets
    return path


def _predict(scales: tuple[float, ...], offsets: tuple[float, ...], model: str = "ckpt"):
    def build(tmp: Path) -> list[str]:
        scene = _scene(tmp, scales, offsets)
        m = str(make_tiny_checkpoint(tmp / "m.safetensors")) if model == "ckpt" else model
        return ["predict", str(scene), "-m", m, "-o", str(tmp / "lc.tif")]

    return build


L2A = ((1e-4,) * 4, (-0.1,) * 4)
CASES = {
    "l2a_offset_checkpoint": CliCase(_predict(*L2A), 0, WARNS),
    "l2a_offset_spectral": CliCase(_predict(*L2A, model="spectral"), 0, WARNS),
    "one_band_scaled": CliCase(
        _predict((1.0, 1.0, 2.75e-5, 1.0), (0.0, 0.0, -0.2, 0.0)),
        0,
        ("band B04 declares value x 2.75e-05 - 0.2",),
        never=("more band",),
    ),
    "declared_as_geoseg_reads": CliCase(
        _predict((1e-4,) * 4, (0.0,) * 4), 0, (), never=("scale/offset",)
    ),
    "nothing_declared": CliCase(_predict((1.0,) * 4, (0.0,) * 4), 0, (), never=("scale/offset",)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_declared_scaling_case(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_cli_case(CASES[name], tmp_path, caplog)


def test_declared_scaling_lists_only_differing_bands(tmp_path: Path) -> None:
    """Band by band: (1, 0) and (1e-4, 0) agree with a uint16 reading; the others do not."""
    path = _scene(tmp_path, (1.0, 1e-4, 1e-4, 2.75e-5), (0.0, 0.0, -0.1, -0.2))
    found = declared_scaling(path, [0, 1, 2, 3])
    assert [(f.band, f.scale, f.offset, f.assumed) for f in found] == [
        ("B04", 1e-4, -0.1, 1e-4),
        ("B08", 2.75e-5, -0.2, 1e-4),
    ]
    assert declared_scaling(path, [0, 1]) == []
