"""Per-chunk results on disk, so an interrupted run can resume where it stopped.

A run writing ``out.tif`` keeps each finished chunk as ``.out.tif.parts/<y>_<x>.npz``
(the block and the SHA-256 of its bytes) next to a ``manifest.json`` that
fingerprints the job. ``--resume`` reuses a chunk only if its file loads, has the
expected shape and dtype, and its bytes still hash to the stored digest; anything
else is computed again. The folder is removed once the output is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import GeosegError
from geoseg.io.atomic import atomic_output

__all__ = ["ChunkStore", "file_stamp", "parts_folder"]

log = logging.getLogger(__name__)


def parts_folder(output: Path) -> Path:
    """The folder holding the finished chunks of a run that writes ``output``."""
    return output.with_name(f".{output.name}.parts")


def _digest(block: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(block).tobytes()).hexdigest()


class ChunkStore:
    """``store[(band, y, x) slices] = block`` saves a finished chunk; :meth:`load` reads it back.

    Args:
        folder: where the chunks live (created).
        fingerprint: JSON-able description of the job; a resumed run must match it.
        resume: keep chunks of an earlier run with the same fingerprint; otherwise
            any earlier chunks are discarded.
    """

    def __init__(self, folder: Path, fingerprint: Mapping[str, Any], resume: bool) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        manifest = folder / "manifest.json"
        wanted = json.loads(json.dumps(dict(fingerprint)))
        if folder.exists() and resume:
            found = json.loads(manifest.read_text()) if manifest.is_file() else None
            if found != wanted:
                raise GeosegError(
                    f"{folder}: the unfinished run there used other inputs or options; "
                    "run again without --resume to start over"
                )
            log.info("resuming from %s", folder)
        elif folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(exist_ok=True)
        if not manifest.is_file():
            with atomic_output(manifest, overwrite=True) as tmp:
                tmp.write_text(json.dumps(wanted, indent=1))

    def _path(self, y0: int, x0: int) -> Path:
        return self.folder / f"{y0}_{x0}.npz"

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        _, ys, xs = key
        block = np.asarray(block)
        path = self._path(ys.start, xs.start)
        with atomic_output(path, overwrite=True) as tmp, tmp.open("wb") as f:
            np.savez(f, block=block, sha256=np.array(_digest(block)))

    def load(self, y0: int, x0: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """The chunk at ``(y0, x0)`` if it is there, whole and unaltered; else None."""
        path = self._path(y0, x0)
        if not path.is_file():
            return None
        try:
            with np.load(path) as f:
                block, digest = f["block"], str(f["sha256"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            block, digest = None, ""
        if (
            block is None
            or block.shape != shape
            or block.dtype != np.uint8
            or _digest(block) != digest
        ):
            log.warning("%s: damaged, computing this chunk again", path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        return block

    def remove(self) -> None:
        """Delete the folder (after the output is complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def file_stamp(path: str | os.PathLike[str]) -> list[int]:
    """``[size, mtime_ns]`` of a file, for fingerprints; ``[0, 0]`` for URLs."""
    try:
        st = os.stat(path)
    except OSError:
        return [0, 0]
    return [st.st_size, st.st_mtime_ns]
