"""Hostile and odd inputs to `geoseg predict`: a clear error (exit 2) or a correct result.

Never a traceback, a hang or a half-written file.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from click.testing import CliRunner
from safetensors import safe_open

from geoseg.cli import cli
from tests.conftest import TINY_BANDS, make_tiny_checkpoint, textured_scene, write_raster

TILED = {"tiled": True, "blockxsize": 64, "blockysize": 64}


def _truncated_uncompressed(tmp: Path) -> Path:
    path = write_raster(tmp / "t.tif", textured_scene(200, 200), descriptions=TINY_BANDS)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return path


def _truncated_compressed(tmp: Path) -> Path:
    path = write_raster(
        tmp / "t.tif",
        textured_scene(256, 256),
        descriptions=TINY_BANDS,
        compress="deflate",
        **TILED,
    )
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def _corrupt_tile(tmp: Path) -> Path:
    path = write_raster(
        tmp / "c.tif",
        textured_scene(256, 256),
        descriptions=TINY_BANDS,
        compress="deflate",
        **TILED,
    )
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4000] = np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def _huge_declared(tmp: Path) -> Path:
    path = tmp / "huge.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=100_000, height=100_000, count=4, dtype="uint16",
        crs="EPSG:32633", transform=Affine(10, 0, 0, 0, -10, 0), SPARSE_OK="TRUE", **TILED,
    ):  # fmt: skip
        pass
    return path


def _south_up(tmp: Path) -> Path:
    return write_raster(
        tmp / "s.tif", textured_scene(40, 40), transform=Affine(10, 0, 0, 0, 10, 0),
        descriptions=TINY_BANDS,
    )  # fmt: skip


def _zero_size(tmp: Path) -> Path:
    path = tmp / "zero.vrt"
    path.write_text(
        '<VRTDataset rasterXSize="0" rasterYSize="0"><SRS>EPSG:4326</SRS>'
        '<VRTRasterBand dataType="Byte" band="1"/></VRTDataset>'
    )
    return path


ERRORS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated uncompressed": (_truncated_uncompressed, "not a raster GDAL can read"),
    "truncated compressed": (_truncated_compressed, "download it again"),
    "corrupt tile": (_corrupt_tile, "cannot read rows"),
    "huge declared size": (_huge_declared, "truncated"),
    "south-up": (_south_up, "not north-up"),
    "zero size": (_zero_size, "empty"),
}


def _predict(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["predict", *map(str, args)])
    return result.exit_code, result.output


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_file_gets_one_line_and_no_output(
    tmp_path: Path, tiny_checkpoint: Path, case: str
) -> None:
    make, words = ERRORS[case]
    scene = make(tmp_path)
    before = set(os.listdir(tmp_path))
    code, out = _predict(scene, "-m", tiny_checkpoint, "-o", tmp_path / "o.tif", "--device", "cpu")
    assert code == 2, out
    assert out.startswith("geoseg: error: ") and out.count("\n") == 1, out
    assert words in out and scene.name in out
    assert set(os.listdir(tmp_path)) == before


@pytest.mark.parametrize(
    ("name", "dtype", "nodata"),
    [("uint16", "uint16", 0), ("float32", "float32", -9999.0), ("nan", "float32", float("nan"))],
)
def test_dtypes_and_nodata_kinds_give_correct_masks(
    tmp_path: Path, name: str, dtype: str, nodata: float
) -> None:
    data = textured_scene(50, 60).astype(dtype)
    if dtype == "float32":
        data = data * np.float32(1e-4)
    data[:, :10, :] = nodata
    scene = write_raster(tmp_path / f"{name}.tif", data, nodata=nodata, descriptions=TINY_BANDS)
    out = tmp_path / "o.tif"
    code, text = _predict(scene, "-m", "spectral", "-o", out)
    assert code == 0, text
    with rasterio.open(out) as dst:
        labels = dst.read(1)
    assert (labels[:10] == 255).all() and (labels[10:] != 255).all()


@pytest.mark.parametrize("shape", [(1, 1), (20, 30)])
def test_scenes_smaller_than_a_window_are_predicted(
    tmp_path: Path, tiny_checkpoint: Path, shape: tuple[int, int]
) -> None:
    from geoseg.models.runtime import load_torch_predictor
    from geoseg.types import TileSpec
    from tests.conftest import TINY_SCHEMA
    from tests.reference import reference_labels

    data = textured_scene(*shape) if shape != (1, 1) else np.full((4, 1, 1), 1500, np.uint16)
    scene = write_raster(tmp_path / "small.tif", data, descriptions=TINY_BANDS)
    out = tmp_path / "o.tif"
    code, text = _predict(scene, "-m", tiny_checkpoint, "-o", out, "--device", "cpu")
    assert code == 0, text
    with rasterio.open(out) as dst:
        labels = dst.read(1)
    model = load_torch_predictor(tiny_checkpoint, "cpu")
    valid = np.ones(shape, bool)
    expected = reference_labels(data, valid, TileSpec(64, 8), model, TINY_SCHEMA.ids)
    np.testing.assert_array_equal(labels, expected)


def _rewrite_metadata(path: Path, edit: Callable[[dict[str, object]], None]) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["geoseg"])
    edit(meta)
    header["__metadata__"]["geoseg"] = json.dumps(meta)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def _drop_a_class(meta: dict[str, object]) -> None:
    classes = meta["classes"]
    assert isinstance(classes, list)
    classes.pop()


def _bad_std(meta: dict[str, object]) -> None:
    norm = meta["normalization"]
    assert isinstance(norm, dict)
    norm["std"] = [0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("case", "words"),
    [("fewer classes", "do not fit"), ("zero std", "damaged geoseg metadata"),
     ("pickle", "pickle"), ("truncated", "safetensors"),
     ("weight byte", "do not match the digest"), ("negated weights", "do not match the digest")],
)  # fmt: skip
def test_tampered_checkpoints_are_refused(tmp_path: Path, case: str, words: str) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "m.safetensors")
    if case == "fewer classes":
        _rewrite_metadata(ckpt, _drop_a_class)
    elif case == "zero std":
        _rewrite_metadata(ckpt, _bad_std)
    elif case == "pickle":
        ckpt.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    elif case == "weight byte":
        data = bytearray(ckpt.read_bytes())
        data[-len(data) // 3] ^= 0x40  # inside the tensor data, past the header
        ckpt.write_bytes(bytes(data))
    elif case == "negated weights":
        _negate_last_tensor(ckpt)
    else:
        ckpt.write_bytes(ckpt.read_bytes()[:100])
    scene = write_raster(tmp_path / "s.tif", textured_scene(30, 30), descriptions=TINY_BANDS)
    before = _snapshot(tmp_path)
    code, out = _predict(scene, "-m", ckpt, "-o", tmp_path / "o.tif", "--device", "cpu")
    assert code == 2 and words in out, out
    assert _snapshot(tmp_path) == before, "the folder changed: no output, part or lock is left"


def _negate_last_tensor(path: Path) -> None:
    """Flip the sign bit of every float32 of the last tensor in the file, header untouched."""
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    begin, end = max(
        (v["data_offsets"] for k, v in header.items() if k != "__metadata__"), key=lambda o: o[0]
    )
    values = np.frombuffer(bytes(raw[8 + n + begin : 8 + n + end]), np.float32)
    raw[8 + n + begin : 8 + n + end] = (-values).tobytes()
    path.write_bytes(bytes(raw))


def test_a_checkpoint_without_a_weights_digest_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from safetensors.torch import save_file

    from geoseg.io.checkpoint import load_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "m.safetensors")
    tensors, _ = load_checkpoint(ckpt)
    with safe_open(str(ckpt), framework="pt") as f:
        header = {"geoseg": f.metadata()["geoseg"]}  # as geoseg wrote before the digest
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=header)
    again, _ = load_checkpoint(tmp_path / "old.safetensors")
    assert all(bool((again[k] == tensors[k]).all()) for k in tensors)
    assert "carries no weights digest" in caplog.text


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too) -> its bytes (None for a folder)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }
