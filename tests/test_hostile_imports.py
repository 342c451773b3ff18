"""Hostile ``geoseg import`` options and imported models: one line, exit 2, nothing written."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import CheckpointError, GeosegError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.types import Normalization
from tests.conftest import TINY_BANDS, make_tiny_checkpoint, textured_scene, write_raster
from tests.models.onnx_graphs import conv_graph, write_classes

BANDS = ",".join(TINY_BANDS)


def cli_run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def _import(
    tmp_path: Path, *extra: object, out: str = "m.safetensors", softmax: bool = False
) -> tuple[int, str]:
    graph = conv_graph(tmp_path / "g.onnx", softmax=softmax)
    classes = write_classes(tmp_path / "classes.yaml", ["forest", "water", "urban"])
    return cli_run("import", graph, "-o", tmp_path / out, "--classes", classes,
                   "--window", 32, "--margin", 4, *extra)  # fmt: skip


# --- 1. option values that would make a broken checkpoint ------------------------------


@pytest.mark.parametrize(
    ("extra", "out", "words"),
    [
        (["--mean", "nan,0,0,0"], "m.safetensors", "--mean nan is not a finite"),
        (["--mean", "0,inf,0,0"], "m.safetensors", "--mean inf is not a finite"),
        (["--std", "1,0,1,1"], "m.safetensors", "--std values must be > 0"),
        (["--std", "1,-2,1,1"], "m.safetensors", "--std values must be > 0"),
        (["--std", "1,nan,1,1"], "m.safetensors", "--std nan is not a finite"),
        (["--scale", "inf"], "m.safetensors", "--scale must be a finite number > 0"),
        (["--scale", "nan"], "m.safetensors", "--scale must be a finite number > 0"),
        (["--scale", "0"], "m.safetensors", "--scale must be a finite number > 0"),
        (["--gsd", "-3"], "m.safetensors", "--gsd must be a finite number of metres > 0"),
        (["--gsd", "0"], "m.safetensors", "--gsd must be a finite number of metres > 0"),
        (["--gsd", "nan"], "m.safetensors", "--gsd must be a finite number of metres > 0"),
        (["--bands", "B02,B02,B04,B08"], "m.safetensors", "--bands names B02 more than once"),
        ([], "b.tif", "name the output b.safetensors"),
    ],
    ids=["mean-nan", "mean-inf", "std-0", "std-neg", "std-nan", "scale-inf", "scale-nan",
         "scale-0", "gsd-neg", "gsd-0", "gsd-nan", "dup-bands", "tif-output"],
)  # fmt: skip
def test_bad_import_options_are_refused(
    tmp_path: Path, extra: list[str], out: str, words: str
) -> None:
    bands = [] if "--bands" in extra else ["--bands", BANDS]
    code, text = _import(tmp_path, *bands, *extra, out=out)
    assert code == 2 and words in text, text
    assert len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / out).exists()


@pytest.mark.parametrize(
    ("mean", "std", "scale"),
    [((float("nan"),), (1.0,), 1.0), ((0.0,), (float("inf"),), 1.0), ((0.0,), (-1.0,), 1.0),
     ((0.0,), (1.0,), 0.0), ((0.0,), (1.0,), float("inf"))],
    ids=["mean-nan", "std-inf", "std-neg", "scale-0", "scale-inf"],
)  # fmt: skip
def test_normalization_refuses_non_finite_and_non_positive(
    mean: tuple[float, ...], std: tuple[float, ...], scale: float
) -> None:
    with pytest.raises(GeosegError):
        Normalization(mean, std, scale)


def _rewrite_metadata(path: Path, key: str, value: object) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["geoseg"])
    if key in ("gsd_m", "task"):
        meta[key] = value
    else:
        meta["normalization"][key] = value
    header["__metadata__"]["geoseg"] = json.dumps(meta)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


@pytest.mark.parametrize(
    ("key", "value"),
    [("mean", [float("nan"), 0.0, 0.0, 0.0]), ("std", [1.0, float("inf"), 1.0, 1.0]),
     ("std", [1.0, -1.0, 1.0, 1.0]), ("scale", 0.0), ("gsd_m", -3.0)],
    ids=["mean-nan", "std-inf", "std-neg", "scale-0", "gsd-neg"],
)  # fmt: skip
def test_checkpoint_with_bad_normalization_is_refused_on_load(
    tmp_path: Path, key: str, value: object
) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "m.safetensors")
    _rewrite_metadata(ckpt, key, value)
    with pytest.raises(CheckpointError, match="damaged geoseg metadata"):
        read_checkpoint_meta(ckpt)


# --- 2. role-named bands (red, green, blue, nir) match Sentinel-2 names -------------------

S2_NAMES = ("B02", "B03", "B04", "B08")
ROLE_NAMES = ("blue", "green", "red", "nir")


@pytest.mark.parametrize(
    ("model_bands", "file_names", "order"),
    [(S2_NAMES, ("red", "green", "blue", "nir"), (2, 1, 0, 3)),
     (S2_NAMES, ("nir", "Blue", "RED", "green"), (1, 3, 2, 0)),
     (ROLE_NAMES, ("B04", "B3", "B02", "B08"), (2, 1, 0, 3)),
     (("blue", "green", "red", "swir16"), ("B11", "B02", "B03", "B04"), (1, 2, 3, 0))],
    ids=["roles-file-s2-model", "mixed-case-roles", "s2-file-role-model", "swir16-is-b11"],
)  # fmt: skip
def test_role_named_bands_feed_an_s2_model_by_name(
    tmp_path: Path, model_bands: tuple[str, ...], file_names: tuple[str, ...],
    order: tuple[int, ...],
) -> None:  # fmt: skip
    code, text = _import(tmp_path, "--bands", ",".join(model_bands), "--scale", 10000,
                         "--mean", "0.2,0.2,0.2,0.2", "--std", "0.1,0.1,0.1,0.1")  # fmt: skip
    assert code == 0, text
    data = textured_scene(40, 48)
    # the reference file holds the model's bands in its order, under its own names
    ref = write_raster(tmp_path / "ref.tif", data, descriptions=model_bands)
    stored = np.empty_like(data)
    for k, i in enumerate(order):
        stored[i] = data[k]  # model band k is file band order[k]
    scene = write_raster(tmp_path / "named.tif", stored, descriptions=file_names)
    maps = []
    for src, out in ((ref, "ref_out.tif"), (scene, "out.tif")):
        code, text = cli_run("predict", src, "-m", tmp_path / "m.safetensors", "-o",
                             tmp_path / out)  # fmt: skip
        assert code == 0 and "differ" not in text, text
        with rasterio.open(tmp_path / out) as f:
            maps.append(f.read(1))
    assert len(np.unique(maps[0])) > 1
    np.testing.assert_array_equal(maps[1], maps[0])


@pytest.mark.parametrize(
    ("names", "model", "keys"),
    [(("red", "B04"), S2_NAMES, ["red", "b4"]),  # two "B04"s: no translation
     (("red", "nir"), ("R", "N"), ["red", "nir"]),  # not S2 names: no translation
     (("rededge", "nir08"), S2_NAMES, ["rededge", "nir08"])],  # fit several S2 bands
    ids=["duplicate", "foreign-model", "ambiguous-roles"],
)  # fmt: skip
def test_role_names_are_translated_only_where_unambiguous(
    names: tuple[str, ...], model: tuple[str, ...], keys: list[str]
) -> None:
    from geoseg.models.bands import band_match_keys

    assert band_match_keys(names, model)[0] == keys


# --- 3. messages: article and task hint, plurals, onnxruntime reasons, band hints ---------


def _predict_msg(tmp_path: Path, case: str) -> str:
    """Run the ``case`` and return its output (it must fail with exit 2, one line)."""
    ckpt = make_tiny_checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "o.tif"
    if case == "instance-as-semantic":
        _rewrite_metadata(ckpt, "task", "instance")
        scene = write_raster(tmp_path / "s.tif", textured_scene(30, 30), descriptions=TINY_BANDS)
        code, text = cli_run("predict", scene, "-m", ckpt, "-o", out, "--task", "semantic")
    elif case == "one-band-graph":
        graph = conv_graph(tmp_path / "g1.onnx", bands=1)
        classes = write_classes(tmp_path / "classes.yaml", ["forest", "water", "urban"])
        code, text = cli_run("import", graph, "-o", tmp_path / "g1.safetensors", "--classes",
                             classes, "--bands", "B02,B03")  # fmt: skip
        out = tmp_path / "g1.safetensors"
    else:
        count = {"s2-13-unnamed": 13, "5-unnamed": 5}[case]
        scene = write_raster(tmp_path / "s.tif", textured_scene(30, 30, bands=count))
        code, text = cli_run("predict", scene, "-m", ckpt, "-o", out)
    assert code == 2 and len(text.strip().splitlines()) == 1, text
    assert not out.exists()
    return text


@pytest.mark.parametrize(
    ("case", "words", "not_words"),
    [("instance-as-semantic",
      ["is an instance model", "trained for semantic (`geoseg train --task semantic`)"],
      ["a instance", "--task instance`"]),
     ("one-band-graph", ["the ONNX input takes 1 band, --bands lists 2"], ["1 bands"]),
     ("s2-13-unnamed", ["needs 4 bands", "e.g. --bands 2,3,4,8 if it is a Sentinel-2 stack"],
      ["--bands 1,2,3,4"]),
     ("5-unnamed", ["needs 4 bands", "with --bands (1-based band numbers)"], ["e.g. --bands"])],
    ids=["instance-as-semantic", "one-band-graph", "s2-13-unnamed", "5-unnamed"],
)  # fmt: skip
def test_messages_say_the_right_thing(
    tmp_path: Path, case: str, words: list[str], not_words: list[str]
) -> None:
    text = _predict_msg(tmp_path, case)
    for w in words:
        assert w in text, text
    for w in not_words:
        assert w not in text, text


def test_onnx_runtime_reason_is_quoted_whole(tmp_path: Path) -> None:

    from geoseg.models.onnx_runtime import load_onnx_predictor

    graph = conv_graph(tmp_path / "fixed.onnx", size=32, batch=1)
    classes = write_classes(tmp_path / "classes.yaml", ["forest", "water", "urban"])
    model = tmp_path / "f.safetensors"
    code, text = cli_run("import", graph, "-o", model, "--classes", classes, "--bands", BANDS)
    assert code == 0, text
    predictor = load_onnx_predictor(model, read_checkpoint_meta(model), "cpu")
    with pytest.raises(CheckpointError) as info:
        predictor.run(np.zeros((1, 4, 64, 64), np.float32))
    message = str(info.value)
    assert "index: 2 Got: 64 Expected: 32 index: 3 Got: 64 Expected: 32);" in message, message
    assert "ONNXRuntimeError" not in message and "Please fix" not in message, message


# --- 4. a pickle carrying code is named as such ---------------------------------------------


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo pwned > pwned.txt",))


@pytest.mark.parametrize(
    ("how", "words"),
    [("pickle", "a Python pickle that needs code to load (it calls posix.system)"),
     ("torch-save", "a Python pickle that needs code to load (it calls posix.system)"),
     ("noise", "not a PyTorch weights file that torch.load(weights_only=True) reads"),
     ("text", "not a PyTorch weights file or a safetensors file")],
    ids=["plain-pickle", "torch-save", "not-a-pickle", "text-file"],
)  # fmt: skip
def test_code_carrying_pth_is_called_a_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, words: str
) -> None:
    import pickle

    import torch

    from geoseg.io.state_dicts import read_state_dict

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "w.pth"
    if how == "pickle":
        path.write_bytes(pickle.dumps({"w": _Payload()}, protocol=4))
    elif how == "torch-save":
        torch.save({"w": _Payload()}, path)
    elif how == "text":  # torch's legacy reader took it for a pickle: KeyError 101
        path.write_text("hello, this is not a checkpoint\n" * 40)
    else:
        path.write_bytes(b"\x80\x04" + bytes(range(200)))
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert words in str(info.value), info.value
    assert "refuses to run it" in str(info.value) or how in ("noise", "text")
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize(
    ("softmax", "outputs", "words"),
    [(False, "probabilities", "not probabilities; leave --outputs at logits"),
     (True, "logits", "pass --outputs probabilities"),
     (True, "probabilities", None), (False, "logits", None)],
    ids=["logits-said-probabilities", "probabilities-said-logits", "probabilities", "logits"],
)  # fmt: skip
def test_outputs_must_say_what_the_graph_gives(
    tmp_path: Path, softmax: bool, outputs: str, words: str | None
) -> None:
    code, text = _import(tmp_path, "--bands", BANDS, "--outputs", outputs, softmax=softmax)
    if words is None:
        assert code == 0, text
        assert (tmp_path / "m.safetensors").exists()
    else:
        assert code == 2 and words in text, text
        assert len(text.strip().splitlines()) == 1, text
        assert not (tmp_path / "m.safetensors").exists()
