"""Hostile ``geoseg prompt`` inputs (and SAM imports): one line, exit 2, nothing half-written.

Each case builds its inputs in ``tmp_path`` and gives the command line; where the
run can go on (some prompts skipped, geometries repaired) it exits 0 and says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
from affine import Affine
from click.testing import CliRunner
from safetensors.torch import save_file

from geoseg.cli import cli
from geoseg.pipelines.importing import ImportOptions, import_model
from tests.conftest import make_tiny_checkpoint, textured_scene, write_raster
from tests.models.sam_folders import sam_folder

T = Affine(10, 0, 500000, 0, -10, 5100000)
H, W = 300, 320
IN = shapely.box(500500, 5098500, 501000, 5099000)  # px cols 50-100, rows 100-150
OUT = shapely.box(400000, 4000000, 400500, 4000500)


@pytest.fixture(scope="module")
def sam(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("sam")
    folder = sam_folder(root / "folder")
    return str(
        import_model(folder, root / "sam.safetensors", ImportOptions(("R", "G", "B"))).output
    )


def scene(tmp: Path) -> Path:
    """A 3-band uint8 scene whose right half (cols >= 160) is nodata (0)."""
    data = (textured_scene(H, W, 3) // 16 + 1).astype(np.uint8)
    data[:, :, 160:] = 0
    return write_raster(tmp / "scene.tif", data, transform=T, nodata=0,
                        descriptions=("R", "G", "B"))  # fmt: skip


def layer(tmp: Path, geoms: list[object], name: str = "p.gpkg", **fields: list[object]) -> Path:
    frame = gpd.GeoDataFrame(fields or None, geometry=geoms, crs="EPSG:32633")
    frame.to_file(tmp / name)
    return tmp / name


def point(col: float, row: float) -> shapely.Point:
    return shapely.Point(*(T @ (col, row)))


def _no_crs(tmp: Path) -> Path:
    """GeoJSON without a crs member, coordinates in UTM metres."""
    features = [{"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(IN)}]
    path = tmp / "p.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _pickled_folder(tmp: Path) -> Path:
    """A SAM folder whose weights are only a pickled ``pytorch_model.bin``."""
    from safetensors.torch import load_file

    folder = sam_folder(tmp / "sam_bin")
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def _tampered(tmp: Path, sam: str) -> Path:
    raw = bytearray(Path(sam).read_bytes())
    raw[-5] ^= 0xFF  # a byte of the last tensor
    (tmp / "t.safetensors").write_bytes(bytes(raw))
    return tmp / "t.safetensors"


def _empty(tmp: Path) -> Path:
    frame = gpd.GeoDataFrame({"name": []}, geometry=gpd.GeoSeries([], crs="EPSG:32633"))
    frame.to_file(tmp / "p.gpkg")
    return tmp / "p.gpkg"


Case = Callable[[Path, str], list[object]]
BOWTIE = shapely.Polygon([(500500, 5098500), (501000, 5099000), (501000, 5098500),
                          (500500, 5099000)])  # fmt: skip

#: case -> (command line after `geoseg`, exit code, words in the output).
CASES: dict[str, tuple[Case, int, str]] = {
    "all-outside": (lambda t, m: ["--boxes", layer(t, [OUT, OUT])], 2, "no prompt is left"),
    "some-outside": (lambda t, m: ["--boxes", layer(t, [IN, OUT])], 0, "1 outside the scene"),
    "empty-layer": (lambda t, m: ["--boxes", _empty(t)], 2, "the layer has no features"),
    "invalid-geometry": (lambda t, m: ["--boxes", layer(t, [BOWTIE])], 0, "1 objects"),
    "point-in-nodata": (lambda t, m: ["--points", layer(t, [point(200, 50)])], 2, "1 on nodata"),
    "one-point-in-nodata": (
        lambda t, m: ["--points", layer(t, [point(200, 50), point(60, 60)])], 0, "1 on nodata"
    ),
    "no-crs": (lambda t, m: ["--boxes", _no_crs(t)], 2, "--prompts-crs EPSG:XXXX"),
    "no-crs-named": (lambda t, m: ["--boxes", _no_crs(t), "--prompts-crs", "EPSG:32633"], 0,
                     "1 objects"),
    "bad-label": (lambda t, m: ["--points", layer(t, [point(60, 60)], label=[2])], 2,
                  "field 'label' holds 2"),
    "points-as-boxes": (lambda t, m: ["--boxes", layer(t, [point(60, 60)])], 2,
                        "--boxes takes polygons"),
    "two-sources": (lambda t, m: ["--boxes", layer(t, [IN]), "--point", "500600,5098600"], 2,
                    "exactly one of"),
    "bad-point": (lambda t, m: ["--point", "east,north"], 2, "expected X,Y or X,Y,CRS"),
    "point-bad-crs": (lambda t, m: ["--point", "1,2,EPSG:999999"], 2, "is not a CRS"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_prompts(case: str, sam: str, tmp_path: Path) -> None:
    make, code, words = CASES[case]
    image = scene(tmp_path)
    args = make(tmp_path, sam)
    before = set(tmp_path.iterdir())
    out, vector = tmp_path / "o.tif", tmp_path / "o.gpkg"
    line = ["prompt", image, "-m", sam, *args, "-o", out, "--vector", vector, "--device", "cpu"]
    result = CliRunner().invoke(cli, [str(a) for a in line])
    assert result.exit_code == code and words in result.output, result.output
    if code == 2:
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert set(tmp_path.iterdir()) == before  # nothing written, no lock or temporary left
    else:
        assert out.exists() and vector.exists()


def test_invalid_geometries_are_repaired_with_a_warning(
    sam: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = scene(tmp_path)
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(cli, ["prompt", str(image), "-m", sam, "--boxes",
                                          str(layer(tmp_path, [BOWTIE, IN])), "-o",
                                          str(tmp_path / "o.tif"), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 invalid geometries made valid" in caplog.text


#: model refusals: (make the model, command words, words in the output).
MODELS: dict[str, tuple[Callable[[Path, str], list[object]], str]] = {
    "not-sam": (lambda t, m: ["prompt", scene(t), "-m", make_tiny_checkpoint(t / "u.safetensors"),
                              "--point", "500600,5098600", "-o", t / "o.tif"],
                "takes pixels, not prompts"),
    "tampered": (lambda t, m: ["prompt", scene(t), "-m", _tampered(t, m), "--point",
                               "500600,5098600", "-o", t / "o.tif"], "digest"),
    "predict-with-sam": (lambda t, m: ["predict", scene(t), "-m", m, "-o", t / "o.tif"],
                         "use `geoseg prompt"),
    "evaluate-with-sam": (lambda t, m: ["evaluate", "-m", m, "--image", scene(t), "--labels",
                                        scene(t), "-o", t / "ev"], "run it with `geoseg prompt"),
    "pickled-weights": (lambda t, m: ["import", _pickled_folder(t), "-o", t / "s.safetensors",
                                      "--bands", "R,G,B"], "pickled weights"),
    "sam-with-classes": (lambda t, m: ["import", sam_folder(t / "f"), "-o", t / "s.safetensors",
                                       "--bands", "R,G,B", "--things", "a"], "SAM has no classes"),
    "sam-window": (lambda t, m: ["import", sam_folder(t / "f"), "-o", t / "s.safetensors",
                                 "--bands", "R,G,B", "--window", 512], "takes 256 px windows"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MODELS))
def test_hostile_models(case: str, sam: str, tmp_path: Path) -> None:
    make, words = MODELS[case]
    args = [str(a) for a in make(tmp_path, sam)]
    before = set(tmp_path.rglob("*"))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and words in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert set(tmp_path.rglob("*")) == before


def test_a_converted_pickle_folder_imports(tmp_path: Path) -> None:
    """The conversion the refusal names (a weights_only load, a safetensors save) is enough."""
    folder = _pickled_folder(tmp_path)
    save_file(torch.load(folder / "pytorch_model.bin", weights_only=True),
              folder / "model.safetensors")  # fmt: skip
    result = CliRunner().invoke(cli, ["import", str(folder), "-o", str(tmp_path / "s.safetensors"),
                                      "--bands", "R,G,B"])  # fmt: skip
    assert result.exit_code == 0 and "sam prompt: 3 bands" in result.output, result.output
