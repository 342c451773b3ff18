"""Hostile values (issue 15, items 2, 3, 4, 10, 16): an error naming the file, or a warning.

Non-finite pixels are nodata; non-finite weights and absurd checkpoint metadata are
refused; every message names the file (and a damaged block, the block); a guessed
band order that the scene contradicts, and a scene far from a checkpoint's training
data, are warned about. Errors: exit 2, one line, nothing left behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from geoseg.cli import cli
from geoseg.pipelines import PredictOptions, predict_scene
from tests.conftest import TINY_BANDS, make_tiny_checkpoint, textured_scene, write_raster
from tests.test_hostile_inputs import _corrupt_tile

OUT = "out.tif"
Case = Callable[[Path], tuple[list[object], list[str]]]


def _float_scene(tmp: Path, fill: Callable[[np.ndarray], None]) -> Path:
    data = textured_scene(40, 40).astype(np.float32) * np.float32(1e-4)
    fill(data)
    return write_raster(tmp / "inf.tif", data, descriptions=TINY_BANDS)


def _set_meta_text(ckpt: Path, text: str) -> Path:
    """Replace the checkpoint's ``geoseg`` metadata string with ``text``."""
    raw = ckpt.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"]["geoseg"] = text
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)  # safetensors wants the data 8-byte aligned
    ckpt.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    return ckpt


def _edit_meta(ckpt: Path, **changes: object) -> Path:
    raw = ckpt.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["geoseg"])
    return _set_meta_text(ckpt, json.dumps({**meta, **changes}))


def _poison_weights(ckpt: Path, name: str, value: float, count: int | None) -> Path:
    """Set ``count`` values (None: all) of tensor ``name`` to ``value``."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(ckpt), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(ckpt))
    flat = tensors[name].view(-1)
    flat[: flat.numel() if count is None else count] = value
    save_file(tensors, str(ckpt), metadata=metadata)
    return ckpt


def _scene(tmp: Path) -> Path:
    return write_raster(tmp / "s.tif", textured_scene(40, 40), descriptions=TINY_BANDS)


def _all_inf_spectral(tmp: Path) -> tuple[list[object], list[str]]:
    def fill(d: np.ndarray) -> None:
        d[:] = np.inf

    scene = _float_scene(tmp, fill)
    return ["predict", scene, "-m", "spectral"], ["every pixel of the input is nodata", "inf.tif"]


def _all_minus_inf_checkpoint(tmp: Path) -> tuple[list[object], list[str]]:
    def fill(d: np.ndarray) -> None:
        d[:] = -np.inf

    scene, ckpt = _float_scene(tmp, fill), make_tiny_checkpoint(tmp / "m.safetensors")
    return ["predict", scene, "-m", ckpt, "--device", "cpu"], ["every pixel of the input"]


def _inf_and_nan(tmp: Path) -> tuple[list[object], list[str]]:
    def fill(d: np.ndarray) -> None:
        d[0, :20] = np.nan
        d[2, 20:] = np.inf

    scene = _float_scene(tmp, fill)
    return ["predict", scene, "-m", "spectral"], ["every pixel of the input is nodata"]


def _nan_weights(tmp: Path) -> tuple[list[object], list[str]]:
    ckpt = _poison_weights(make_tiny_checkpoint(tmp / "m.safetensors"), "encoder.conv1.weight",
                           float("nan"), None)  # fmt: skip
    return ["predict", _scene(tmp), "-m", ckpt, "--device", "cpu"], [
        "m.safetensors", "'encoder.conv1.weight'", "has 12544 of 12544 values non-finite",
    ]  # fmt: skip


def _one_inf_bias(tmp: Path) -> tuple[list[object], list[str]]:
    ckpt = _poison_weights(make_tiny_checkpoint(tmp / "m.safetensors"),
                           "segmentation_head.0.bias", float("-inf"), 1)  # fmt: skip
    return ["predict", _scene(tmp), "-m", ckpt, "--device", "cpu"], [
        "m.safetensors", "'segmentation_head.0.bias'", "has 1 of 3 values non-finite",
    ]  # fmt: skip


def _deep_meta(command: str) -> Case:
    def make(tmp: Path) -> tuple[list[object], list[str]]:
        ckpt = _set_meta_text(make_tiny_checkpoint(tmp / "m.safetensors"),
                              "[" * 200_000 + "]" * 200_000)  # fmt: skip
        args: list[object] = ["predict", _scene(tmp), "-m", ckpt] if command == "predict" else [
            command, ckpt]  # fmt: skip
        return args, ["m.safetensors", "nests 200000 levels deep"]

    return make


def _huge_meta(tmp: Path) -> tuple[list[object], list[str]]:
    ckpt = _edit_meta(make_tiny_checkpoint(tmp / "m.safetensors"), provenance={"x": "y" * 2**21})
    return ["predict", _scene(tmp), "-m", ckpt], ["m.safetensors", "characters, more than"]


def _complex_scene(model: str) -> Case:
    def make(tmp: Path) -> tuple[list[object], list[str]]:
        data = (textured_scene(40, 40) * 1e-4).astype(np.complex64)
        scene = write_raster(tmp / "slc.tif", data, descriptions=TINY_BANDS)
        m: object = make_tiny_checkpoint(tmp / "m.safetensors") if model == "checkpoint" else model
        return ["predict", scene, "-m", m, "--device", "cpu"], ["slc.tif: ", "complex64"]

    return make


def _margin_past_window(tmp: Path) -> tuple[list[object], list[str]]:
    ckpt = _edit_meta(make_tiny_checkpoint(tmp / "m.safetensors"), margin=40)
    return ["predict", _scene(tmp), "-m", ckpt, "--device", "cpu"], [
        "m.safetensors: ", "margin 40 px (from the model)", "window/4 = 16 px",
    ]  # fmt: skip


def _window_not_a_multiple(tmp: Path) -> tuple[list[object], list[str]]:
    ckpt = _edit_meta(make_tiny_checkpoint(tmp / "m.safetensors"), window=66)
    return ["predict", _scene(tmp), "-m", ckpt, "--device", "cpu"], [
        "m.safetensors: ", "window 66 px (from the model)", "multiple of 32", "--window 64",
    ]  # fmt: skip


def _damaged_tile(tmp: Path) -> tuple[list[object], list[str]]:
    scene = _corrupt_tile(tmp)
    with rasterio.open(scene) as src:  # the oracle: read each 64-px tile of band 1 alone
        for index in range(16):
            row, col = divmod(index, 4)
            try:
                src.read(1, window=Window(col * 64, row * 64, 64, 64))
            except RasterioIOError:
                break
    words = f"rows {row * 64}-{row * 64 + 64}, columns {col * 64}-{col * 64 + 64}: TIFF tile "
    words += f"{index} (tile row {row}, column {col}) of band 1"
    ckpt = make_tiny_checkpoint(tmp / "m.safetensors")
    return ["predict", scene, "-m", ckpt, "--device", "cpu"], ["c.tif: cannot read " + words]


def _labels_off_the_image(tmp: Path) -> tuple[list[object], list[str]]:
    from affine import Affine

    image = write_raster(tmp / "img.tif", textured_scene(64, 64), descriptions=TINY_BANDS)
    far = Affine(10, 0, 900_000, 0, -10, 5_100_000)
    labels = write_raster(tmp / "lab.tif", np.ones((1, 64, 64), np.uint8), transform=far)
    classes = tmp / "classes.yaml"
    classes.write_text(
        "- {id: 1, name: a, colour: [1, 2, 3]}\n- {id: 2, name: b, colour: [3, 2, 1]}\n"
    )
    args: list[object] = [
        "train", "--image", image, "--labels", labels, "--classes", classes, "--epochs", "1",
        "--steps-per-epoch", "1", "--device", "cpu",
    ]  # fmt: skip
    return args, ["lab.tif: lies off the image", "img.tif"]


def _plan_case(kind: str) -> Case:
    """``geoseg plan`` (or ``train --auto``) on labels off the image, an image without a
    CRS, or labels with no labelled pixel."""

    def make(tmp: Path) -> tuple[list[object], list[str]]:
        _, words = _labels_off_the_image(tmp)
        image, labels = tmp / "img.tif", tmp / "lab.tif"
        if kind == "no CRS":
            write_raster(image, textured_scene(64, 64), crs=None)
            words = ["img.tif", "no CRS"]
        elif kind == "empty labels":
            write_raster(labels, np.full((1, 64, 64), 255, np.uint8), nodata=255)
            words = ["lab.tif: no labelled pixel", "img.tif"]
        out = ["-o", tmp / "plan.yaml"] if kind != "auto" else ["--auto"]
        command = "plan" if kind != "auto" else "train"
        return [command, "--image", image, "--labels", labels, "--device", "cpu", *out], words

    return make


def _plan_on_other_data(kind: str) -> Case:
    """``train --plan`` of a plan fingerprinted on a 4-band uint16 10 m scene with classes
    1, 2, given other data: 2 bands, float32, 100 m, labels 0/1, or ``--classes`` anew."""

    def make(tmp: Path) -> tuple[list[object], list[str]]:
        data = textured_scene(64, 64)
        labels = np.ones((1, 64, 64), np.uint8)
        labels[:, 32:] = 2
        words = ["plan.yaml: planned on other data", "re-run `geoseg plan` on this data"]
        extra: list[object] = []
        if kind == "bands":
            data, words = data[:2], [*words, "img.tif has 2 band(s) (B02, B03), the plan 4"]
        elif kind == "dtype":
            data, words = data.astype(np.float32), [*words, "img.tif is float32, the plan uint16"]
        elif kind == "labels":
            labels[:, :40] = 0  # "not water": 62 % of the px, no class of the plan
            words += ["lab.tif holds values 0 (62.5%)", "they would be dropped as nodata"]
        elif kind == "classes":
            (tmp / "water.yaml").write_text("- {id: 1, name: water, colour: [0, 0, 255]}\n")
            extra, words = ["--classes", tmp / "water.yaml"], ["plan.yaml: class_weights names"]
        gsd = 100 if kind == "gsd" else 10
        write_raster(tmp / "img.tif", data, descriptions=TINY_BANDS[: len(data)],
                     transform=Affine(gsd, 0, 500000, 0, -gsd, 5100000))  # fmt: skip
        write_raster(tmp / "lab.tif", labels, nodata=255,
                     transform=Affine(gsd, 0, 500000, 0, -gsd, 5100000))  # fmt: skip
        if kind == "gsd":
            words += ["img.tif has a GSD of 100 m, the plan 10 m"]
        (tmp / "plan.yaml").write_text(_PLAN.format(tmp=tmp))
        args = ["train", "--plan", tmp / "plan.yaml", "--image", tmp / "img.tif", "--labels",
                tmp / "lab.tif", *extra]  # fmt: skip
        return args, words

    return make


_PLAN = """images: [{tmp}/planned.tif]
labels: [{tmp}/planned_labels.tif]
classes:
- {{id: 1, name: class_1, colour: [0, 120, 0]}}
- {{id: 2, name: class_2, colour: [0, 0, 200]}}
output: {tmp}/plan.safetensors
epochs: 1
steps_per_epoch: 1
window: 32
device: cpu
class_weights: {{class_1: 2.0}}
provenance:
  plan:
    gsd_m: 10.0
    dtype: uint16
    band_tail_ratio: {{B02: 2.3, B03: 2.3, B04: 2.3, B08: 2.3}}
    class_share: {{'1': 0.5, '2': 0.5}}
"""


def _deep_class_tag(command: str) -> Case:
    def make(tmp: Path) -> tuple[list[object], list[str]]:
        labels = np.zeros((1, 40, 40), np.uint8)
        labels[:, 20:] = 1
        path = write_raster(tmp / "map.tif", labels, nodata=255)
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(GEOSEG_CLASSES="[" * 200_000 + "]" * 200_000)
        args: dict[str, list[object]] = {
            "vectorize": ["vectorize", path, "-o", tmp / "out.gpkg"],
            "info": ["info", path],
            "change": ["change", path, path, "-o", tmp / "report"],
        }
        return args[command], ["map.tif: malformed GEOSEG_CLASSES tag"]

    return make


ERRORS: dict[str, Case] = {
    "all +inf scene": _all_inf_spectral,
    "all -inf scene, checkpoint": _all_minus_inf_checkpoint,
    "NaN in one band, inf in another": _inf_and_nan,
    "all-NaN weights": _nan_weights,
    "one -inf bias": _one_inf_bias,
    "metadata 200 000 deep, predict": _deep_meta("predict"),
    "metadata 200 000 deep, models": _deep_meta("models"),
    "metadata 200 000 deep, info": _deep_meta("info"),
    "metadata of 2 MB": _huge_meta,
    "complex64 scene, spectral": _complex_scene("spectral"),
    "complex64 scene, checkpoint": _complex_scene("checkpoint"),
    "checkpoint margin past window/4": _margin_past_window,
    "checkpoint window not a multiple": _window_not_a_multiple,
    "damaged TIFF tile": _damaged_tile,
    "train labels off the image": _labels_off_the_image,
    "plan labels off the image": _plan_case("off"),
    "plan image without a CRS": _plan_case("no CRS"),
    "plan labels without a labelled pixel": _plan_case("empty labels"),
    "train --auto labels off the image": _plan_case("auto"),
    "train --plan on 2 bands of a 4-band plan": _plan_on_other_data("bands"),
    "train --plan on float32 data of a uint16 plan": _plan_on_other_data("dtype"),
    "train --plan on labels with values outside its classes": _plan_on_other_data("labels"),
    "train --plan on a 10 x coarser GSD": _plan_on_other_data("gsd"),
    "train --plan --classes anew, the plan's class_weights": _plan_on_other_data("classes"),
    "label map classes nested 200 000 deep, vectorize": _deep_class_tag("vectorize"),
    "label map classes nested 200 000 deep, info": _deep_class_tag("info"),
    "label map classes nested 200 000 deep, change": _deep_class_tag("change"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_hostile_values_exit_2_with_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    args, words = ERRORS[case](tmp_path)
    if args[0] in ("predict", "train"):
        args += ["-o", tmp_path / (OUT if args[0] == "predict" else "trained.safetensors")]
    before = set(os.listdir(tmp_path))
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    out = result.output
    assert out.startswith("geoseg: error: ") and out.endswith("\n"), out
    assert out.count("geoseg: error: ") == 1 and "Traceback" not in out, out
    for w in words:
        assert w in out, (w, out)
    assert set(os.listdir(tmp_path)) == before


# --- non-finite pixels are nodata, exactly like NaN --------------------------------------------


@pytest.mark.parametrize("model", ["spectral", "checkpoint"])
@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_pixels_are_nodata_like_nan(tmp_path: Path, model: str, value: float) -> None:
    data = textured_scene(60, 60).astype(np.float32) * np.float32(1e-4)
    holed = {}
    for name, fill in (("inf", value), ("nan", np.nan)):
        d = data.copy()
        d[1, :15] = fill  # one band of the top rows
        d[:, 40:, 40:] = fill  # every band of a corner
        holed[name] = write_raster(tmp_path / f"{name}.tif", d, descriptions=TINY_BANDS)
    m = "spectral" if model == "spectral" else str(make_tiny_checkpoint(tmp_path / "m.st"))
    labels = {}
    for name, scene in holed.items():
        predict_scene(scene, m, tmp_path / f"o_{name}.tif", PredictOptions(device="cpu"))
        with rasterio.open(tmp_path / f"o_{name}.tif") as dst:
            labels[name] = dst.read(1)
    nodata = np.zeros((60, 60), bool)
    nodata[:15] = True
    nodata[40:, 40:] = True
    np.testing.assert_array_equal(labels["inf"] == 255, nodata)
    np.testing.assert_array_equal(labels["inf"], labels["nan"])


def test_training_raster_counts_inf_as_nodata(tmp_path: Path) -> None:
    from geoseg.io.training_data import read_labelled_raster

    data = textured_scene(20, 20).astype(np.float32)
    data[0, :5] = np.inf
    image = write_raster(tmp_path / "i.tif", data, descriptions=TINY_BANDS)
    labels = write_raster(tmp_path / "l.tif", np.ones((1, 20, 20), np.uint8))
    r = read_labelled_raster(image, labels)
    assert r.valid[:5].sum() == 0 and r.valid[5:].all()
    assert np.isfinite(r.image[:, r.valid]).all()


# --- guessed band orders and scenes outside a model's training data ----------------------------


def _satellite_rgb(seed: int = 0) -> np.ndarray:
    """``(3, 96, 96) uint16`` R, G, B reflectance x 10000: dark blue water, fields, soil."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((3, 96, 96), np.float64)
    rgb[:, :, :30] = np.array([0.02, 0.04, 0.07])[:, None, None]  # water
    rgb[:, :48, 30:] = np.array([0.04, 0.09, 0.035])[:, None, None]  # vegetation
    rgb[:, 48:, 30:] = np.array([0.20, 0.16, 0.11])[:, None, None]  # bare soil
    rgb *= rng.uniform(0.9, 1.1, size=(1, 96, 96))
    return (rgb * 10_000).astype(np.uint16)


def _farmland_rgb(seed: int = 0) -> np.ndarray:
    """``(3, 96, 96) uint16`` bare fields of varied brightness, browner than grey."""
    rng = np.random.default_rng(seed)
    gain = rng.uniform(0.7, 1.3, size=(1, 96, 96))
    return (np.array([0.20, 0.16, 0.11])[:, None, None] * gain * 10_000).astype(np.uint16)


def _unnamed(tmp: Path, data: np.ndarray, name: str = "s.tif", **kw: object) -> Path:
    return write_raster(tmp / name, data, photometric="minisblack", **kw)


WARNINGS: dict[str, tuple[Callable[[Path], Path], dict[str, object], str | None]] = {
    "R, G, B scene, unnamed": (lambda t: _unnamed(t, _satellite_rgb()), {}, None),
    "B, G, R scene, unnamed": (
        lambda t: _unnamed(t, _satellite_rgb()[::-1]), {},
        "darkest pixels (water, shadow) are redder than blue",
    ),
    "B, G, R scene, 8-bit with GDAL's default R, G, B colour interpretation": (
        lambda t: write_raster(t / "s.tif", (_satellite_rgb()[::-1] // 40).astype(np.uint8)),
        {}, "darkest pixels (water, shadow) are redder than blue",
    ),
    "B, G, R farmland, unnamed (a one-class map)": (
        lambda t: _unnamed(t, _farmland_rgb()[::-1]), {},
        "100.0 % of the valid pixels are water",
    ),
    "B, G, R farmland, bands named": (
        lambda t: _unnamed(t, _farmland_rgb()[::-1], descriptions=("blue", "green", "red")), {},
        None,
    ),
    "B, G, R scene, --bands given": (
        lambda t: _unnamed(t, _satellite_rgb()[::-1]),
        {"band_roles": {"red": 3, "green": 2, "blue": 1}}, None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(WARNINGS))
def test_guessed_band_order_warns_only_when_contradicted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    make, options, words = WARNINGS[case]
    scene = make(tmp_path)
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        predict_scene(scene, "spectral", tmp_path / OUT, PredictOptions(**options))  # type: ignore[arg-type]
    order = [
        r.getMessage() for r in caplog.records if "--bands red=3,green=2,blue=1" in r.getMessage()
    ]
    if words is None:
        assert order == [], order
    else:
        assert len(order) == 1 and words in order[0] and "s.tif" in order[0], order


@pytest.mark.parametrize(("value", "warns"), [(None, False), (30_000, True), (1, False)])
def test_scene_far_outside_the_checkpoints_normalisation_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, value: int | None, warns: bool
) -> None:
    # the tiny model was trained on reflectance 0.2 +- 0.1: 3.0 is 28 sigmas off, 0.0001 is 2
    data = textured_scene(40, 40)
    if value is not None:
        data[:] = value
    scene = write_raster(tmp_path / "s.tif", data, descriptions=TINY_BANDS)
    ckpt = make_tiny_checkpoint(tmp_path / "m.safetensors")
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        predict_scene(scene, str(ckpt), tmp_path / OUT, PredictOptions(device="cpu"))
    hits = [r.getMessage() for r in caplog.records if "standard deviations" in r.getMessage()]
    if not warns:
        assert hits == []
    else:
        assert len(hits) == 1
        assert re.search(
            r"s\.tif: band B02 has a median of 3 here, 28\.0 standard deviations", hits[0]
        )
        assert "m.safetensors was trained on" in hits[0]


def test_cli_prints_the_band_order_warning_as_one_line(tmp_path: Path) -> None:
    scene = _unnamed(tmp_path, _satellite_rgb()[::-1])
    run = subprocess.run(
        [sys.executable, "-c", "from geoseg.cli import main; main()", "predict", str(scene),
         "-m", "spectral", "-o", str(tmp_path / OUT)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [s for s in run.stderr.splitlines() if "--bands red=3,green=2,blue=1" in s]
    assert len(lines) == 1 and lines[0].startswith("geoseg: WARNING: ")


def test_real_landsat_scene_is_silent_and_its_bgr_copy_warns(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    original = shared_data / "landsat7_rgb_byte" / "RGB.byte.tif"
    with rasterio.open(original) as src:
        profile, data = src.profile, src.read()
    copy = tmp_path / "bgr.tif"
    with rasterio.open(copy, "w", **profile) as dst:  # GDAL tags it R, G, B all the same
        dst.write(data[::-1])
    found = {}
    for scene in (original, copy):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="geoseg"):
            predict_scene(scene, "spectral", tmp_path / f"o_{scene.name}", PredictOptions())
        found[scene.name] = [r.getMessage() for r in caplog.records if "--bands" in r.getMessage()
                             and "red=3" in r.getMessage()]  # fmt: skip
    assert found["RGB.byte.tif"] == []
    assert len(found["bgr.tif"]) == 1 and "redder than blue" in found["bgr.tif"][0]
