"""Tests for safetensors checkpoints with geoseg metadata (geoseg/io/checkpoint.py)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from geoseg.errors import CheckpointError, GeosegError, InputNotFoundError, OutputExistsError
from geoseg.io.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from geoseg.types import ClassInfo, ClassSchema, ModelMeta, Normalization

SCHEMA = ClassSchema(
    (
        ClassInfo(0, "water", (31, 120, 180)),
        ClassInfo(3, "forest", (51, 160, 44)),
        ClassInfo(7, "building", (227, 26, 28), is_thing=True),
    )
)
META = ModelMeta(
    task="semantic",
    arch="unet",
    encoder="resnet18",
    bands=("B02", "B03", "B04", "B08"),
    normalization=Normalization(
        mean=(0.1, 0.2, 0.3, 0.4), std=(0.05, 0.06, 0.07, 0.08), scale=1e-4
    ),
    schema=SCHEMA,
    window=384,
    margin=48,
    gsd_m=10.0,
    provenance={"data": "s2-tiles-2024", "epochs": 12, "versions": {"torch": "2.x"}},
    metrics={"miou": 0.71, "per_class_f1": [0.9, 0.8, 0.6]},
    options={"decoder_attention_type": "scse"},
)


def tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "encoder.conv1.weight": torch.randn(8, 4, 3, 3, generator=gen),
        "encoder.bn1.running_mean": torch.randn(8, generator=gen),
        "encoder.bn1.num_batches_tracked": torch.tensor(17, dtype=torch.int64),
        "head.bias": torch.randn(3, generator=gen).to(torch.float16),
    }


def leftovers(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden temporaries included."""
    return sorted(p.name for p in folder.iterdir())


def write_safetensors(path: Path, metadata: dict[str, str] | None) -> Path:
    save_file({"w": torch.ones(2, 2)}, str(path), metadata=metadata)
    return path


def geoseg_json(**changes: Any) -> dict[str, Any]:
    d = {"format": FORMAT_VERSION, **META.to_json()}
    d.update(changes)
    return d


# --- round trip ----------------------------------------------------------------------


def test_round_trip_keeps_meta_and_tensors(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    original = tensors()

    returned = save_checkpoint(path, original, META)
    loaded, meta = load_checkpoint(path)

    assert returned == path
    assert meta == META
    assert meta.normalization.scale == 1e-4
    assert meta.provenance["versions"] == {"torch": "2.x"}
    assert meta.metrics["per_class_f1"] == [0.9, 0.8, 0.6]
    assert meta.options == {"decoder_attention_type": "scse"}
    assert meta.schema.classes[2].is_thing
    assert set(loaded) == set(original)
    for key, value in original.items():
        assert loaded[key].dtype == value.dtype
        assert torch.equal(loaded[key], value), key
    assert leftovers(tmp_path) == ["model.safetensors"]


def test_read_meta_matches_load(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tensors(), META)
    assert read_checkpoint_meta(path) == META


def test_non_contiguous_and_grad_tensors_are_saved(tmp_path: Path) -> None:
    weight = torch.arange(12.0).reshape(3, 4).t()  # non-contiguous view
    param = torch.nn.Parameter(torch.full((2,), 0.5))
    path = save_checkpoint(tmp_path / "m.safetensors", {"w": weight, "p": param}, META)

    loaded, _ = load_checkpoint(path)

    assert torch.equal(loaded["w"], weight)
    assert torch.equal(loaded["p"], torch.full((2,), 0.5))


def test_metadata_is_plain_json_in_the_safetensors_header(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tensors(), META)
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    stored = json.loads(header["__metadata__"]["geoseg"])
    assert stored["format"] == FORMAT_VERSION
    assert stored["arch"] == "unet"
    assert stored["bands"] == ["B02", "B03", "B04", "B08"]


# --- refusals ------------------------------------------------------------------------


def test_missing_file_is_input_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="no such model file") as info:
        load_checkpoint(tmp_path / "nope.safetensors")
    assert isinstance(info.value, FileNotFoundError)


def test_torch_save_zip_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2)}, path)
    assert path.read_bytes()[:2] == b"PK"

    with pytest.raises(CheckpointError, match="pickle/zip") as info:
        load_checkpoint(path)

    assert str(path) in str(info.value)
    # the way in: geoseg import (SAM's .pth/.pt) or an ONNX export; import tells the kind
    # by the suffix, so a .safetensors name is asked to be renamed first
    assert "is a PyTorch file (torch.save: a pickle/zip)" in str(info.value)
    assert (
        f"rename it model.pth, then `geoseg import {tmp_path / 'model.pth'} -o model.safetensors"
        in str(info.value)
    )
    assert "torch.onnx.export" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_torch_pt_file_is_told_how_to_come_in(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_meta(path)
    assert str(info.value).startswith(f"{path}: is a PyTorch file")
    assert f"(`geoseg import {path} -o model.safetensors --bands R,G,B`)" in str(info.value)


def _onnx_head() -> bytes:
    """The first bytes torch.onnx.export writes: ir_version 9, producer_name "pytorch"."""
    return b"\x08\x09\x12\x07pytorch\x1a\x062.14.1:" + bytes(200)


@pytest.mark.parametrize(
    ("name", "content", "rename"),
    [
        ("classifier.onnx", _onnx_head(), ""),  # the trial's: "header too large" before
        ("classifier.onnx", b"\x01garbage", ""),  # by its name alone
        ("classifier.bin", _onnx_head(), "rename it classifier.onnx, then "),  # by its bytes
    ],
    ids=["onnx-named-and-bytes", "onnx-named", "onnx-bytes"],
)
def test_an_onnx_graph_is_told_to_go_through_geoseg_import(
    tmp_path: Path, name: str, content: bytes, rename: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_meta(path)
    source = tmp_path / "classifier.onnx"
    assert str(info.value) == (
        f"{path}: is an ONNX graph, not a geoseg checkpoint; {rename}bring it in once with "
        f"`geoseg import {source} -o model.safetensors --bands B04,B03,B02 --classes "
        "classes.yaml` (the scene band of each input channel, and one class per output), "
        "then predict with -m model.safetensors"
    )


class _Boom:
    """Unpickling this would raise: proves the file is never unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, ())


def _explode() -> None:
    raise AssertionError("the checkpoint was unpickled")


def test_raw_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"w": _Boom()}))

    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    data = np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(b"\x01" + data)  # not a pickle opcode, not "PK"

    with pytest.raises(CheckpointError, match="not a safetensors file") as info:
        read_checkpoint_meta(path)

    assert str(path) in str(info.value)


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tensors(), META)
    path.write_bytes(path.read_bytes()[:-50])

    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_foreign_safetensors_is_refused(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "foreign.safetensors", None)

    with pytest.raises(CheckpointError, match="without geoseg metadata") as info:
        load_checkpoint(path)

    assert str(path) in str(info.value)
    # `geoseg train` converts nothing; the fix for a foreign file is `geoseg import`
    assert f"`geoseg import {tmp_path} -o model.safetensors" in str(info.value)
    assert "convert the model" not in str(info.value)


def test_foreign_metadata_without_geoseg_key_is_refused(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "hf.safetensors", {"format": "pt"})
    with pytest.raises(CheckpointError, match="without geoseg metadata"):
        read_checkpoint_meta(path)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, "1"])
def test_wrong_format_version_is_refused(tmp_path: Path, version: Any) -> None:
    path = write_safetensors(
        tmp_path / "m.safetensors", {"geoseg": json.dumps(geoseg_json(format=version))}
    )

    with pytest.raises(CheckpointError, match="checkpoint format") as info:
        load_checkpoint(path)

    assert f"reads {FORMAT_VERSION}" in str(info.value)


def test_geoseg_metadata_without_a_format_version_is_not_ours(tmp_path: Path) -> None:
    """Not "format None ... upgrade geoseg": no geoseg ever wrote a file without one."""
    d = geoseg_json()
    del d["format"]
    path = write_safetensors(tmp_path / "m.safetensors", {"geoseg": json.dumps(d)})
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_meta(path)
    assert str(info.value) == (
        f"{path}: its 'geoseg' metadata has no format version, so it was not written by "
        "geoseg (or is damaged); use a model geoseg wrote (`geoseg train`, `geoseg import`)"
    )


def test_invalid_json_is_refused(tmp_path: Path) -> None:
    text = json.dumps(geoseg_json())[:-10]
    path = write_safetensors(tmp_path / "m.safetensors", {"geoseg": text})

    with pytest.raises(CheckpointError, match="malformed metadata JSON: not JSON") as info:
        load_checkpoint(path)

    assert str(path) in str(info.value)


@pytest.mark.parametrize("key", ["bands", "normalization", "classes", "arch"])
def test_metadata_missing_a_key_is_refused(tmp_path: Path, key: str) -> None:
    d = geoseg_json()
    del d[key]
    path = write_safetensors(tmp_path / "m.safetensors", {"geoseg": json.dumps(d)})

    with pytest.raises(CheckpointError, match="damaged geoseg metadata") as info:
        load_checkpoint(path)

    assert key in str(info.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"classes": [{"id": 0, "name": "a", "colour": [1, 2, 3]}] * 2},  # duplicate ids
        {"normalization": {"mean": [0.0], "std": [0.0]}},  # std 0
        {"bands": 5},  # not a list
        {"window": "big"},
    ],
    ids=["duplicate-class", "zero-std", "bands-not-list", "window-not-int"],
)
def test_invalid_metadata_values_are_checkpoint_errors(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    path = write_safetensors(
        tmp_path / "m.safetensors", {"geoseg": json.dumps(geoseg_json(**changes))}
    )
    with pytest.raises(CheckpointError):
        read_checkpoint_meta(path)


def test_metadata_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", {"geoseg": "[1, 2]"})
    with pytest.raises(CheckpointError, match="damaged"):
        read_checkpoint_meta(path)


# --- overwrite and atomicity ------------------------------------------------------------


def test_existing_output_is_refused_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"precious")

    with pytest.raises(OutputExistsError, match="overwrite") as info:
        save_checkpoint(path, tensors(), META)

    assert isinstance(info.value, FileExistsError)
    assert isinstance(info.value, GeosegError)
    assert path.read_bytes() == b"precious"
    assert leftovers(tmp_path) == ["m.safetensors"]


def test_overwrite_replaces_the_output(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"old")

    save_checkpoint(path, tensors(), META, overwrite=True)

    assert load_checkpoint(path)[1] == META
    assert leftovers(tmp_path) == ["m.safetensors"]


def test_non_tensor_value_fails_without_leftovers(tmp_path: Path) -> None:
    bad: dict[str, Any] = {"w": torch.ones(2), "b": [1.0, 2.0]}
    with pytest.raises(AttributeError):
        save_checkpoint(tmp_path / "m.safetensors", bad, META)
    assert leftovers(tmp_path) == []


def test_failure_while_writing_leaves_no_temp_file(tmp_path: Path) -> None:
    # safetensors refuses tensors sharing memory, after the temporary file exists.
    shared = torch.ones(4)
    with pytest.raises(RuntimeError, match="share memory"):
        save_checkpoint(tmp_path / "m.safetensors", {"a": shared, "b": shared}, META)
    assert leftovers(tmp_path) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tensors(), META)
    before = path.read_bytes()
    shared = torch.ones(4)

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"a": shared, "b": shared}, META, overwrite=True)

    assert path.read_bytes() == before
    assert leftovers(tmp_path) == ["m.safetensors"]


def _safetensors_starting_with(path: Path, prefix: bytes, pad: int) -> bytes:
    """A safetensors file whose header length's first bytes are ``prefix``."""
    from safetensors.numpy import save_file as save_numpy

    for extra in range(pad, pad + 70_000):  # the header grows (8-byte aligned) with "pad"
        save_numpy({"w": np.zeros(3, np.float32)}, str(path), metadata={"pad": "x" * extra})
        head = path.read_bytes()[:9]
        if head.startswith(prefix):
            return head
    raise AssertionError("no padding gives that prefix")


@pytest.mark.parametrize(("prefix", "pad"), [(b"\x80", 0), (b"PK", 19_000)])
def test_header_lengths_that_look_like_pickles_still_load(
    tmp_path: Path, prefix: bytes, pad: int
) -> None:
    """A safetensors file starts with its header length: it may begin with 0x80 or "PK"."""
    from safetensors.numpy import load_file

    path = tmp_path / "probe.safetensors"
    head = _safetensors_starting_with(path, prefix, pad)
    assert head[8:9] == b"{"
    with pytest.raises(CheckpointError, match="without geoseg metadata"):  # not "pickle"
        read_checkpoint_meta(path)
    np.testing.assert_array_equal(load_file(str(path))["w"], np.zeros(3, np.float32))
