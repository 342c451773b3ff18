"""``geoseg predict -o`` must name a GeoTIFF: a COG written as ``x.gpkg`` opened nowhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from tests.conftest import textured_scene, write_raster


@pytest.mark.parametrize(
    ("args", "named"),
    [(["-o", "map.gpkg"], "map.gpkg: -o writes a GeoTIFF"),
     (["-o", "map.geojson"], "map.geojson: -o writes a GeoTIFF"),
     (["-o", "map.tif", "--probabilities", "p.shp"], "p.shp: --probabilities writes a GeoTIFF")],
    ids=["gpkg", "geojson", "probabilities-shp"],
)  # fmt: skip
def test_predict_refuses_a_raster_output_named_as_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], named: str
) -> None:
    monkeypatch.chdir(tmp_path)
    scene = write_raster(tmp_path / "s.tif", textured_scene(64, 64))
    result = CliRunner().invoke(
        cli, ["predict", str(scene), "-m", "spectral", "--sensor", "rgbnir", *args]
    )
    assert result.exit_code == 2, result.output
    assert named in result.output and "--vector" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]  # nothing written


def test_predict_still_writes_tif_and_tiff(tmp_path: Path) -> None:
    scene = write_raster(tmp_path / "s.tif", textured_scene(64, 64))
    for name in ("a.tif", "b.TIFF"):
        result = CliRunner().invoke(
            cli, ["predict", str(scene), "-m", "spectral", "--sensor", "rgbnir",
                  "-o", str(tmp_path / name)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert (tmp_path / name).stat().st_size > 0


def test_prompt_refuses_an_output_named_as_vectors(tmp_path: Path) -> None:
    scene = write_raster(tmp_path / "s.tif", textured_scene(64, 64, bands=3))
    result = CliRunner().invoke(
        cli, ["prompt", str(scene), "-m", str(tmp_path / "no.safetensors"), "--point",
              "500000,5000000", "-o", str(tmp_path / "objects.gpkg")],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "objects.gpkg: -o writes a GeoTIFF" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
