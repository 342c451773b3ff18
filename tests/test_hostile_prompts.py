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
import rasterio
import shapely
import torch
from affine import Affine
from click.testing import CliRunner
from rasterio.enums import MaskFlags
from safetensors.torch import save_file

from geoseg.cli import cli
from tests.conftest import make_tiny_checkpoint, textured_scene, write_raster
from tests.models.sam_folders import imported_sam, sam_folder

T = Affine(10, 0, 500000, 0, -10, 5100000)
H, W = 300, 320
IN = shapely.box(500500, 5098500, 501000, 5099000)  # px cols 50-100, rows 100-150
OUT = shapely.box(400000, 4000000, 400500, 4000500)


@pytest.fixture(scope="module")
def sam(tmp_path_factory: pytest.TempPathFactory) -> str:
    return imported_sam(tmp_path_factory.mktemp("sam"))


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
    "point-in-nodata": (lambda t, m: ["--points", layer(t, [point(200, 50)])], 2,
                        "(1 prompt on nodata); put the positive points on pixels that hold data"),
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


def _rgb_scene(tmp: Path, dtype: str = "uint8", top: float = 200.0, names: bool = True) -> Path:
    """A 3-band scene of ``dtype`` with values up to ``top``; no descriptions unless ``names``
    (GDAL then writes R, G, B colour interpretation for a 3-band uint8 GeoTIFF)."""
    data = textured_scene(H, W, 3).astype(np.float64)
    data = (data / data.max() * top).astype(dtype)
    kw: dict[str, object] = {"descriptions": ("R", "G", "B")} if names else {"photometric": "RGB"}
    return write_raster(tmp / "s.tif", data, transform=T, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sam10k(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test SAM imported with ``--scale 10000`` (for reflectance x 10000)."""
    return imported_sam(tmp_path_factory.mktemp("sam10k"), scale=10000)


#: case -> (scene, which model, words that must be / must not be in the log). The pixel
#: scale check (prompt_scale) and bands named by their colour interpretation.
RUNS: dict[str, tuple[Callable[[Path], Path], str, list[str], list[str]]] = {
    "float-reflectance-on-a-10000-import": (
        lambda t: _rgb_scene(t, "float32", 0.5), "sam10k",
        ["sees an almost black image", "--scale 1 "], ["saturated"],
    ),
    "uint16-reflectance-on-a-default-import": (
        lambda t: _rgb_scene(t, "uint16", 5000), "sam",
        ["sees a saturated image", "--scale 10000 "], ["black"],
    ),
    "uint8-rgb-on-a-default-import": (lambda t: _rgb_scene(t), "sam", [], ["scale", "image"]),
    "uint16-on-a-10000-import": (
        lambda t: _rgb_scene(t, "uint16", 5000), "sam10k", [], ["scale", "image"],
    ),
    "dark-uint8-on-a-default-import": (  # p99 10 of 255: dark, not misscaled
        lambda t: _rgb_scene(t, "uint8", 10), "sam", [], ["scale", "image"],
    ),
    "unnamed-rgb-colour-interpretation": (
        lambda t: _rgb_scene(t, names=False), "sam", [], ["band names"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(RUNS))
def test_prompt_warns_of_the_pixel_scale_and_names_bands_by_colour(
    case: str, sam: str, sam10k: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make, which, said, unsaid = RUNS[case]
    model = {"sam": sam, "sam10k": sam10k}[which]
    line = ["prompt", make(tmp_path), "-m", model, "--point", "500600,5098600", "-o",
            tmp_path / "o.tif", "--device", "cpu"]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(cli, [str(a) for a in line])
    assert result.exit_code == 0, result.output
    assert all(w in caplog.text for w in said), caplog.text
    assert not any(w in caplog.text for w in unsaid), caplog.text


def test_models_lists_a_sam_checkpoints_pixel_scale(sam10k: str) -> None:
    result = CliRunner().invoke(cli, ["models", sam10k])
    assert result.exit_code == 0, result.output
    assert "model input = stored value / 10000 (geoseg import --scale 10000" in result.output
    assert "mean: 0.485, 0.456, 0.406   std: 0.229, 0.224, 0.225" in result.output


def test_the_prompt_raster_declares_its_nodata(sam: str, tmp_path: Path) -> None:
    """Band 1's 255 (the scene's nodata half) is the raster's mask, for both bands."""
    out = tmp_path / "o.tif"
    line = ["prompt", scene(tmp_path), "-m", sam, "--boxes", layer(tmp_path, [IN]), "-o", out,
            "--device", "cpu"]  # fmt: skip
    assert CliRunner().invoke(cli, [str(a) for a in line]).exit_code == 0
    with rasterio.open(out) as src:
        assert src.mask_flag_enums == ([MaskFlags.per_dataset],) * 2
        cls, mask = src.read(1), src.dataset_mask()
        assert src.read_masks(2).tolist() == mask.tolist()
    assert (cls[:, 160:] == 255).all() and (mask[:, 160:] == 0).all()
    assert (cls[:, :160] != 255).all() and (mask[:, :160] == 255).all()


def _no_objects(tmp: Path) -> Path:
    """An instance COG (``geoseg predict --task instance``'s layout) without any object."""
    from geoseg.io.instances import instance_cog_writer
    from geoseg.types import ClassSchema

    schema = ClassSchema.from_json(
        [{"id": 1, "name": "building", "colour": [255, 0, 0], "is_thing": True}]
    )
    with instance_cog_writer(tmp / "i.tif", height=64, width=64, crs=rasterio.CRS.from_epsg(32633),
                             transform=T, schema=schema) as sink:  # fmt: skip
        sink[(slice(0, 2), slice(0, 64), slice(0, 64))] = np.stack(
            [np.full((64, 64), 255, np.uint32), np.zeros((64, 64), np.uint32)]
        )
    return tmp / "i.tif"


@pytest.mark.parametrize("fmt", ["gpkg", "shp", "parquet", "fgb", "geojson"])
def test_no_object_found_writes_an_empty_layer(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / f"o.{fmt}"
    result = CliRunner().invoke(cli, ["vectorize", str(_no_objects(tmp_path)), "-o", str(out)])
    assert result.exit_code == 0 and "(0 polygons" in result.output, result.output
    frame = gpd.read_parquet(out) if fmt == "parquet" else gpd.read_file(out)
    # GeoJSON is written in lon/lat (RFC 7946)
    assert len(frame) == 0 and frame.crs == ("EPSG:4326" if fmt == "geojson" else "EPSG:32633")
    if fmt != "geojson":  # a GeoJSON without features holds no field names
        field = "inst_id" if fmt == "shp" else "instance_id"
        assert {"class_id", field, "area_m2", "area_ha"} <= set(frame.columns)


def test_segment_everything_with_no_object_exits_0_with_an_empty_layer(
    sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geoseg.models.sam import SamPrompter

    def nothing(self: SamPrompter, batch: np.ndarray, valid: np.ndarray) -> list[object]:
        n = (0, *batch.shape[2:])
        return [(np.zeros(n, bool), np.zeros(0, np.int64), np.zeros(0, np.float32))] * len(batch)

    monkeypatch.setattr(SamPrompter, "predict_instances", nothing)
    out, vector = tmp_path / "o.tif", tmp_path / "o.gpkg"
    line = ["predict", scene(tmp_path), "-m", sam, "--task", "instance", "-o", out,
            "--vector", vector, "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in line])
    assert result.exit_code == 0, result.output
    assert "(0 instances)" in result.output and "(0 polygons)" in result.output
    assert len(gpd.read_file(vector)) == 0
