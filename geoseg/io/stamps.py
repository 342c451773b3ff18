"""What a resumable job's input files looked like, so a resumed run can tell they changed.

A stamp is ``[size, mtime_ns, digest]``: the digest is a SHA-256 over the whole file
when it is small (at most :data:`WHOLE_FILE` bytes), else over its first and last
64 KiB and 16 evenly spaced 4 KiB blocks, so it costs a few reads even for a 10 GB
scene. A file replaced by other contents of the same size whose time stamp was put
back (``touch -d``) differs in the digest unless every changed byte of a large file
lies outside the sampled blocks.

A scene is stamped with every file it reads (:func:`scene_stamps`): a VRT and its
source rasters, a GeoTIFF's ``.aux.xml``/``.msk``/``.ovr`` sidecars. The same file
listed twice as two dates is refused (:func:`refuse_repeated`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import rasterio

from geoseg.errors import GeosegError

__all__ = [
    "WHOLE_FILE",
    "file_stamp",
    "refuse_repeated",
    "repeated_file",
    "scene_files",
    "scene_stamps",
]

#: Files up to this size (bytes) are hashed whole.
WHOLE_FILE = 1 << 20
_END = 64 << 10
_BLOCK = 4 << 10
_BLOCKS = 16


def _is_remote(path: str) -> bool:
    return path.startswith("/vsi") or "://" in path


def _content_digest(path: str, size: int) -> str:
    """SHA-256 of the whole file (small) or of its ends and 16 spread blocks (large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= WHOLE_FILE:
            h.update(f.read())
            return h.hexdigest()
        step = (size - _BLOCK) // (_BLOCKS - 1)
        spans = [(0, _END), (size - _END, _END)]
        spans += [(i * step, _BLOCK) for i in range(_BLOCKS)]
        for offset, length in spans:
            f.seek(offset)
            h.update(f.read(length))
    return h.hexdigest()


def file_stamp(path: str | os.PathLike[str]) -> list[int | str]:
    """``[size, mtime_ns, content digest]`` of a file, for fingerprints.

    ``[0, 0, ""]`` for a URL or GDAL virtual path, or a file that cannot be read.
    """
    name = os.fspath(path)
    if _is_remote(name):
        return [0, 0, ""]
    try:
        st = os.stat(name)
        return [st.st_size, st.st_mtime_ns, _content_digest(name, st.st_size)]
    except OSError:
        return [0, 0, ""]


def _read_files(path: str) -> list[str]:
    """The files GDAL reads for the raster ``path`` (itself first); just ``path`` if
    it does not open."""
    try:
        with rasterio.open(path) as src:
            return [str(f) for f in src.files] or [path]
    except (rasterio.errors.RasterioError, OSError):
        return [path]


def scene_files(path: str | os.PathLike[str]) -> list[str]:
    """Every file the raster ``path`` reads (absolute; itself first): a GeoTIFF's
    sidecars, a VRT's sources, also through nested VRTs. Remote names are kept as given."""
    root = os.fspath(path)
    if _is_remote(root):
        return [root]
    found: list[str] = []
    todo = [root]
    while todo:
        name = todo.pop()
        files = _read_files(name)
        for f in files:
            key = f if _is_remote(f) else os.path.abspath(f)
            if key in found:
                continue
            found.append(key)
            if f != files[0] and f.lower().endswith(".vrt"):
                todo.append(key)
    return found


def scene_stamps(path: str | os.PathLike[str]) -> dict[str, list[int | str]]:
    """``{file: file_stamp}`` for every file of :func:`scene_files`, sorted by name (a
    remote one is stamped by name only: ``[0, 0, ""]``)."""
    return {f: file_stamp(f) for f in sorted(scene_files(path))}


def _identity(path: str) -> object:
    """What names one file: (device, inode) of a local file, else the normalised path."""
    if not _is_remote(path):
        try:
            st = os.stat(path)
            return st.st_dev, st.st_ino
        except OSError:
            return os.path.normpath(os.path.abspath(path))
    return path


def repeated_file(paths: Sequence[str | os.PathLike[str]]) -> tuple[str, str] | None:
    """The first two of ``paths`` that name the same file (the same path, or another
    path to it: a link, ``./``), as given; None if every file is listed once."""
    seen: dict[object, str] = {}
    for path in [os.fspath(p) for p in paths]:
        key = _identity(path)
        if key in seen:
            return seen[key], path
        seen[key] = path
    return None


def refuse_repeated(paths: Sequence[str | os.PathLike[str]], what: str) -> None:
    """Refuse one file listed twice among ``paths`` (by another path too): a date
    compared with itself changes nothing, whatever its date says.

    Raises:
        GeosegError: naming the file and where it is listed.
    """
    pair = repeated_file(paths)
    if pair is None:
        return
    first, again = pair
    same = "" if first == again else f" (as {first})"
    raise GeosegError(
        f"{again}: listed twice among the {what}{same}; a date compared with itself "
        "shows no change at all; give each date once, oldest first"
    )
