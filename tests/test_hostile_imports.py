"""Hostile ``geoseg import`` options and imported models: one line, exit 2, nothing written."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import CheckpointError, GeosegError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.types import Normalization
from tests.conftest import TINY_BANDS, make_tiny_checkpoint
from tests.models.onnx_graphs import conv_graph, write_classes

BANDS = ",".join(TINY_BANDS)


def cli_run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def _import(tmp_path: Path, *extra: object, out: str = "m.safetensors") -> tuple[int, str]:
    graph = conv_graph(tmp_path / "g.onnx")
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
    if key == "gsd_m":
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
