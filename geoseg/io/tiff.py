"""The bytes of a tiled, DEFLATE-compressed cloud-optimized GeoTIFF, written without GDAL.

GDAL's COG driver compresses every tile and computes every overview in the one
process that calls it, after all chunks are done. Here the tiles arrive already
compressed (from the chunk tasks, see :mod:`geoseg.io.cog`) and this module only
lays them out: header, GDAL's structural-metadata "ghost" block, one IFD per level
(full resolution first), then the tile data, smallest overview first, each tile
with GDAL's 4-byte size leader and 4-byte trailer. Georeferencing, colour table,
nodata and metadata tags are taken from a 16 x 16 GeoTIFF that GDAL writes with
the same metadata (:func:`metadata_tags`), so their encoding is GDAL's own.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from affine import Affine
from rasterio.io import MemoryFile

__all__ = [
    "CLASSIC_LIMIT",
    "DEFLATE_LEVEL",
    "Entry",
    "LevelLayout",
    "compress_tiles",
    "entry_values",
    "metadata_tags",
    "read_ifd",
    "unspecify_extra_samples",
    "write_tiff",
]

#: DEFLATE level of the tiles (GDAL's default).
DEFLATE_LEVEL = 6

#: ``(TIFF type, count, little-endian value bytes)`` of one IFD entry.
Entry = tuple[int, int, bytes]

#: Largest file written as classic TIFF (32-bit offsets); larger ones are BigTIFF.
CLASSIC_LIMIT = 0xFFFFFFFF

_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}
_SHORT, _LONG, _LONG8 = 3, 4, 16
_CODES = {_SHORT: "H", _LONG: "I", _LONG8: "Q"}

# Tags that describe the image structure: written here, never copied from the template.
_STRUCTURE = {254, 256, 257, 259, 273, 278, 279, 284, 317, 322, 323, 324, 325}
# Template tags repeated in every overview IFD (GDAL does the same).
_PER_LEVEL = {258, 262, 277, 320, 338, 339, 42113}

_GHOST_BODY = (
    b"LAYOUT=IFDS_BEFORE_DATA\nBLOCK_ORDER=ROW_MAJOR\nBLOCK_LEADER=SIZE_AS_UINT4\n"
    b"BLOCK_TRAILER=LAST_4_BYTES_REPEATED\nKNOWN_INCOMPATIBLE_EDITION=NO\n "
)
_GHOST = b"GDAL_STRUCTURAL_METADATA_SIZE=%06d bytes\n" % len(_GHOST_BODY) + _GHOST_BODY


@dataclass(frozen=True)
class LevelLayout:
    """One resolution level of the file.

    Attributes:
        height, width: level size in pixels.
        sizes: compressed byte count of each tile, row-major.
    """

    height: int
    width: int
    sizes: Sequence[int]


def compress_tiles(level: np.ndarray, tile: int, fill: int) -> list[bytes]:
    """DEFLATE tiles of ``level`` ``(bands, h, w) uint8``, row-major, pixel-interleaved.

    GDAL compresses them (into an in-memory GeoTIFF whose tiles are then cut out):
    its libdeflate is ~2.7x faster than Python's zlib and the tiles are the bytes
    its COG driver would write. Edge tiles are padded with ``fill``. GDAL releases
    the GIL, so chunk tasks compress in parallel.
    """
    bands, h, w = level.shape
    if h == 0 or w == 0:
        return []
    # A (meaningless) north-up transform: without one rasterio warns, and silencing
    # warnings is not thread-safe.
    profile = {
        "driver": "GTiff", "height": h, "width": w, "count": bands, "dtype": "uint8",
        "tiled": True, "blockxsize": tile, "blockysize": tile, "compress": "deflate",
        "zlevel": DEFLATE_LEVEL, "interleave": "pixel", "nodata": fill, "BIGTIFF": "NO",
        "transform": Affine(1.0, 0.0, 0.0, 0.0, -1.0, float(h)),
    }  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(level)
        data = mem.read()
    entries = read_ifd(data)
    offsets, sizes = entry_values(entries[324]), entry_values(entries[325])
    return [data[at : at + size] for at, size in zip(offsets, sizes, strict=True)]


def entry_values(entry: Entry) -> tuple[int, ...]:
    """The integers of a SHORT, LONG or LONG8 entry."""
    typ, count, raw = entry
    return struct.unpack(f"<{count}{_CODES[typ]}", raw)


def read_ifd(data: bytes, index: int = 0) -> dict[int, Entry]:
    """Entries of IFD ``index`` of a little-endian TIFF or BigTIFF held in ``data``."""
    if data[:2] != b"II":
        raise ValueError("not a little-endian TIFF")
    big = data[2] == 43
    fmt, width = ("<Q", 8) if big else ("<I", 4)
    offset = struct.unpack_from(fmt, data, 8 if big else 4)[0]
    for _ in range(index):
        n = struct.unpack_from("<Q" if big else "<H", data, offset)[0]
        offset = struct.unpack_from(
            fmt, data, offset + (8 if big else 2) + n * (20 if big else 12)
        )[0]
    n = struct.unpack_from("<Q" if big else "<H", data, offset)[0]
    p = offset + (8 if big else 2)
    entries = {}
    for _ in range(n):
        tag, typ = struct.unpack_from("<HH", data, p)
        count = struct.unpack_from(fmt, data, p + 4)[0]
        size = _TYPE_SIZE[typ] * count
        at = p + 4 + width
        if size > width:
            at = struct.unpack_from(fmt, data, at)[0]
        entries[tag] = (typ, count, bytes(data[at : at + size]))
        p += 4 + 2 * width
    return entries


def unspecify_extra_samples(path: str | os.PathLike[str]) -> int:
    """Set every IFD's ExtraSamples to 0 (unspecified) in place; the IFDs changed.

    GDAL's COG driver marks the second band of a palette image as alpha, so GIS
    software would draw the confidence band as transparency. Only the inline
    values change: no byte moves, the COG layout stays valid.
    """
    changed = 0
    with open(path, "r+b") as f:
        head = f.read(16)
        big = head[2] == 43
        fmt, width = ("<Q", 8) if big else ("<I", 4)
        offset = struct.unpack_from(fmt, head, 8 if big else 4)[0]
        while offset:
            f.seek(offset)
            n = struct.unpack("<Q" if big else "<H", f.read(8 if big else 2))[0]
            table = f.read(n * (4 + 2 * width) + width)
            for k in range(n):
                at = k * (4 + 2 * width)
                tag, typ = struct.unpack_from("<HH", table, at)
                count = struct.unpack_from(fmt, table, at + 4)[0]
                if tag == 338 and typ == _SHORT and count * 2 <= width:
                    f.seek(offset + (8 if big else 2) + at + 4 + width)
                    f.write(b"\0" * (2 * count))
                    changed += 1
            offset = struct.unpack_from(fmt, table, n * (4 + 2 * width))[0]
    return changed


def metadata_tags(
    profile: Mapping[str, Any], write: Callable[[Any], None] | None = None
) -> dict[int, Entry]:
    """The georeferencing and metadata entries GDAL writes for a GeoTIFF like ``profile``.

    Args:
        profile: rasterio creation profile (``count``, ``dtype``, ``crs``, ``transform``,
            ``nodata``, ...); size and tiling are replaced by a 16 x 16 tile.
        write: ``write(dataset)`` sets what the profile cannot (colour table,
            descriptions, tags, colour interpretation) on the open template.

    Returns:
        ``{tag: entry}`` without the image-structure tags.
    """
    small = {**profile, "driver": "GTiff", "height": 16, "width": 16, "tiled": True,
             "blockxsize": 16, "blockysize": 16, "compress": None}  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**small) as dst:
            if write is not None:
                write(dst)
        data = mem.read()
    return {k: v for k, v in read_ifd(data).items() if k not in _STRUCTURE}


def _entry(typ: int, values: Sequence[int]) -> Entry:
    return typ, len(values), struct.pack(f"<{len(values)}{_CODES[typ]}", *values)


def _structure(level: LevelLayout, tile: int, overview: bool, big: bool) -> dict[int, Entry]:
    """Image-structure entries of one level (tile offsets filled in later)."""
    n = len(level.sizes)
    entries = {
        256: _entry(_LONG, [level.width]),
        257: _entry(_LONG, [level.height]),
        259: _entry(_SHORT, [8]),  # Adobe DEFLATE
        284: _entry(_SHORT, [1]),  # pixel-interleaved
        317: _entry(_SHORT, [1]),  # no predictor
        322: _entry(_SHORT, [tile]),
        323: _entry(_SHORT, [tile]),
        324: _entry(_LONG8 if big else _LONG, [0] * n),
        325: _entry(_LONG, list(level.sizes)),
    }
    if overview:
        entries[254] = _entry(_LONG, [1])  # reduced-resolution image
    return entries


def _ifd(entries: Mapping[int, Entry], at: int, big: bool, last: bool) -> bytes:
    """An IFD placed at file offset ``at``, its out-of-line values right after it."""
    width = 8 if big else 4
    n = len(entries)
    head = (8 if big else 2) + n * (4 + 2 * width) + width
    table = [struct.pack("<Q" if big else "<H", n)]
    extra = bytearray()
    for tag in sorted(entries):
        typ, count, raw = entries[tag]
        table.append(struct.pack("<HH", tag, typ) + struct.pack("<Q" if big else "<I", count))
        if len(raw) <= width:
            table.append(raw.ljust(width, b"\0"))
        else:
            extra += b"\0" * (len(extra) % 2)  # values start on a word boundary
            table.append(struct.pack("<Q" if big else "<I", at + head + len(extra)))
            extra += raw
    end = at + head + len(extra)
    end += end % 2
    table.append(struct.pack("<Q" if big else "<I", 0 if last else end))
    out = b"".join(table) + bytes(extra)
    return out + b"\0" * (end - at - len(out))


def _ifds(
    levels: Sequence[LevelLayout], tile: int, meta: Mapping[int, Entry], big: bool,
    offsets: Sequence[Sequence[int]] | None,
) -> bytes:  # fmt: skip
    """Header, ghost block and every IFD; tile offsets from ``offsets`` (zeros if None)."""
    start = 16 if big else 8
    first = start + len(_GHOST)
    first += first % 2
    if big:
        head = b"II+\0" + struct.pack("<HHQ", 8, 0, first)
    else:
        head = b"II*\0" + struct.pack("<I", first)
    out = bytearray(head + _GHOST + b"\0" * (first - start - len(_GHOST)))
    for i, level in enumerate(levels):
        entries = _structure(level, tile, i > 0, big)
        if offsets is not None:
            entries[324] = _entry(_LONG8 if big else _LONG, list(offsets[i]))
        entries.update({k: v for k, v in meta.items() if i == 0 or k in _PER_LEVEL})
        out += _ifd(entries, len(out), big, i == len(levels) - 1)
    return bytes(out)


def _tile_offsets(levels: Sequence[LevelLayout], data_start: int) -> list[list[int]]:
    """File offset of every tile: smallest level first, each tile behind a 4-byte leader."""
    offsets: list[list[int]] = [[] for _ in levels]
    at = data_start
    for i in reversed(range(len(levels))):
        for size in levels[i].sizes:
            offsets[i].append(at + 4)
            at += size + 8
    return offsets


def write_tiff(
    f: BinaryIO,
    levels: Sequence[LevelLayout],
    tile: int,
    meta: Mapping[int, Entry],
    tiles: Iterable[Iterable[bytes]],
) -> int:
    """Write a COG to ``f``; the number of bytes written.

    Args:
        f: binary file, positioned at 0.
        levels: full resolution first, then each overview.
        tile: tile side in px (a multiple of 16).
        meta: entries from :func:`metadata_tags` (IFD 0 gets all, overviews
            the per-level ones: bit depth, colour table, nodata, ...).
        tiles: per level, **smallest overview first**, its compressed tiles in
            row-major order, of exactly the sizes in ``levels``.

    Raises:
        ValueError: a tile does not have the size announced in ``levels``.
    """
    data_size = sum(s + 8 for level in levels for s in level.sizes)
    big = len(_ifds(levels, tile, meta, False, None)) + data_size > CLASSIC_LIMIT
    start = len(_ifds(levels, tile, meta, big, None))
    header = _ifds(levels, tile, meta, big, _tile_offsets(levels, start))
    f.write(header)
    written = len(header)
    for i, level_tiles in zip(reversed(range(len(levels))), tiles, strict=True):
        sizes = levels[i].sizes
        k = 0
        for k, data in enumerate(level_tiles, start=1):
            if k > len(sizes) or len(data) != sizes[k - 1]:
                raise ValueError(f"level {i}: tile {k - 1} is not the size announced")
            f.write(struct.pack("<I", len(data)) + data + data[-4:])
            written += len(data) + 8
        if k != len(sizes):
            raise ValueError(f"level {i}: {k} tiles, {len(sizes)} announced")
    return written
