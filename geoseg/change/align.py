"""Put two or more label maps on one pixel grid, lazily.

Maps on the same grid are used as they are. Otherwise every map is resampled
(nearest neighbour, so class ids stay class ids) onto the first map's grid,
restricted to the extent all maps share; each block is read through a rasterio
``WarpedVRT`` when dask asks for it, so memory stays bounded by the chunk size.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geoseg.errors import GeosegError, InvalidRasterError
from geoseg.io.grids import same_grid
from geoseg.io.labels import (
    CLASSES_TAG,
    read_class_schema,
    refuse_change_raster,
    refuse_probability_raster,
)
from geoseg.io.raster import open_scene
from geoseg.io.reproject import bounds_in_crs
from geoseg.types import NODATA_LABEL, ClassSchema

__all__ = [
    "DATE_TAG",
    "AlignedMaps",
    "LabelMapInfo",
    "align_label_maps",
    "no_common_data_error",
    "read_label_map_info",
]

log = logging.getLogger(__name__)

#: Dataset tag holding the acquisition date of a label map (free text, e.g. 2020-06-01).
DATE_TAG = "DATE"


@dataclass(frozen=True)
class LabelMapInfo:
    """Header facts of one label map."""

    path: str
    crs: CRS
    transform: Affine
    height: int
    width: int
    schema: ClassSchema
    date: str | None


@dataclass(frozen=True)
class AlignedMaps:
    """Label maps on one grid.

    Attributes:
        paths: the maps, in date order.
        labels: one ``(H, W) uint8`` dask array per map, 255 = nodata.
        crs, transform, height, width: the common grid (a window of the first map).
        schema: the class schema all maps share.
        dates: the ``DATE`` tag of each map, or None.
        resampled: per map, True where it was resampled onto the grid.
    """

    paths: tuple[str, ...]
    labels: tuple[da.Array, ...]
    crs: CRS
    transform: Affine
    height: int
    width: int
    schema: ClassSchema
    dates: tuple[str | None, ...]
    resampled: tuple[bool, ...]

    @property
    def pixel_size(self) -> tuple[float, float]:
        """``(x, y)`` pixel size in CRS units."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of the common grid, in its CRS."""
        west, south, east, north = rasterio.transform.array_bounds(
            self.height, self.width, self.transform
        )
        return west, south, east, north


def read_label_map_info(path: str | os.PathLike[str]) -> LabelMapInfo:
    """Validate a geoseg label map's header.

    Raises:
        InputNotFoundError: no such file.
        InvalidRasterError: not a single-band integer label raster with a class schema.
    """
    path = os.fspath(path)
    scene = open_scene(path)  # existence, CRS, north-up checks
    with rasterio.open(path) as src:
        dtype, date = np.dtype(src.dtypes[0]), src.tags().get(DATE_TAG)
    refuse_probability_raster(path, scene.tags)
    refuse_change_raster(path, scene.tags)
    if dtype != np.uint8:
        raise InvalidRasterError(
            f"{path}: is a {dtype} raster, not a label map (uint8 class ids, 255 = nodata); "
            "pass land-cover maps written by `geoseg predict`"
        )
    schema = read_class_schema(path)
    if schema is None:
        raise InvalidRasterError(
            f"{path}: has no class schema ({CLASSES_TAG} tag); write it with `geoseg predict` "
            "or add the tag with `gdal_edit.py -mo GEOSEG_CLASSES=...`"
        )
    return LabelMapInfo(path, scene.crs, scene.transform, scene.height, scene.width, schema, date)


def _first_centre_at_or_after(edge_px: float) -> int:
    """Index of the first pixel whose centre (``i + 0.5``) is at or after ``edge_px``.

    ``edge_px`` is a fractional pixel coordinate on the first map's grid; a centre
    within 1e-6 px of the edge counts as on it, so a half-pixel shift is not decided
    by the last bits of the transforms.
    """
    centre = edge_px - 0.5
    nearest = round(centre)
    if abs(centre - nearest) < 1e-6:
        return int(nearest)
    return math.ceil(centre)


def _common_window(first: LabelMapInfo, others: Sequence[LabelMapInfo]) -> Window:
    """The window of the first map's grid whose pixel centres lie inside every map.

    Other maps' footprints are taken as their bounds in the first map's CRS.
    """
    left, bottom, right, top = rasterio.transform.array_bounds(
        first.height, first.width, first.transform
    )
    fix = (
        "give maps in one CRS (predict every date from scenes in the same CRS, or set the "
        "right CRS with `gdal_edit.py -a_srs` where a file's CRS is wrong)"
    )
    for info in others:
        b = rasterio.transform.array_bounds(info.height, info.width, info.transform)
        ol, ob, orr, ot = bounds_in_crs(info.crs, first.crs, b, info.path, first.path, fix)
        left, bottom, right, top = max(left, ol), max(bottom, ob), min(right, orr), min(top, ot)
        if left >= right or bottom >= top:
            raise InvalidRasterError(
                f"{info.path}: does not overlap {first.path} (disjoint extents); "
                "pass maps of the same area"
            )
    # a pixel of the first map is compared where its centre lies inside the common
    # footprint [left, right) x (bottom, top]: that is where nearest resampling finds a
    # pixel of every other map (rounding the window's edges instead keeps a row the
    # other map barely covers and drops one both cover, for a 0.7 px shift)
    col_a, row_a = ~first.transform @ (left, top)
    col_b, row_b = ~first.transform @ (right, bottom)
    col0, col1 = _first_centre_at_or_after(col_a), _first_centre_at_or_after(col_b)
    row0, row1 = _first_centre_at_or_after(row_a), _first_centre_at_or_after(row_b)
    col0, col1 = max(col0, 0), min(col1, first.width)
    row0, row1 = max(row0, 0), min(row1, first.height)
    if col1 <= col0 or row1 <= row0:
        raise InvalidRasterError(
            f"{others[-1].path}: overlaps {first.path} by less than one pixel (no pixel "
            "centre of the first map lies inside it); "
            "pass maps of the same area"
        )
    return Window(col0, row0, col1 - col0, row1 - row0)


def _warped_blocks(
    path: str, crs: CRS, transform: Affine, shape: tuple[int, int], chunk: int
) -> da.Array:
    def block(block_info: Any = None) -> np.ndarray:
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        with (
            rasterio.open(path) as src,
            WarpedVRT(
                src, crs=crs, transform=transform, width=shape[1], height=shape[0],
                resampling=Resampling.nearest, nodata=NODATA_LABEL, src_nodata=NODATA_LABEL,
            ) as vrt,
        ):  # fmt: skip
            return np.asarray(vrt.read(1, window=Window(x0, y0, x1 - x0, y1 - y0)), np.uint8)

    chunks = da.core.normalize_chunks((chunk, chunk), shape)
    return da.map_blocks(block, chunks=chunks, dtype=np.uint8, meta=np.array((), np.uint8))


def _same_grid(a: LabelMapInfo, b: LabelMapInfo) -> bool:
    return same_grid(
        a.crs, a.transform, (a.height, a.width), b.crs, b.transform, (b.height, b.width)
    )


def align_label_maps(paths: Sequence[str | os.PathLike[str]], chunk: int = 1024) -> AlignedMaps:
    """Open label maps and bring them onto the first map's grid.

    Args:
        paths: two or more geoseg label maps (uint8, 255 = nodata, class schema tag).
        chunk: dask chunk side in pixels.

    Raises:
        InputNotFoundError: a map does not exist.
        InvalidRasterError: a map is not a label map, or the extents are disjoint.
        GeosegError: the maps have different class schemas.
    """
    if len(paths) < 2:
        raise GeosegError("change detection needs at least two label maps (before and after)")
    infos = [read_label_map_info(p) for p in paths]
    first = infos[0]
    for info in infos[1:]:
        if info.schema != first.schema:
            raise GeosegError(
                f"{info.path}: its classes {list(info.schema.names)} differ from those of "
                f"{first.path} {list(first.schema.names)}; predict both dates with the same "
                "model or remap one map to the other's classes"
            )
    same = [_same_grid(first, info) for info in infos]
    win = _common_window(first, infos[1:])
    shape = (int(win.height), int(win.width))
    transform = rasterio.windows.transform(win, first.transform)
    ys = slice(int(win.row_off), int(win.row_off) + shape[0])
    xs = slice(int(win.col_off), int(win.col_off) + shape[1])
    labels = []
    for info, is_same in zip(infos, same, strict=True):
        if is_same:
            data = open_scene(info.path, chunk=chunk).data.data[0, ys, xs]
            labels.append(data.astype(np.uint8).rechunk((chunk, chunk)))
        else:
            log.warning(
                "%s: on a different grid; resampled (nearest) onto the grid of %s "
                "over the common extent (%d x %d px)",
                info.path,
                first.path,
                shape[1],
                shape[0],
            )
            labels.append(_warped_blocks(info.path, first.crs, transform, shape, chunk))
    if shape != (first.height, first.width):
        log.warning("%s: cropped to the extent common to all maps", first.path)
    return AlignedMaps(
        paths=tuple(i.path for i in infos), labels=tuple(labels), crs=first.crs,
        transform=transform, height=shape[0], width=shape[1], schema=first.schema,
        dates=tuple(i.date for i in infos), resampled=tuple(not s for s in same),
    )  # fmt: skip


def no_common_data_error(aligned: AlignedMaps) -> InvalidRasterError:
    """Why no pixel of the common grid holds data on every date, naming the maps to blame.

    One pass over the maps (on this error path only): a map that is nodata (255)
    everywhere on the grid is named; else the maps hold data in different places.
    """
    found = dask.compute(*[(labels != NODATA_LABEL).any() for labels in aligned.labels])
    empty = [p for p, has_data in zip(aligned.paths, found, strict=True) if not has_data]
    where = "where the maps overlap" if any(aligned.resampled) else "on the maps' common grid"
    if empty:
        return InvalidRasterError(
            f"{', '.join(empty)}: every pixel is nodata (255) {where}; check that it is the "
            "map of that date (`gdalinfo -stats`), or predict it again from a scene with data"
        )
    return InvalidRasterError(
        f"{', '.join(aligned.paths)}: no pixel holds data on every date (each map's data "
        "lie where another map has nodata); pass maps whose data cover the same ground"
    )
