"""Read and write geoseg checkpoints: one ``.safetensors`` file with JSON metadata.

Model files are never unpickled: ``torch.load`` is not used on checkpoints, and a
pickle or zip renamed ``.safetensors`` is refused before anything is executed.
(Foreign weights for ``geoseg train --encoder-weights`` are read by
:mod:`geoseg.io.state_dicts`, with ``torch.load(weights_only=True)`` only.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from geoseg.errors import CheckpointError, GeosegError, InputNotFoundError
from geoseg.io.atomic import atomic_output
from geoseg.io.json_text import parse_json
from geoseg.types import ModelMeta

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # torch is imported on first use: reading metadata does not need it
    import torch

__all__ = [
    "FORMAT_VERSION",
    "load_checkpoint",
    "load_training_state",
    "parse_metadata_json",
    "read_checkpoint_meta",
    "save_checkpoint",
    "save_training_state",
    "tensors_digest",
]

#: Version of the metadata layout; bumped on incompatible changes.
FORMAT_VERSION = 1
_KEY = "geoseg"
#: Safetensors metadata key of the weights digest (:func:`tensors_digest`).
_DIGEST_KEY = "geoseg_tensors_sha256"
#: Bounds on the metadata JSON: its size in characters and how deep it nests. Ours is a
#: few kB, 4 levels deep; a file past either is refused before the JSON is parsed.
MAX_META_CHARS = 1 << 20
MAX_META_DEPTH = 32


def save_checkpoint(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    meta: ModelMeta,
    overwrite: bool = False,
) -> Path:
    """Write weights and metadata atomically (temporary file, then rename)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    header = {
        _KEY: json.dumps({"format": FORMAT_VERSION, **meta.to_json()}),
        _DIGEST_KEY: tensors_digest(tensors),
    }
    from safetensors.torch import save_file

    with atomic_output(path, overwrite) as tmp:
        save_file(tensors, tmp, metadata=header)
    return Path(path)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON ``{``."""
    if len(head) < 9:
        return False
    length = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < length <= size - 8


#: Field tags that may follow an ONNX ``ModelProto``'s leading ``ir_version`` (field 1,
#: a varint): producer_name, producer_version, domain, model_version, doc_string, graph,
#: opset_import.
_ONNX_NEXT_TAGS = frozenset(b"\x12\x1a\x22\x28\x32\x3a\x42")


def _looks_like_onnx(path: Path, head: bytes) -> bool:
    """An ONNX graph: named ``.onnx``, or a protobuf that opens as ONNX exporters write it
    (field 1, ``ir_version``, a small varint; then another ``ModelProto`` field)."""
    if path.suffix.lower() == ".onnx":
        return True
    varint = len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x80
    return varint and head[2] in _ONNX_NEXT_TAGS


def _refuse_foreign_formats(path: Path) -> None:
    """Refuse, before anything parses it, a torch pickle/zip or an ONNX graph given as
    a checkpoint, saying how to bring it in."""
    with path.open("rb") as f:
        head = f.read(9)
    if _looks_like_safetensors(head, path.stat().st_size):
        return  # its header length may well start with 0x80, 0x08 or spell "PK"
    zip_file = head[:2] == b"PK"
    pickle = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    if zip_file or pickle:
        source, rename = _import_name(path, (".pth", ".pt"))
        raise CheckpointError(
            f"{path}: is a PyTorch file (torch.save: a pickle/zip), not a geoseg checkpoint; "
            f"geoseg never unpickles model files. A SAM or SAM 2 checkpoint imports ({rename}"
            f"`geoseg import {source} -o model.safetensors --bands R,G,B`); export any other "
            "model to ONNX (torch.onnx.export) and import that: `geoseg import model.onnx "
            "-o model.safetensors --bands ... --classes classes.yaml`"
        )
    if _looks_like_onnx(path, head):
        source, rename = _import_name(path, (".onnx",))
        raise CheckpointError(
            f"{path}: is an ONNX graph, not a geoseg checkpoint; {rename}bring it in once with "
            f"`geoseg import {source} -o model.safetensors --bands B04,B03,B02 --classes "
            "classes.yaml` (the scene band of each input channel, and one class per output), "
            "then predict with -m model.safetensors"
        )


def _import_name(path: Path, suffixes: tuple[str, ...]) -> tuple[Path, str]:
    """``path`` named as ``geoseg import`` takes it (it tells the kind by the suffix), and
    the words asking to rename it so ("" when it is)."""
    if path.suffix.lower() in suffixes:
        return path, ""
    source = path.with_suffix(suffixes[0])
    return source, f"rename it {source.name}, then "


def parse_metadata_json(path: str | os.PathLike[str], raw: str) -> Any:
    """``raw`` metadata JSON of a model file, refused past :data:`MAX_META_CHARS` or depth.

    Raises:
        CheckpointError: too large, too deep or not JSON (the message names ``path``);
            see :func:`geoseg.io.json_text.parse_json`.
    """
    return parse_json(
        raw, path, "metadata JSON", CheckpointError,
        "the file is damaged or not a geoseg model", MAX_META_CHARS, MAX_META_DEPTH,
    )  # fmt: skip


def read_checkpoint_meta(path: str | os.PathLike[str]) -> ModelMeta:
    """Metadata of a checkpoint, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no such model file; `geoseg models` lists the choices")
    _refuse_foreign_formats(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get(_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file ({exc})") from exc
    if raw is None:
        raise CheckpointError(
            f"{path}: a safetensors file without geoseg metadata (not written by geoseg); "
            f"import a Hugging Face model with `geoseg import {path.parent} -o model.safetensors "
            "--bands ...` (the folder with its config.json; ONNX graphs and SAM checkpoints "
            "import too), or train one with `geoseg train`"
        )
    d = parse_metadata_json(path, raw)
    try:
        if d.get("format") is None:
            raise CheckpointError(
                f"{path}: its {_KEY!r} metadata has no format version, so it was not written "
                "by geoseg (or is damaged); use a model geoseg wrote (`geoseg train`, "
                "`geoseg import`)"
            )
        if d.get("format") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format {d.get('format')!r}, this geoseg reads "
                f"{FORMAT_VERSION}; upgrade geoseg or re-export the model"
            )
        return ModelMeta.from_json(d)
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, GeosegError) as exc:
        raise CheckpointError(f"{path}: damaged geoseg metadata ({exc!r})") from exc


def _refuse_non_finite(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or +-inf: such a model maps every pixel to one class."""
    import torch

    for name, tensor in tensors.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise CheckpointError(
                f"{path}: tensor {name!r} has {bad} of {tensor.numel()} values non-finite "
                "(NaN or inf); the weights are damaged (a diverged training run?): retrain "
                "the model or use an earlier checkpoint"
            )


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """Tensors and metadata of a checkpoint (tensors on the CPU).

    Raises:
        CheckpointError: not a geoseg checkpoint, damaged, or weights that are not
            all finite (the message names the tensor).
    """
    meta = read_checkpoint_meta(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = (f.metadata() or {}).get(_DIGEST_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged tensor data ({exc})") from exc
    _refuse_non_finite(path, tensors)  # first: it names the tensor
    _check_digest(path, tensors, stored)
    return tensors, meta


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes, in name order."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _check_digest(path: object, tensors: Mapping[str, torch.Tensor], stored: str | None) -> None:
    """Refuse weights whose bytes no longer match the digest written with them.

    Checkpoints written before the digest existed carry none; they load with a warning.
    """
    if stored is None:
        log.warning(
            "%s: carries no weights digest (written by an older geoseg), so edits to its "
            "weights cannot be detected; re-save it to add one", path,
        )  # fmt: skip
        return
    if tensors_digest(tensors) != stored:
        raise CheckpointError(
            f"{path}: its weights do not match the digest written with them (the file was "
            "edited or damaged after geoseg saved it); use the original file"
        )


_STATE_KEY = "geoseg_training_state"


def save_training_state(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]
) -> Path:
    """Write a resumable training state (tensors + JSON) atomically; replaces ``path``."""
    header = {_STATE_KEY: json.dumps(dict(state))}
    from safetensors.torch import save_file

    with atomic_output(path, overwrite=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, header)
    return Path(path)


def load_training_state(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of :func:`save_training_state`."""
    path = Path(path)
    _refuse_foreign_formats(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_STATE_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a geoseg training state ({exc})") from exc
    if raw is None:
        raise CheckpointError(f"{path}: not a geoseg training state")
    state = parse_metadata_json(path, raw)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: damaged training state (not a JSON object)")
    return tensors, state
