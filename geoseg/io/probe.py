"""What kind of file a path is: a raster, a vector dataset or a geoseg checkpoint."""

from __future__ import annotations

import os
import struct
from typing import Literal

from rasterio.errors import RasterioError

from geoseg.errors import InputNotFoundError, UnknownFileError
from geoseg.io.georef import open_raster_quietly
from geoseg.io.vectors_info import is_vector_file

__all__ = ["FileKind", "file_kind"]

FileKind = Literal["raster", "vector", "checkpoint"]


def _looks_like_safetensors(path: str) -> bool:
    """A safetensors file starts with its JSON header's length (u64, little-endian), then ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (size,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and size < os.path.getsize(path)


def _is_raster(path: str) -> bool:
    try:
        with open_raster_quietly(path) as src:  # open_scene says what is wrong
            return src.count > 0
    except RasterioError:
        return False


def file_kind(path: str | os.PathLike[str]) -> FileKind:
    """Whether ``path`` is a checkpoint, a raster or a vector dataset, in that order.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        UnknownFileError: it is a folder, empty, or none of the three.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputNotFoundError(f"{path}: no such file; check the path")
    if os.path.isdir(path):
        raise UnknownFileError(f"{path}: is a folder; give a file")
    if os.path.getsize(path) == 0:
        raise UnknownFileError(f"{path}: the file is empty (0 bytes)")
    if path.endswith(".safetensors") or _looks_like_safetensors(path):
        return "checkpoint"
    if _is_raster(path):
        return "raster"
    if is_vector_file(path):
        return "vector"
    raise UnknownFileError(
        f"{path}: neither a raster, a vector layer nor a geoseg checkpoint that geoseg can read; "
        "check the file (a GeoTIFF or other GDAL raster, GPKG, GeoJSON, Shapefile, FlatGeobuf, "
        "GeoParquet, or a .safetensors model)"
    )
