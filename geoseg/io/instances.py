"""Write instance and panoptic rasters (two ``uint32`` bands) as COGs, atomically.

Instance raster: band 1 class (255 = no object), band 2 scene-unique instance id
(0 = none). Panoptic raster: band 1 class (255 = nodata/void), band 2 instance id
(0 for stuff). Both have the layout of a label raster with an ``instance`` band
(band 1 class ids), so ``geoseg vectorize`` writes one polygon per instance. Both
carry the class schema in the ``GEOSEG_CLASSES`` tag, like label rasters. Blocks
go to a temporary tiled GeoTIFF first; only a complete run is copied to a COG
under the output name. :func:`staging_raster` holds the
per-chunk local ids between the two passes of instance stitching.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import array_bounds
from rasterio.windows import Window

from geoseg.errors import GeosegError, InvalidRasterError
from geoseg.io.atomic import atomic_output, check_output_path, temporary_sibling
from geoseg.io.grids import same_transform
from geoseg.io.json_text import parse_json
from geoseg.io.labels import CLASSES_TAG
from geoseg.io.vectors_crs import read_layer_on_grid
from geoseg.types import NODATA_LABEL, ClassSchema, bands_count

#: Tag of an instance COG: JSON list, the detection score of id ``i`` at index ``i``.
SCORES_TAG = "GEOSEG_INSTANCE_SCORES"

__all__ = [
    "INSTANCE_BANDS",
    "PANOPTIC_BANDS",
    "SCORES_TAG",
    "InstanceBlock",
    "Uint32Sink",
    "check_same_grid",
    "instance_bands",
    "instance_cog_writer",
    "instance_raster_reader",
    "label_block_reader",
    "polygon_instance_reader",
    "read_instance_scores",
    "staging_raster",
]

#: Band descriptions of an instance raster: class (255 = none), then instance id (0 = none).
INSTANCE_BANDS = ("class", "instance")
#: Band descriptions of a panoptic raster: class (255 = void), then instance id (0 = stuff).
PANOPTIC_BANDS = ("class", "instance")

_TILED = {"tiled": True, "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER"}


class Uint32Sink:
    """``sink[(band, y, x) slices] = block`` writes blocks, from any thread.

    Blocks are cast to the dataset's type: ``uint32`` for instance rasters, the
    staging rasters' own type (:func:`staging_raster`).
    """

    def __init__(self, dataset: Any, nodata_class: int | None = None) -> None:
        self._dst = dataset
        self._lock = threading.Lock()
        self._nodata_class = nodata_class

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        *_, ys, xs = key
        data = np.asarray(block, dtype=self._dst.dtypes[0])
        with self._lock:
            if data.ndim == 2:
                self._dst.write(data, 1, window=Window.from_slices(ys, xs))
            else:
                self._dst.write(data, window=Window.from_slices(ys, xs))
            if self._nodata_class is not None:  # one mask for both bands: any id is valid
                valid = (data if data.ndim == 2 else data[0]) != self._nodata_class
                self._dst.write_mask(np.where(valid, 255, 0).astype(np.uint8),
                                     window=Window.from_slices(ys, xs))  # fmt: skip

    def write_valid(self, key: tuple[slice, slice], valid: np.ndarray) -> None:
        """Declare ``(h, w) bool`` pixels of ``key`` valid in the raster's mask (False:
        the scene had no data there). Write it for every block or for none: GDAL reads an
        unwritten block of a mask as invalid."""
        with self._lock:
            self._dst.write_mask(np.where(valid, 255, 0).astype(np.uint8),
                                 window=Window.from_slices(*key))  # fmt: skip


@contextlib.contextmanager
def instance_cog_writer(
    path: str | os.PathLike[str],
    *,
    height: int,
    width: int,
    crs: CRS,
    transform: Affine,
    schema: ClassSchema,
    descriptions: Sequence[str] = INSTANCE_BANDS,
    tags: dict[str, str] | None = None,
    overwrite: bool = False,
    nodata_class: int | None = None,
) -> Iterator[Uint32Sink]:
    """Context manager yielding a sink of ``(2, h, w) uint32`` blocks; the COG appears at exit.

    Args:
        path: output ``.tif``.
        height, width: raster size in pixels.
        crs, transform: georeferencing, copied from the input scene.
        schema: classes, written as the ``GEOSEG_CLASSES`` tag.
        descriptions: band names, :data:`INSTANCE_BANDS` or :data:`PANOPTIC_BANDS`.
        tags: extra dataset tags.
        overwrite: replace an existing ``path``.
        nodata_class: band 1 value of nodata pixels, declared as the raster's mask
            (a GeoTIFF nodata value holds for every band, and 255 is a valid id in
            band 2); None: no nodata (``geoseg predict``'s 255 is "no object").

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    out = Path(path)
    check_output_path(out, overwrite)
    profile = {
        "driver": "GTiff", "height": height, "width": width, "count": len(descriptions),
        "dtype": "uint32", "crs": crs, "transform": transform, **_TILED,
    }  # fmt: skip
    with temporary_sibling(out, "stage") as stage, atomic_output(out, overwrite) as final:
        with rasterio.open(stage, "w", **profile) as dst:
            yield Uint32Sink(dst, nodata_class)
            for i, text in enumerate(descriptions, start=1):
                dst.set_band_description(i, text)
            dst.update_tags(**{CLASSES_TAG: json.dumps(schema.to_json())}, **(tags or {}))
        # Nearest overviews: averaging ids or classes would invent new ones. The COG
        # driver's temporary overviews stay uncompressed (a third of the staging file's
        # size): LZW-packing them only to unpack them once cost ~10 % of the copy, and the
        # COG's bytes are the same. Tiles are compressed (and overviews computed) on every
        # core; each tile is compressed on its own, so the bytes do not depend on the
        # thread count.
        with rasterio.Env(COG_TMP_COMPRESSION="NONE", GDAL_NUM_THREADS="ALL_CPUS"):
            rasterio.shutil.copy(
                stage, final, driver="COG", COMPRESS="DEFLATE", OVERVIEW_RESAMPLING="NEAREST",
                BLOCKSIZE=512, BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS",
            )  # fmt: skip


@contextlib.contextmanager
def staging_raster(
    beside: str | os.PathLike[str], height: int, width: int, dtype: str = "uint32",
    tag: str = "ids",
) -> Iterator[tuple[Uint32Sink, Callable[[tuple[slice, slice]], np.ndarray]]]:  # fmt: skip
    """A temporary one-band GeoTIFF of ``dtype`` beside ``beside``: ``(sink, read)``.

    ``sink[(ys, xs)] = block`` writes, ``read((ys, xs))`` reads back; the file
    (its name marked with ``tag``) is removed at exit, also after an error.
    """
    profile = {
        "driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": dtype,
        **_TILED,
    }  # fmt: skip
    with temporary_sibling(Path(beside), tag) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a scratch file, no grid
        with rasterio.open(tmp, "w+", **profile) as ds:
            sink = Uint32Sink(ds)

            def read(key: tuple[slice, slice]) -> np.ndarray:
                return np.asarray(ds.read(1, window=Window.from_slices(*key)))

            yield sink, read


def read_instance_scores(path: str | os.PathLike[str]) -> np.ndarray | None:
    """``(count + 1,) float64`` object scores of an instance/panoptic COG (index = id), or None.

    ``geoseg predict`` stores them in the :data:`SCORES_TAG` tag; ``[0]`` is 0.

    Raises:
        InvalidRasterError: the tag is not a flat JSON list of finite numbers in 0-1.
    """
    with rasterio.open(path) as src:
        raw = src.tags().get(SCORES_TAG)
    if raw is None:
        return None
    fix = "rewrite the raster with `geoseg predict`"
    # one score per object: a scene of a million objects has a tag of a few MB
    values = parse_json(raw, path, f"{SCORES_TAG} tag", InvalidRasterError, fix, 1 << 26, 1)
    numbers = isinstance(values, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )
    scores = np.asarray(values if numbers else [], dtype=np.float64)
    if not numbers or not np.all((scores >= 0) & (scores <= 1)):
        raise InvalidRasterError(
            f"{path}: malformed {SCORES_TAG} tag: expected a list of scores between 0 and 1, "
            f"one per object; {fix}"
        )
    return scores


def check_same_grid(
    path: str | os.PathLike[str], height: int, width: int, crs: Any, transform: Any
) -> None:
    """Refuse a raster that is not on the scene's grid (size, CRS and transform).

    Raises:
        InvalidRasterError: the message names ``path`` and what differs.
    """
    with rasterio.open(path) as src:
        if (src.height, src.width) != (height, width):
            raise InvalidRasterError(
                f"{path}: {src.height} x {src.width} px, the scene is {height} x {width}; "
                "predict the labels from the same scene"
            )
        if src.crs != crs or not same_transform(src.transform, transform):
            raise InvalidRasterError(
                f"{path}: not on the scene's grid (CRS or transform differ); predict the "
                "labels from the same scene"
            )


@contextlib.contextmanager
def label_block_reader(
    path: str | os.PathLike[str], height: int, width: int
) -> Iterator[Callable[[tuple[slice, slice]], np.ndarray]]:
    """``read((ys, xs))`` -> ``uint8`` band 1 of a label raster on the scene's grid.

    Raises:
        InvalidRasterError: the raster's size differs from ``height x width``.
    """
    with rasterio.open(path) as src:
        if (src.height, src.width) != (height, width):
            raise InvalidRasterError(
                f"{path}: {src.height} x {src.width} px, the scene is {height} x {width}; "
                "predict the labels from the same scene"
            )

        def read(key: tuple[slice, slice]) -> np.ndarray:
            return np.asarray(src.read(1, window=Window.from_slices(*key)), dtype=np.uint8)

        yield read


#: One block of an instance map: ``classes (h, w) int64`` (255 = none), ``ids (h, w)
#: int64`` (0 = none) and ``valid (h, w) bool`` (False = not scored).
InstanceBlock = tuple[np.ndarray, np.ndarray, np.ndarray]


def instance_bands(src: Any, path: str) -> tuple[int, int | None]:
    """1-based (id band, class band or None): by description, else ids first."""
    names = [(d or "").lower() for d in src.descriptions]
    if "instance" in names:
        return names.index("instance") + 1, names.index("class") + 1 if "class" in names else None
    if src.count in (1, 2):
        return 1, 2 if src.count == 2 else None
    raise InvalidRasterError(
        f"{path}: {bands_count(src.count)} {list(src.descriptions)}; an instance raster has a band "
        "described 'instance' (ids, 0 = none) and one described 'class', or band 1 ids and "
        "an optional band 2 of classes"
    )


@contextlib.contextmanager
def instance_raster_reader(
    path: str | os.PathLike[str],
    height: int,
    width: int,
    default_class: int | None = None,
    classes_of: str = "the model",
) -> Iterator[Callable[[tuple[slice, slice]], InstanceBlock]]:
    """``read((ys, xs))`` -> :data:`InstanceBlock` of an instance or panoptic raster.

    Args:
        path: geoseg instance/panoptic COG, or any raster of ``uint`` ids (0 = none)
            with an optional class band (see :func:`instance_bands`).
        height, width: the grid it must have, px.
        default_class: class of every id > 0 when the raster has no class band.
        classes_of: whose classes these are, for messages (the model, or the
            prediction file when no model was given).

    Raises:
        InvalidRasterError: other size, non-integer values, or no class band and
            no ``default_class``.
    """
    with rasterio.open(path) as src:
        if (src.height, src.width) != (height, width):
            raise InvalidRasterError(
                f"{path}: {src.height} x {src.width} px, the prediction is {height} x {width}; "
                "write the reference on the prediction's grid (or give a polygon layer)"
            )
        if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise InvalidRasterError(f"{path}: {src.dtypes[0]} values; instance ids are integers")
        id_band, class_band = instance_bands(src, os.fspath(path))
        if class_band is None and default_class is None:
            raise InvalidRasterError(
                f"{path}: has no class band and {classes_of} has no single thing class to "
                "assume; add a class band (described 'class') or give a polygon layer with "
                "a class field"
            )

        def read(key: tuple[slice, slice]) -> InstanceBlock:
            win = Window.from_slices(*key)
            raw = src.read(id_band, window=win, masked=True)
            ids = np.asarray(raw.filled(0), dtype=np.int64)
            if class_band is None:
                classes = np.where(ids > 0, int(default_class or 0), NODATA_LABEL)
            else:
                classes = np.asarray(src.read(class_band, window=win), dtype=np.int64)
            return classes, ids, ~np.ma.getmaskarray(raw)

        yield read


def _feature_classes(
    frame: Any, path: str, schema: ClassSchema, field: str | None, default: int | None,
    classes_of: str = "the model",
) -> np.ndarray:  # fmt: skip
    """``(n,) int64`` class id of each feature, from ``field`` (names or ids) or ``default``."""
    if field is None and "class" in frame.columns:
        field = "class"
    if field is None:
        if default is None:
            raise GeosegError(
                f"{path}: no 'class' field and {classes_of} has no single thing class to "
                "assume; name the field holding each feature's class with --class-field"
            )
        return np.full(len(frame), default, np.int64)
    if field not in frame.columns:
        raise GeosegError(f"{path}: no field {field!r}; its fields are {list(frame.columns)}")
    by_name = {c.name.lower(): c.id for c in schema.classes} | {str(i): i for i in schema.ids}
    out = []
    for value in frame[field]:
        key = str(value).strip().lower()
        if key.endswith(".0"):  # integer ids read as floats
            key = key[:-2]
        if key not in by_name:
            raise GeosegError(
                f"{path}: {field}={value!r} is not a class of {classes_of} "
                f"({', '.join(schema.names)})"
            )
        out.append(by_name[key])
    return np.asarray(out, dtype=np.int64)


@contextlib.contextmanager
def polygon_instance_reader(
    path: str | os.PathLike[str],
    *,
    height: int,
    width: int,
    crs: CRS,
    transform: Affine,
    schema: ClassSchema,
    class_field: str | None = None,
    default_class: int | None = None,
    labels_crs: str | None = None,
    classes_of: str = "the model",
) -> Iterator[Callable[[tuple[slice, slice]], InstanceBlock]]:
    """A polygon layer (GPKG, GeoJSON, ...) as an instance map on a raster grid.

    Feature ``i`` (file order) is instance ``i + 1``; a pixel belongs to a feature
    when its centre is inside (``rasterio.features.rasterize``); where features
    overlap, the later one wins. Features are reprojected to ``crs`` first.

    Args:
        path: the layer.
        height, width, crs, transform: the grid (of the prediction).
        schema: class names and ids that ``class_field`` values may use.
        class_field: attribute holding each feature's class (name or id); default
            ``"class"`` if the layer has it, else ``default_class``.
        default_class: class of every feature without a class field.
        labels_crs: the layer's CRS when its file declares none (or a wrong one);
            ``"raster"``: the grid's (see :mod:`geoseg.io.vectors_crs`).
        classes_of: whose classes ``schema`` holds, for messages.

    Raises:
        GeosegError: missing file or field, unknown class, no usable CRS.
    """
    import rasterio.features
    import shapely
    from rasterio.windows import bounds as window_bounds

    bounds = array_bounds(height, width, transform)
    frame = read_layer_on_grid(path, crs, bounds, labels_crs, "--labels-crs")
    classes = _feature_classes(
        frame, os.fspath(path), schema, class_field, default_class, classes_of
    )
    lut = np.concatenate([[NODATA_LABEL], classes])
    geoms = np.asarray(frame.geometry.values)
    tree = shapely.STRtree(geoms)

    def read(key: tuple[slice, slice]) -> InstanceBlock:
        win = Window.from_slices(*key)
        near = np.sort(tree.query(shapely.box(*window_bounds(win, transform))))
        shape = (int(win.height), int(win.width))
        ids = np.zeros(shape, np.int64)
        if near.size:
            ids = rasterio.features.rasterize(
                zip(geoms[near], (near + 1).tolist(), strict=True), out_shape=shape,
                transform=rasterio.windows.transform(win, transform), fill=0, dtype="uint32",
            ).astype(np.int64)  # fmt: skip
        return lut[ids], ids, np.ones(shape, bool)

    yield read
