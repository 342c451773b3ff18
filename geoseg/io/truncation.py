"""Tell a GeoTIFF cut short (an interrupted download or copy) from other bad files.

A file cut inside its tag data loses the tags stored there: GDAL still opens it,
with no CRS or no geotransform, and only logs an ``IO error during reading``
warning, so the refusal would ask for a CRS the file does have. A file cut inside
its pixels opens fine and fails hours later, at the first block read. The first
IFD says where every tag value and every tile or strip lies: anything that ends
past the end of the file is cut off, and that is checked when the file is opened.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

import numpy as np

from geoseg.errors import InvalidRasterError

__all__ = ["check_size", "cut_short", "refuse_truncated"]

_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}
_INT_CODES = {3: "u2", 4: "u4", 16: "u8"}
_TAG_NAMES = {
    273: "StripOffsets", 279: "StripByteCounts", 320: "ColorMap", 324: "TileOffsets",
    325: "TileByteCounts", 33550: "ModelPixelScale", 33922: "ModelTiepoint",
    34735: "GeoKeyDirectory", 34736: "GeoDoubleParams", 34737: "GeoAsciiParams",
    42112: "GDAL_METADATA", 42113: "GDAL_NODATA",
}  # fmt: skip
#: IFD entry: ``(type, count, offset of its value)``.
_Entry = tuple[int, int, int]


def check_size(path: str, src: Any) -> None:
    """Refuse an uncompressed GeoTIFF whose file is much smaller than its declared pixels.

    Raises:
        InvalidRasterError: the file holds under half the bytes its header declares.
    """
    if _is_remote(path) or src.driver != "GTiff" or src.compression is not None:
        return
    declared = src.width * src.height * src.count * np.dtype(src.dtypes[0]).itemsize
    actual = os.path.getsize(path)
    if actual < declared // 2:
        raise InvalidRasterError(
            f"{path}: the header declares {src.width} x {src.height} x {src.count} pixels "
            f"({declared / 1e6:.0f} MB) but the file holds {actual / 1e6:.1f} MB; it is "
            "truncated: re-export or download it again"
        )


def cut_short(path: str) -> str | None:
    """What of a TIFF's first image (tag values, tiles, strips) lies past the end of ``path``.

    Returns:
        e.g. ``"its GeoKeyDirectory tag ends at byte 1,100 of a 1,050-byte file"``;
        None when all of it lies inside the file, or ``path`` is not a local TIFF
        (or its first IFD cannot be read at all: GDAL says so when it opens it).
    """
    if _is_remote(path) or not os.path.isfile(path) or os.path.getsize(path) < 8:
        return None
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            return _first_cut(buf)
        except (struct.error, ValueError):
            return None


def refuse_truncated(path: str) -> None:
    """Refuse a TIFF that is cut short (:func:`cut_short`).

    Raises:
        InvalidRasterError: the message says what is cut off and to get the file again.
    """
    where = cut_short(path)
    if where is not None:
        raise InvalidRasterError(
            f"{path}: the file is truncated ({where}); re-export it or download it again"
        )


def _first_cut(buf: Any) -> str | None:
    order = {b"II": "<", b"MM": ">"}.get(bytes(buf[:2]))
    if order is None:
        return None
    magic = struct.unpack_from(order + "H", buf, 2)[0]
    if magic not in (42, 43):
        return None
    big, size = magic == 43, len(buf)
    entries = _entries(buf, order, big)
    for tag, (typ, count, at) in entries.items():
        end = at + _TYPE_SIZE.get(typ, 1) * count
        if end > size:
            name = _TAG_NAMES.get(tag, f"TIFF tag {tag}")
            return f"its {name} tag ends at byte {end:,} of a {size:,}-byte file"
    for offsets, counts, kind in ((324, 325, "tile"), (273, 279, "strip")):
        if offsets in entries and counts in entries:
            ends = _ints(buf, order, entries[offsets]) + _ints(buf, order, entries[counts])
            late = np.flatnonzero(ends > size)
            if late.size:
                i = int(late[0])
                return (
                    f"TIFF {kind} {i} of {ends.size} ends at byte {int(ends[i]):,} of a "
                    f"{size:,}-byte file"
                )
    return None


def _entries(buf: Any, order: str, big: bool) -> dict[int, _Entry]:
    """The first IFD's entries; values that fit in an entry point into the entry."""
    fmt, width = (order + "Q", 8) if big else (order + "I", 4)
    p = struct.unpack_from(fmt, buf, 8 if big else 4)[0]
    n = struct.unpack_from(order + ("Q" if big else "H"), buf, p)[0]
    p += 8 if big else 2
    entries = {}
    for _ in range(n):
        tag, typ = struct.unpack_from(order + "HH", buf, p)
        count = struct.unpack_from(fmt, buf, p + 4)[0]
        at = p + 4 + width
        if _TYPE_SIZE.get(typ, 1) * count > width:
            at = struct.unpack_from(fmt, buf, at)[0]
        entries[tag] = (typ, count, at)
        p += 4 + 2 * width
    return entries


def _ints(buf: Any, order: str, entry: _Entry) -> np.ndarray:
    """``(count,) int64`` values of a SHORT, LONG or LONG8 entry."""
    typ, count, at = entry
    code = _INT_CODES.get(typ)
    if code is None:
        raise ValueError(f"TIFF type {typ} is not an integer")
    return np.frombuffer(buf, np.dtype(order + code), count, at).astype(np.int64)


def _is_remote(path: str) -> bool:
    return path.startswith("/vsi") or "://" in path
