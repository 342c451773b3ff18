"""Per-chunk results on disk, so an interrupted run can resume where it stopped.

A run writing ``out.tif`` keeps each finished chunk as ``.out.tif.parts/<y>_<x>.npz``
(a record of named arrays, by default the block itself, and the SHA-256 of them)
next to a ``manifest.json`` that fingerprints the job. ``--resume`` reuses a chunk
only if its file loads, its arrays still hash to the stored digest and have the
shapes a chunk of its size gives; anything else is computed again. The folder is
removed once the output is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import threading
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import GeosegError
from geoseg.io.atomic import atomic_output
from geoseg.io.json_text import parse_json

__all__ = ["ChunkStore", "Encoder", "Fits", "Record", "parts_folder"]

log = logging.getLogger(__name__)


def parts_folder(output: Path) -> Path:
    """The folder holding the finished chunks of a run that writes ``output``."""
    return output.with_name(f".{output.name}.parts")


#: Named arrays kept for one chunk.
Record = dict[str, np.ndarray]
#: ``encode(block)``: the record kept for a finished ``(bands, h, w)`` block.
Encoder = Callable[[np.ndarray], Record]
#: ``fits(record, shape)``: whether a loaded record is what a block of ``shape`` gives.
Fits = Callable[[Record, tuple[int, ...]], bool]


def _as_block(block: np.ndarray) -> Record:
    return {"block": block}


def _block_fits(record: Record, shape: tuple[int, ...]) -> bool:
    block = record.get("block")
    return block is not None and block.shape == shape and block.dtype == np.uint8


#: What :func:`_read_manifest` returns for a manifest that cannot be parsed.
_DAMAGED = object()


def _read_manifest(path: Path) -> Any:
    """The fingerprint stored in ``path``; None if there is none, ``_DAMAGED`` if unreadable."""
    if not path.is_file():
        return None
    try:
        return parse_json(path.read_bytes(), path, "manifest")
    except (OSError, GeosegError):
        return _DAMAGED


def _mismatch(folder: Path, found: Any, wanted: dict[str, Any]) -> str:
    """Why the unfinished run in ``folder`` (``found``) is not this one (``wanted``): the
    input files that changed since, by name, when its fingerprint lists them under
    ``"files"`` (``{path: stamp}``); else other inputs or options."""
    fix = "run again without --resume (a workflow: without predict: {resume: true}) to start over"
    old = found.get("files") if isinstance(found, dict) else None
    new = wanted.get("files")
    if isinstance(old, dict) and isinstance(new, dict) and old != new:
        changed = sorted(f for f in old.keys() | new.keys() if old.get(f) != new.get(f))
        return (
            f"{folder}: {', '.join(changed)} changed since the unfinished run there "
            f"(other contents, size or time stamp, or other source files); {fix}"
        )
    return f"{folder}: the unfinished run there used other inputs or options; {fix}"


def _digest(record: Record) -> str:
    """SHA-256 of every array's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name in sorted(record):
        a = np.ascontiguousarray(record[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class ChunkStore:
    """``store[(band, y, x) slices] = block`` saves a finished chunk; :meth:`load` reads it back.

    Args:
        folder: where the chunks live (created).
        fingerprint: JSON-able description of the job; a resumed run must match it.
        resume: keep chunks of an earlier run with the same fingerprint; otherwise
            any earlier chunks are discarded.
        encode: what is kept of a finished block (default: the block). It runs
            where the block is stored, i.e. in the chunk's task thread on the
            threads scheduler.
        fits: checks a loaded record against the chunk's shape (default: the
            block has that shape and is uint8).
    """

    def __init__(
        self, folder: Path, fingerprint: Mapping[str, Any], resume: bool,
        encode: Encoder | None = None, fits: Fits | None = None,
    ) -> None:  # fmt: skip
        self.folder = folder
        self._encode = encode or _as_block
        self._fits = fits or _block_fits
        # remove() waits for writes in flight and later ones are dropped: after a
        # failure dask's threads scheduler returns while handed-out tasks still run
        self._writes = threading.Condition()
        self._in_flight = 0
        self._closed = False
        manifest = folder / "manifest.json"
        wanted = json.loads(json.dumps(dict(fingerprint)))
        found = _read_manifest(manifest) if folder.exists() and resume else None
        if found is _DAMAGED:
            log.warning(
                "%s: damaged (not the JSON an earlier run wrote); starting afresh", manifest
            )
            shutil.rmtree(folder)
        elif folder.exists() and resume:
            if found != wanted:
                raise GeosegError(_mismatch(folder, found, wanted))
            log.info("resuming from %s", folder)
        elif folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(exist_ok=True)
        if not manifest.is_file():
            with atomic_output(manifest, overwrite=True) as tmp:
                tmp.write_text(json.dumps(wanted, indent=1))

    def _path(self, y0: int, x0: int) -> Path:
        return self.folder / f"{y0}_{x0}.npz"

    @property
    def encode(self) -> Encoder:
        """The encoder: a distributed run calls it on the worker that made the block."""
        return self._encode

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        self.put(key, self._encode(np.asarray(block)))

    def put(self, key: tuple[slice, ...], record: Record) -> None:
        """Save the record :attr:`encode` made of the block at ``key`` (dropped after remove)."""
        _, ys, xs = key
        path = self._path(ys.start, xs.start)
        with self._writes:
            if self._closed:
                return
            self._in_flight += 1
        try:
            with atomic_output(path, overwrite=True) as tmp, tmp.open("wb") as f:
                arrays: dict[str, Any] = {**record, "sha256": np.array(_digest(record))}
                np.savez(f, **arrays)
        finally:
            with self._writes:
                self._in_flight -= 1
                self._writes.notify_all()

    def load(self, y0: int, x0: int, shape: tuple[int, ...], verify: bool = True) -> Record | None:
        """The record of the chunk at ``(y0, x0)`` (of ``shape``) if it is there, whole
        and unaltered; else None. ``verify=False`` skips the digest (for a chunk
        already verified in this run)."""
        path = self._path(y0, x0)
        if not path.is_file():
            return None
        record: Record | None = None
        try:
            with np.load(path) as f:
                record = {k: f[k] for k in f.files if k != "sha256"}
                digest = str(f["sha256"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            record, digest = None, ""
        intact = record is not None and (not verify or _digest(record) == digest)
        if record is None or not intact or not self._fits(record, shape):
            log.warning("%s: damaged, computing this chunk again", path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        return record

    def remove(self) -> None:
        """Delete the folder (after the output is complete, or a failure).

        Waits for the writes in flight; chunks that finish later are not saved.
        """
        with self._writes:
            self._closed = True
            while self._in_flight:
                self._writes.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
