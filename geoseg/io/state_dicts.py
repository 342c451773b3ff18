"""Read a torch state dict saved elsewhere (timm, torchgeo, SSL4EO, geoseg) without unpickling.

``.safetensors`` files are read with safetensors; anything else (``.pth``, ``.pt``,
``.ckpt``, ``.bin``) with ``torch.load(weights_only=True)`` only: torch's restricted
unpickler, which builds tensors and plain containers and refuses every other class
*before* calling it, so a file carrying code is refused, never run. geoseg never
does a full unpickle of a user file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from geoseg.errors import CheckpointError, InputNotFoundError
from geoseg.io.checkpoint import load_checkpoint

if TYPE_CHECKING:
    import torch

__all__ = ["StateDict", "read_state_dict"]

#: Keys under which training scripts nest the weights in a saved dict (Lightning,
#: MoCo/SSL4EO, DINO, torchvision references), tried in this order.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "teacher", "module", "net")

#: Metadata key of a plain safetensors file naming its input bands (comma-separated).
BANDS_KEY = "bands"


@dataclass(frozen=True)
class StateDict:
    """Tensors read from a weights file, and what the file says about them.

    Attributes:
        path: the file.
        tensors: name -> tensor (on the CPU), as the file spells the names.
        bands: the input band names the file gives (a geoseg checkpoint's bands, or a
            safetensors ``bands`` metadata entry); None when it does not say.
        sha256: hex digest of the file's bytes.
        kind: ``"geoseg"``, ``"safetensors"`` or ``"torch"`` (read with ``weights_only``).
    """

    path: Path
    tensors: Mapping[str, torch.Tensor]
    bands: tuple[str, ...] | None
    sha256: str
    kind: str


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for part in iter(lambda: f.read(1 << 20), b""):
            h.update(part)
    return h.hexdigest()


def _is_safetensors(path: Path) -> bool:
    """An 8-byte little-endian header length, then the JSON header's ``{``."""
    with path.open("rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], tuple[str, ...] | None, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            plain = "geoseg" not in meta
            tensors = {k: f.get_tensor(k) for k in f.keys()} if plain else {}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if not plain:  # a geoseg checkpoint: its metadata is checked as for predict
        tensors, ckpt = load_checkpoint(path)
        return tensors, ckpt.bands, "geoseg"
    names = meta.get(BANDS_KEY)
    bands = tuple(b.strip() for b in names.split(",")) if names else None
    return tensors, bands, "safetensors"


def _torch_load(path: Path) -> Any:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's advice; the refusal below says what to do
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", str(exc))
        names = [refused[1]] if refused else _pickle_globals(path)
        if not names:
            raise CheckpointError(
                f"{path}: not a PyTorch weights file that torch.load(weights_only=True) reads, "
                "nor a safetensors file; save a state dict with torch.save(model.state_dict(), "
                "path) or as .safetensors"
            ) from exc
        raise CheckpointError(
            f"{path}: a Python pickle that needs code to load (it calls {', '.join(names)}), "
            "and geoseg refuses to run it (torch.load(weights_only=True) ran nothing). Where "
            "you trust the file, re-save only its weights: torch.save(model.state_dict(), "
            "'weights.pth'), or convert them to .safetensors"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError) as exc:
        # KeyError/IndexError: torch's legacy reader taking other bytes (text) for a pickle
        raise CheckpointError(
            f"{path}: not a PyTorch weights file or a safetensors file ({exc})"
        ) from exc


#: Bytes of a pickle scanned for the callables it names (a state dict's pickle is small;
#: its tensors lie outside it).
_PICKLE_SCAN_BYTES = 16 << 20


def _pickle_globals(path: Path) -> list[str]:
    """The ``module.name`` callables a pickle (plain, or torch's zip format) refers to.

    Read with :func:`pickletools.genops`, which decodes opcodes and runs nothing; at
    most the first three names, empty when the file is not a pickle.
    """
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next((n for n in z.namelist() if n.endswith(".pkl")), None)
                data = z.open(member).read(_PICKLE_SCAN_BYTES) if member else b""
        else:
            with open(path, "rb") as f:
                data = f.read(_PICKLE_SCAN_BYTES)
    except (OSError, zipfile.BadZipFile):
        return []
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                strings = [*strings[-1:], arg]
            if op.name == "GLOBAL" and isinstance(arg, str):
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                names.append(".".join(strings))
    except (ValueError, pickle.UnpicklingError):
        pass  # a truncated or non-pickle file: the names found so far
    return list(dict.fromkeys(n for n in names if not _harmless(n)))[:3]


def _harmless(name: str) -> bool:
    """Classes torch's restricted unpickler builds itself (tensors, ordered dicts)."""
    return name.startswith(("torch.", "collections.OrderedDict", "_codecs.encode"))


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded object: a state dict, or one nested under a container key."""
    import torch

    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        obj = obj[key]
    tensors = (
        {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if isinstance(obj, Mapping)
        else {}
    )
    if not tensors:
        shown = list(obj)[:6] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path}: holds no state dict (found {shown}); save one with "
            "torch.save(model.state_dict(), path) or as .safetensors"
        )
    return tensors


def read_state_dict(path: str | os.PathLike[str]) -> StateDict:
    """Tensors and band names of a weights file; never a full unpickle.

    A geoseg checkpoint (its metadata checked as for ``predict``) gives all its
    tensors and its bands; a plain safetensors file its tensors and, if present,
    its ``bands`` metadata; a torch file (``torch.save``) is read with
    ``weights_only=True``, unwrapping a dict that nests the state dict under one of
    :data:`CONTAINER_KEYS` (e.g. a MoCo/Lightning ``{"state_dict": ..., "epoch": ...}``).

    Raises:
        InputNotFoundError: no such file.
        CheckpointError: unreadable, holds no tensors, or needs pickled classes.
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"{p}: no such weights file")
    if _is_safetensors(p):
        tensors, bands, kind = _read_safetensors(p)
    else:
        tensors, bands, kind = _unwrap(_torch_load(p), p), None, "torch"
    return StateDict(p, tensors, bands, _digest(p), kind)
