"""Open scenes lazily as dask-backed ``(band, y, x)`` DataArrays, with validation.

Every check that can be made from the header is made here, before any pixel is
read, so a bad input fails in milliseconds with a message that names the file and
says how to fix it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor on DataArrays)
import xarray as xr
from affine import Affine
from dask.array.core import normalize_chunks
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from geoseg.errors import InputNotFoundError, InvalidRasterError
from geoseg.io.georef import open_raster_quietly, refuse_ungeoreferenced, scene_crs
from geoseg.io.nodata import band_nodata, valid_values
from geoseg.io.truncation import check_size, refuse_truncated

__all__ = [
    "Scene",
    "canonical_band_name",
    "open_scene",
    "read_dataset_mask",
    "select_bands",
    "write_geotiff",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scene:
    """A lazily opened raster scene.

    Attributes:
        path: the file (or GDAL path / URL) it was opened from.
        data: ``(band, y, x)`` dask-backed DataArray in the file's dtype.
        valid: ``(y, x) bool`` dask array, False where the scene has no data: the
            nodata value, NaN or +-inf in any selected band, or the internal mask
            (:mod:`geoseg.io.nodata`).
        crs: coordinate reference system.
        transform: affine pixel-to-CRS transform (north-up).
        nodata: the file's nodata value, if any (bands declaring different values:
            the first selected band's; ``valid`` masks each on its own).
        band_names: description of each selected band, or its 1-based number.
        colorinterp: GDAL colour interpretation of each selected band (``"red"``, ...).
        tags: the file's dataset tags (e.g. ``DATE``), carried into outputs.
        maskable: False when every pixel is valid by construction (no nodata value,
            integer type, no internal mask): outputs then need no mask of their own.
    """

    path: str
    data: xr.DataArray
    valid: da.Array
    crs: CRS
    transform: Affine
    nodata: float | None
    band_names: tuple[str, ...]
    colorinterp: tuple[str, ...]
    tags: Mapping[str, str] = field(default_factory=dict)
    maskable: bool = True

    @property
    def height(self) -> int:
        return int(self.data.shape[1])

    @property
    def width(self) -> int:
        return int(self.data.shape[2])

    @property
    def count(self) -> int:
        return int(self.data.shape[0])

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.data.dtype)


def _is_remote(path: str) -> bool:
    return path.startswith("/vsi") or "://" in path


def _check_file(path: str) -> None:
    if _is_remote(path):
        return
    if not os.path.exists(path):
        raise InputNotFoundError(f"{path}: no such file; check the path")
    if os.path.isdir(path):
        raise InvalidRasterError(f"{path}: is a folder, not a raster file")
    if os.path.getsize(path) == 0:
        raise InvalidRasterError(f"{path}: the file is empty (0 bytes); re-export the scene")


def _check_header(path: str, src: Any, assume_crs: str | None) -> CRS:
    if src.width == 0 or src.height == 0:
        raise InvalidRasterError(f"{path}: the raster is empty ({src.width} x {src.height} px)")
    refuse_ungeoreferenced(path, src)  # --assume-crs cannot place it
    crs = scene_crs(path, src, assume_crs)
    t = src.transform
    if t.b != 0 or t.d != 0:
        raise InvalidRasterError(
            f"{path}: the geotransform is rotated or sheared ({tuple(t)[:6]}); "
            "warp it north-up first, e.g. `gdalwarp in.tif out.tif`"
        )
    if t.a <= 0 or t.e >= 0:
        raise InvalidRasterError(
            f"{path}: the raster is not north-up (pixel size {t.a}, {t.e}); "
            "warp it north-up first, e.g. `gdalwarp in.tif out.tif`"
        )
    return crs


def canonical_band_name(name: str) -> str:
    """Case- and padding-insensitive band name: ``"B02"``, ``"b2"`` and ``"B2 "`` -> ``"b2"``."""
    text = name.strip().lower()
    m = re.fullmatch(r"b0*(\d+a?)", text)
    return f"b{m.group(1)}" if m else text


def select_bands(path: str, names: Sequence[str], wanted: Sequence[str] | None) -> list[int]:
    """0-based indices of the wanted bands, given as 1-based numbers or names.

    Args:
        path: the file, for error messages.
        names: the file's band descriptions (or numbers), one per band.
        wanted: ``["3", "2", "B04"]``-style selection; None selects every band.
            Names match case- and zero-padding-insensitively (``B4`` finds ``B04``).
    """
    if wanted is None:
        return list(range(len(names)))
    lower = [canonical_band_name(n) for n in names]
    out = []
    for item in wanted:
        if item.isdigit():
            i = int(item) - 1
            if not 0 <= i < len(names):
                raise InvalidRasterError(
                    f"{path}: band {item} does not exist; the file has bands 1-{len(names)}"
                )
            out.append(i)
        elif canonical_band_name(item) in lower:
            out.append(lower.index(canonical_band_name(item)))
        else:
            raise InvalidRasterError(
                f"{path}: no band named {item!r}; its bands are {', '.join(names)}"
            )
    return out


_OPEN = threading.local()
#: Datasets each worker thread keeps open (a scene and its masks, two dates).
_OPEN_PER_THREAD = 4


def _file_key(path: str) -> tuple[int, int, int] | None:
    """What identifies the file's content now (inode, size, mtime); None for remote paths."""
    if _is_remote(path):
        return None
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _open_for_reading(path: str) -> Any:
    """A read-only dataset for ``path``, kept open per worker thread.

    Opening a GeoTIFF costs about as much as reading a small block, and workers
    read hundreds of blocks from the same files. A file replaced or rewritten
    since (inode, size or modification time changed) is opened again.
    """
    cache: dict[str, tuple[Any, Any]] = getattr(_OPEN, "datasets", None) or {}
    _OPEN.datasets = cache
    key = _file_key(path)
    hit = cache.pop(path, None)
    if hit is not None and hit[0] == key and not hit[1].closed:
        cache[path] = hit  # most recently used last
        return hit[1]
    if hit is not None:
        hit[1].close()
    while len(cache) >= _OPEN_PER_THREAD:
        cache.pop(next(iter(cache)))[1].close()
    src = rasterio.open(path)
    cache[path] = (key, src)
    return src


def read_dataset_mask(path: str, window: tuple[slice, slice]) -> np.ndarray:
    """``(h, w) bool`` GDAL dataset mask (True = valid) for a window of ``path``."""
    src = _open_for_reading(path)
    win = rasterio.windows.Window.from_slices(*window, height=src.height, width=src.width)
    return np.asarray(src.dataset_mask(window=win) > 0)


def _internal_mask(path: str, chunks: Any) -> da.Array:
    def block(block_info: Any = None) -> np.ndarray:
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        return read_dataset_mask(path, (slice(y0, y1), slice(x0, x1)))

    return da.map_blocks(block, chunks=chunks, dtype=bool, meta=np.array((), dtype=bool))


def _read_block(path: str, bands: tuple[int, ...], block_info: Any = None) -> np.ndarray:
    """One ``(bands, h, w)`` block, read by the worker straight from the file."""
    _, (y0, y1), (x0, x1) = block_info[None]["array-location"]
    window = Window(x0, y0, x1 - x0, y1 - y0)
    src = None
    try:
        src = _open_for_reading(path)
        return np.asarray(src.read(bands, window=window))
    except RasterioIOError as exc:
        detail = str(exc.__cause__ or exc.__context__ or exc)
        where = (
            _damaged_block(src, bands, window) or f"rows {y0}-{y1}, columns {x0}-{x1} ({detail})"
        )
        raise InvalidRasterError(
            f"{path}: cannot read {where}; the file is damaged or truncated: "
            "re-export or download it again"
        ) from exc


def _file_blocks(src: Any, band: int, window: Window) -> Iterator[tuple[int, int, Window]]:
    """``(block row, block column, pixel window)`` of each of the file's blocks in ``window``."""
    bh, bw = src.block_shapes[band - 1]
    top, left = int(window.row_off), int(window.col_off)
    for row in range(top // bh, -(-(top + int(window.height)) // bh)):
        for col in range(left // bw, -(-(left + int(window.width)) // bw)):
            y0, x0 = row * bh, col * bw
            yield row, col, Window(x0, y0, min(bw, src.width - x0), min(bh, src.height - y0))


def _damaged_block(src: Any, bands: tuple[int, ...], window: Window) -> str | None:
    """Where the first TIFF tile or strip in ``window`` that cannot be read lies, and why.

    A chunk spans many of the file's blocks; naming the damaged one says which part
    of the scene is lost. None when the file is not a GeoTIFF or every block reads.
    """
    if src is None or src.driver != "GTiff":
        return None
    for band in bands:
        across = -(-src.width // src.block_shapes[band - 1][1])
        for row, col, block in _file_blocks(src, band, window):
            try:
                src.read(band, window=block)
            except RasterioIOError as exc:
                kind = (
                    f"TIFF tile {row * across + col} (tile row {row}, column {col})"
                    if src.block_shapes[band - 1][1] < src.width
                    else f"TIFF strip {row}"
                )
                (y0, y1), (x0, x1) = block.toranges()
                detail = exc.__cause__ or exc.__context__ or exc
                return f"rows {y0}-{y1}, columns {x0}-{x1}: {kind} of band {band} ({detail})"
    return None


def _is_polygon_layer(path: str) -> bool:
    """Whether a file GDAL cannot open as a raster opens as a vector layer."""
    from geoseg.io.vectors_info import is_vector_file  # pyogrio only on this error path

    return is_vector_file(path)


def open_scene(
    path: str | os.PathLike[str],
    bands: Sequence[str] | None = None,
    chunk: int = 1024,
    assume_crs: str | None = None,
) -> Scene:
    """Open a GeoTIFF/COG/VRT (or any GDAL raster) lazily.

    Args:
        path: file path or GDAL path/URL.
        bands: band selection, 1-based numbers or band descriptions; None = all.
        chunk: dask chunk side in pixels for ``y`` and ``x``.
        assume_crs: CRS to use when the file has none (e.g. ``"EPSG:32633"``).

    Raises:
        InputNotFoundError: the file does not exist.
        InvalidRasterError: not a raster, empty, no CRS, rotated or not north-up.
    """
    path = os.fspath(path)
    _check_file(path)
    try:
        src = open_raster_quietly(path)  # no geotransform: refused below in plain words
    except RasterioIOError as exc:
        if "dimensions" in str(exc):
            raise InvalidRasterError(f"{path}: the raster is empty ({exc})") from exc
        if _is_polygon_layer(path):  # a whole, readable file of the wrong kind
            raise InvalidRasterError(
                f"{path}: is a polygon layer, not a raster; give a raster here (a GeoTIFF: "
                "an image, or a label map of class ids); polygons can be rasterized onto an "
                "image's grid with gdal_rasterize"
            ) from exc
        raise InvalidRasterError(
            f"{path}: not a raster GDAL can read ({exc}); check that the file is complete "
            "(re-export it or download it again)"
        ) from exc
    with src:
        refuse_truncated(path)  # else a file cut inside its tags reads as one without a CRS
        crs = _check_header(path, src, assume_crs)
        names = [d or str(i + 1) for i, d in enumerate(src.descriptions)]
        interp = [c.name for c in src.colorinterp]
        index = select_bands(path, names, bands)
        has_mask = all(MaskFlags.per_dataset in f for f in src.mask_flag_enums) and not any(
            MaskFlags.nodata in f for f in src.mask_flag_enums
        )
        transform, tags = src.transform, dict(src.tags())
        per_band = band_nodata(src, [i + 1 for i in index])
        check_size(path, src)
        shape, dtype = (len(index), src.height, src.width), np.dtype(src.dtypes[0])
    chunks = normalize_chunks((len(index), chunk, chunk), shape)
    data = da.map_blocks(
        _read_block, path, tuple(i + 1 for i in index), chunks=chunks, dtype=dtype,
        meta=np.array((), dtype=dtype), token=f"read-{os.path.basename(path)}",
    )  # fmt: skip
    # bands with nodata values of their own: each is masked on its own value, and the
    # scene's one value is the first declared (it names nodata in messages and tags)
    declared = [v for v in per_band if v is not None] if isinstance(per_band, tuple) else []
    nodata = per_band if not isinstance(per_band, tuple) else declared[0]
    arr = xr.DataArray(data, dims=("band", "y", "x"))
    arr = arr.rio.write_crs(crs).rio.write_transform(transform).rio.write_nodata(nodata)
    valid = valid_values(arr.data, per_band)
    if has_mask:
        valid = valid & _internal_mask(path, arr.data.chunks[1:])
    return Scene(
        path=path,
        data=arr,
        valid=valid,
        crs=crs,
        transform=transform,
        nodata=nodata,
        band_names=tuple(names[i] for i in index),
        colorinterp=tuple(interp[i] for i in index),
        tags=tags,
        maskable=nodata is not None or dtype.kind == "f" or has_mask,
    )


def write_geotiff(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    crs: CRS | str,
    transform: Affine,
    nodata: float | None,
    descriptions: Sequence[str],
    tags: Mapping[str, str] | None = None,
    colormap: Mapping[int, tuple[int, ...]] | None = None,
) -> None:
    """Write ``(bands, H, W)`` ``data`` as one tiled (256 px), DEFLATE GeoTIFF.

    uint16 bands get horizontal differencing (it shrinks noisy reflectance ~15 %
    and bloats class ids); ``colormap`` is set on band 1.
    """
    bands, h, w = data.shape
    profile: dict[str, Any] = {
        "driver": "GTiff", "count": bands, "height": h, "width": w, "nodata": nodata,
        "dtype": data.dtype.name, "crs": crs, "transform": transform, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        "predictor": 2 if data.dtype == np.uint16 else 1,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(descriptions)
        dst.update_tags(**(tags or {}))
        if colormap is not None:
            dst.write_colormap(1, colormap)
