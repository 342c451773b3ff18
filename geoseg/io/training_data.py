"""Read image + label rasters for training, with the labels aligned onto the image grid."""

from __future__ import annotations

import logging
import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio import windows
from rasterio.errors import WindowError
from rasterio.io import DatasetReader
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from geoseg.areas import pixel_size_m
from geoseg.errors import InvalidRasterError
from geoseg.io.grids import same_grid
from geoseg.io.labels import refuse_probability_raster
from geoseg.io.raster import open_scene
from geoseg.io.reproject import bounds_in_crs
from geoseg.io.vectors_formats import FORMATS

__all__ = [
    "LABEL_NODATA",
    "POLYGON_SUFFIXES",
    "LabelledRaster",
    "read_labelled_raster",
    "read_labels_on_grid",
    "refuse_labels_off_image",
    "refuse_polygon_labels",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LabelledRaster:
    """An image and its labels in memory, on the image's grid.

    Attributes:
        path: the image file.
        image: ``(C, H, W) float32`` band values as stored (digital numbers).
        valid: ``(H, W) bool``, False where the image has no data.
        labels: ``(H, W) int64`` label values as stored in the label raster;
            ``label_nodata`` where the label raster has no data or does not cover.
        band_names: names of the selected bands.
        dtype: the image's storage dtype (decides the reflectance scale).
        gsd_m: ground sample distance in metres (:func:`geoseg.areas.pixel_size_m`:
            geodesic for a geographic CRS).
    """

    path: str
    image: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    band_names: tuple[str, ...]
    dtype: np.dtype
    gsd_m: float


#: Stand-in for "no label" in :attr:`LabelledRaster.labels`.
LABEL_NODATA = -(2**31)


#: The fix for labels whose CRS cannot meet the image's.
_SAME_CRS = "write the labels in the image's CRS (e.g. rasterize them on the image's grid)"


#: File endings of polygon layers (what a label raster cannot be).
POLYGON_SUFFIXES = frozenset({ext for ext, _ in FORMATS.values()} | {".geoparquet", ".json"})


def refuse_polygon_labels(label_path: str | os.PathLike[str], task: str, image: str = "") -> None:
    """Refuse a polygon layer where a pixel task (semantic, change) needs a label raster.

    GDAL's own "not recognized as a supported file format" reads like a damaged
    raster; the user's file is fine, it is only the wrong kind.

    Args:
        label_path: the ``--labels`` file.
        task: what needs the raster, e.g. ``"--task semantic training"``.
        image: the image the labels pair with (its grid goes into the example).

    Raises:
        InvalidRasterError: ``label_path`` ends like a polygon layer.
    """
    if Path(label_path).suffix.lower() not in POLYGON_SUFFIXES:
        return
    grid = "-te XMIN YMIN XMAX YMAX -ts WIDTH HEIGHT"
    if image and Path(image).is_file():
        with rasterio.open(image) as src:
            b = src.bounds
            # repr: the exact bounds, so -te/-ts rebuild the image's transform to the bit
            corners = " ".join(repr(float(v)) for v in (b.left, b.bottom, b.right, b.top))
            grid = f"-te {corners} -ts {src.width} {src.height}"
    source = os.fspath(label_path)
    target = str(Path(source).with_suffix(".tif"))
    raise InvalidRasterError(
        f"{label_path}: is a polygon layer; {task} needs a label raster (a single-band integer "
        "GeoTIFF of class ids on the image's grid, 255 = unlabelled; polygon labels are for "
        "--task instance/panoptic): rasterize it first, e.g. with GDAL's gdal_rasterize (comes "
        "with GDAL, not installed by geoseg) `gdal_rasterize -a CLASS_FIELD "
        f"{grid} -init 255 -a_nodata 255 -ot Byte {shlex.quote(source)} "
        f"{shlex.quote(target)}` (the layer in the image's CRS; pixels outside every polygon "
        "stay 255, unlabelled)"
    )


def read_labels_on_grid(label_path: str, image_path: str) -> np.ndarray:
    """``(H, W) int64`` values of ``label_path`` on the grid of ``image_path``.

    Used as stored when both share CRS, transform and size; otherwise the part of
    the labels over the image (:func:`_window_over`: a national label raster is
    not read whole for one scene) is reprojected (nearest) in memory. Nodata and
    uncovered pixels are :data:`LABEL_NODATA`.
    """
    with rasterio.open(image_path) as img, rasterio.open(label_path) as lab:
        same = same_grid(lab.crs, lab.transform, lab.shape, img.crs, img.transform, img.shape)
        if lab.crs is None:
            raise InvalidRasterError(f"{label_path}: the label raster has no CRS")
        if same:
            return _values(lab, None)
        # refused in one line where no transformation exists (a local CRS without a datum)
        bounds_in_crs(lab.crs, img.crs, tuple(lab.bounds), label_path, image_path, _SAME_CRS)
        refuse_labels_off_image(label_path, image_path)
        log.warning("%s: not on the grid of %s; aligning it (nearest)", label_path, image_path)
        window = _window_over(lab, img, label_path, image_path)
        dst = np.full(img.shape, LABEL_NODATA, np.float64)
        if window is None:  # the bounds touch, no label pixel overlaps
            return dst.astype(np.int64)
        reproject(
            _values(lab, window).astype(np.float64), dst,
            src_transform=lab.transform if window is False else lab.window_transform(window),
            src_crs=lab.crs, dst_transform=img.transform, dst_crs=img.crs,
            resampling=Resampling.nearest, src_nodata=LABEL_NODATA, dst_nodata=LABEL_NODATA,
        )  # fmt: skip
        return dst.astype(np.int64)


def _values(lab: DatasetReader, window: Window | Literal[False] | None) -> np.ndarray:
    """``(h, w) int64`` band 1 of ``lab`` (in ``window``; None/False: all), nodata ->
    :data:`LABEL_NODATA`."""
    raw = lab.read(1, masked=True, window=None if window is False else window)
    return np.where(np.ma.getmaskarray(raw), LABEL_NODATA, raw.data.astype(np.int64))


#: Label pixels read beyond the image's bounds on each side (nearest resampling
#: samples pixel centres; the densified bounds may cut a curved edge by a little).
_WINDOW_PAD = 4


def _window_over(
    lab: DatasetReader, img: DatasetReader, label_path: str, image_path: str
) -> Window | Literal[False] | None:
    """The window of ``lab`` over the bounds of ``img`` (padded by :data:`_WINDOW_PAD`
    px), None where none of its pixels does, False (read all) for a rotated grid."""
    if not (lab.transform.is_rectilinear and img.transform.is_rectilinear):
        return False
    bounds = bounds_in_crs(img.crs, lab.crs, tuple(img.bounds), image_path, label_path, _SAME_CRS)
    win = windows.from_bounds(*bounds, transform=lab.transform)
    if not (math.isfinite(win.width * win.height) and win.width > 0 and win.height > 0):
        return False  # bounds across the antimeridian and the like: read all, as before
    col, row = math.floor(win.col_off) - _WINDOW_PAD, math.floor(win.row_off) - _WINDOW_PAD
    pad = windows.Window(
        col, row, math.ceil(win.col_off + win.width) + _WINDOW_PAD - col,
        math.ceil(win.row_off + win.height) + _WINDOW_PAD - row,
    )  # fmt: skip
    try:
        return windows.intersection(pad, windows.Window(0, 0, lab.width, lab.height))
    except WindowError:
        return None


def refuse_labels_off_image(
    label_path: str,
    image_path: str,
    fix: str = "pair each --labels with the --image of the same area",
) -> None:
    """Raise when a label raster lies wholly off the image (``fix`` ends the message).

    Training calls it when a raster gave no label on the image (an unlabelled chip
    that does lie on its image is allowed: chip folders hold some).

    Raises:
        InvalidRasterError: the bounds do not meet; names ``label_path``.
    """
    from rasterio.coords import disjoint_bounds

    with rasterio.open(image_path) as img, rasterio.open(label_path) as lab:
        bounds = bounds_in_crs(
            lab.crs, img.crs, tuple(lab.bounds), label_path, image_path, _SAME_CRS
        )
        image_bounds = tuple(img.bounds)
    if disjoint_bounds(bounds, image_bounds):
        raise InvalidRasterError(
            f"{label_path}: lies off the image {image_path} (labels cover "
            f"{tuple(round(v) for v in bounds)}, the image {tuple(round(v) for v in image_bounds)}"
            f" in the image's CRS); {fix}"
        )


def read_labelled_raster(
    image_path: str | os.PathLike[str],
    label_path: str | os.PathLike[str],
    bands: Sequence[str] | None = None,
) -> LabelledRaster:
    """Read a training pair fully into memory (training chips are small).

    Args:
        image_path: the image (any GDAL raster with a CRS).
        label_path: a one-band label raster; aligned onto the image grid (nearest)
            when its CRS, transform or size differ.
        bands: band selection (1-based numbers or names); None = all bands.
    """
    image_path, label_path = os.fspath(image_path), os.fspath(label_path)
    refuse_polygon_labels(label_path, "training on pixel labels", image_path)
    # the same header checks as any input; a probability raster is not labels
    refuse_probability_raster(label_path, open_scene(label_path).tags)
    scene = open_scene(image_path, bands)  # valid where every selected band holds data
    image = np.asarray(scene.data.data.compute(scheduler="sync"), np.float32)
    valid = np.asarray(scene.valid.compute(scheduler="sync"))
    labels = read_labels_on_grid(label_path, image_path)
    if not valid.any():
        raise InvalidRasterError(f"{image_path}: every pixel is nodata; it cannot train a model")
    if not (labels != LABEL_NODATA).any():
        refuse_labels_off_image(label_path, image_path)
    return LabelledRaster(
        path=image_path,
        image=image,
        valid=valid,
        labels=labels,
        band_names=scene.band_names,
        dtype=scene.dtype,
        gsd_m=pixel_size_m(scene.crs, scene.transform, (scene.height, scene.width)),
    )
