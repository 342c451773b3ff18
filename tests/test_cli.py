"""The command line: bad input gets one clear line, exit code 2 and no output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import InputNotFoundError
from tests.conftest import TINY_BANDS, textured_scene, write_raster


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def leftovers(folder: Path, keep: set[str]) -> set[str]:
    return {p.name for p in folder.iterdir()} - keep


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "scene.tif", textured_scene(40, 50), descriptions=TINY_BANDS)


def _bad_inputs(tmp_path: Path, ckpt: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (predict arguments before -o, expected words in the message)."""
    data = textured_scene(40, 50)
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    zero = tmp_path / "zero.vrt"
    zero.write_text(
        '<VRTDataset rasterXSize="0" rasterYSize="0"><SRS>EPSG:4326</SRS>'
        '<VRTRasterBand dataType="Byte" band="1"/></VRTDataset>'
    )
    nocrs = write_raster(tmp_path / "nocrs.tif", data, crs=None, descriptions=TINY_BANDS)
    rotated = write_raster(
        tmp_path / "rot.tif", data, transform=Affine(10, 2, 0, 2, -10, 0), descriptions=TINY_BANDS
    )
    three = write_raster(tmp_path / "three.tif", data[:3], descriptions=("a", "b", "c"))
    allnd = write_raster(
        tmp_path / "nodata.tif", np.zeros_like(data), nodata=0, descriptions=TINY_BANDS
    )
    m = ["-m", str(ckpt)]
    return {
        "missing": ([str(tmp_path / "nope.tif"), *m], "no such file"),
        "not a raster": ([str(text), *m], "not a raster"),
        "zero bytes": ([str(empty), *m], "empty"),
        "zero size": ([str(zero), *m], "empty"),
        "no crs": ([str(nocrs), *m], "--assume-crs"),
        "rotated": ([str(rotated), *m], "rotated"),
        "band count": ([str(three), *m], "needs 4 bands"),
        "all nodata": ([str(allnd), "-m", "spectral"], "every pixel of the input is nodata"),
        "model missing": ([str(nocrs), "-m", str(tmp_path / "none.safetensors")], "no such"),
    }


CASES = [
    "missing", "not a raster", "zero bytes", "zero size", "no crs", "rotated", "band count",
    "all nodata", "model missing",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_no_output(
    tmp_path: Path, tiny_checkpoint: Path, case: str
) -> None:
    args, words = _bad_inputs(tmp_path, tiny_checkpoint)[case]
    before = {p.name for p in tmp_path.iterdir()}
    code, out = run("predict", *args, "-o", tmp_path / "out.tif", "--preview", tmp_path / "q.png")
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg: error: "), out
    assert words in lines[0]
    assert Path(args[0]).name in lines[0] or case == "model missing"
    assert leftovers(tmp_path, before) == set(), "partial or temporary output left behind"


def test_assume_crs_rescues_a_scene_without_crs(tmp_path: Path) -> None:
    path = write_raster(
        tmp_path / "s.tif", textured_scene(30, 30), crs=None, descriptions=TINY_BANDS
    )
    out = tmp_path / "o.tif"
    code, text = run("predict", path, "-m", "spectral", "-o", out, "--assume-crs", "EPSG:32633")
    assert code == 0, text
    import rasterio

    with rasterio.open(out) as dst:
        assert dst.crs.to_epsg() == 32633


def test_existing_output_is_refused_and_kept(tmp_path: Path, scene: Path) -> None:
    out = tmp_path / "lc.tif"
    out.write_bytes(b"precious")
    code, text = run("predict", scene, "-m", "spectral", "-o", out)
    assert code == 2 and "--overwrite" in text
    assert out.read_bytes() == b"precious"
    code, text = run("predict", scene, "-m", "spectral", "-o", out, "--overwrite")
    assert code == 0 and out.read_bytes()[:2] in (b"II", b"MM")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    args = ["predict", str(tmp_path / "x.tif"), "-m", "spectral", "-o", str(tmp_path / "o.tif")]
    plain = CliRunner().invoke(cli, args)
    # click ends a handled error with SystemExit(2); --debug lets the project's error out
    assert plain.exit_code == 2 and isinstance(plain.exception, SystemExit)
    assert plain.output == f"geoseg: error: {tmp_path / 'x.tif'}: no such file; check the path\n"
    debug = CliRunner().invoke(cli, ["--debug", *args])
    assert type(debug.exception) is InputNotFoundError
    assert str(debug.exception) == f"{tmp_path / 'x.tif'}: no such file; check the path"
    assert debug.exc_info is not None and debug.exc_info[2] is not None  # the traceback
    assert "geoseg: error:" not in debug.output


def test_bands_option_selects_and_maps_roles(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """``--bands`` on a 5-band file maps exactly what the same 4 bands, named, map."""
    import rasterio

    data = textured_scene(40, 50, bands=5, seed=3)
    path = write_raster(tmp_path / "s.tif", data, descriptions=("x1", "x2", "x3", "x4", "x5"))
    named = write_raster(tmp_path / "named.tif", data[1:], descriptions=TINY_BANDS)
    runs = {
        "ckpt": (tiny_checkpoint, ["--bands", "2,3,4,5"]),
        "spectral": ("spectral", ["--bands", "blue=2,green=3,red=4,nir=5"]),
    }
    for name, (model, bands) in runs.items():
        got, want = tmp_path / f"{name}_bands.tif", tmp_path / f"{name}_named.tif"
        code, text = run("predict", path, "-m", model, "-o", got, *bands)
        assert code == 0, text
        assert run("predict", named, "-m", model, "-o", want)[0] == 0
        with rasterio.open(got) as a, rasterio.open(want) as b:
            labels = a.read(1)
            np.testing.assert_array_equal(labels, b.read(1))
        assert len(np.unique(labels)) > 1, f"{name}: a constant map cannot tell bands apart"
    code, text = run(
        "predict", path, "-m", "spectral", "-o", tmp_path / "c.tif", "--bands", "red=3,nir"
    )
    assert code == 2 and "nir" in text, text
    assert not (tmp_path / "c.tif").exists()


def test_models_lists_spectral_and_describes_a_checkpoint(tiny_checkpoint: Path) -> None:
    code, text = run("models")
    assert code == 0 and "spectral" in text and "unet" in text and "vegetation" in text
    code, text = run("models", tiny_checkpoint)
    assert code == 0 and "B02, B03, B04, B08" in text and "forest" in text


def test_info_describes_a_label_raster(tmp_path: Path, scene: Path) -> None:
    out = tmp_path / "lc.tif"
    assert run("predict", scene, "-m", "spectral", "-o", out)[0] == 0
    code, text = run("info", out)
    assert code == 0
    assert "EPSG:32633" in text and "50 x 40 px" in text and "vegetation" in text


def test_not_a_checkpoint_is_refused(tmp_path: Path, scene: Path) -> None:
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"\x80\x04" + json.dumps({"a": 1}).encode())
    code, text = run("predict", scene, "-m", fake, "-o", tmp_path / "o.tif")
    assert code == 2 and "pickle" in text


def test_train_from_a_yaml_config_then_evaluate(tmp_path: Path) -> None:
    from geoseg.synthetic import TRUTH_SCHEMA, write_sample_data

    paths = write_sample_data(tmp_path / "data", height=96, width=96, seed=1)
    config = tmp_path / "train.yaml"
    config.write_text(
        "images: [data/scene_before.tif]\n"
        "labels: [data/truth_before.tif]\n"
        f"classes: {json.dumps(TRUTH_SCHEMA.to_json())}\n"
        "output: model.safetensors\n"
        "arch: unet\nencoder: tu-resnet18\n"
        "options: {encoder_depth: 3, decoder_channels: [16, 8, 8]}\n"
        "window: 32\nmargin: 4\nepochs: 3\nsteps_per_epoch: 2\nbatch_size: 2\n"
    )
    code, text = run("train", "--config", config, "--epochs", "1", "--device", "cpu")
    assert code == 0, text
    from geoseg.io.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(tmp_path / "model.safetensors")
    assert meta.provenance["epochs"] == 1  # the flag wins over the file
    assert meta.window == 32 and meta.encoder == "tu-resnet18"
    code, text = run(
        "evaluate", "-m", tmp_path / "model.safetensors", "--image", paths["after"],
        "--labels", paths["truth_after"], "-o", tmp_path / "ev", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, text
    assert "mIoU" in text and (tmp_path / "ev" / "metrics.json").is_file()


def test_train_config_with_unknown_keys_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("epochz: 3\n")
    code, text = run("train", "--config", config)
    assert code == 2 and "unknown keys ['epochz']" in text


def test_gpus_without_dask_cuda_says_how_to_get_it(
    tmp_path: Path,
    scene: Path,
    tiny_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    import sys

    import torch

    from geoseg.models.cache import load_predictor

    request.addfinalizer(load_predictor.cache_clear)  # the cached "cuda" model is on the CPU
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import fails, as when not installed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the model stays on the CPU
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **kw: self)
    out = tmp_path / "out.tif"

    code, text = run("predict", scene, "-m", tiny_checkpoint, "-o", out, "--gpus", "2")

    assert code == 2 and "--gpus needs dask-cuda (pip install dask-cuda)" in text
    assert leftovers(tmp_path, {"scene.tif"}) == set()


def test_precision_fp16_on_the_cpu_is_refused(
    tmp_path: Path, scene: Path, tiny_checkpoint: Path
) -> None:
    out = tmp_path / "out.tif"

    code, text = run(
        "predict", scene, "-m", tiny_checkpoint, "-o", out, "--device", "cpu", "--precision", "fp16"
    )

    assert code == 2 and "fp16 needs a CUDA GPU" in text
    assert leftovers(tmp_path, {"scene.tif"}) == set()
