"""Write instance and panoptic rasters (two ``uint32`` bands) as COGs, atomically.

Instance raster: band 1 scene-unique instance id (0 = none), band 2 class (255 =
none). Panoptic raster: band 1 class (255 = nodata/void), band 2 instance id
(0 for stuff). Both carry the class schema in the ``GEOSEG_CLASSES`` tag, like
label rasters. Blocks go to a temporary tiled GeoTIFF first; only a complete
run is copied to a COG under the output name. :func:`staging_raster` holds the
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
from rasterio.windows import Window

from geoseg.errors import InvalidRasterError
from geoseg.io.atomic import atomic_output, check_output_path, temporary_sibling
from geoseg.io.labels import CLASSES_TAG
from geoseg.types import ClassSchema

__all__ = [
    "INSTANCE_BANDS",
    "PANOPTIC_BANDS",
    "Uint32Sink",
    "instance_cog_writer",
    "label_block_reader",
    "staging_raster",
]

INSTANCE_BANDS = ("instance", "class")
PANOPTIC_BANDS = ("class", "instance")

_TILED = {"tiled": True, "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER"}


class Uint32Sink:
    """``sink[(band, y, x) slices] = block`` writes ``uint32`` blocks, from any thread."""

    def __init__(self, dataset: Any) -> None:
        self._dst = dataset
        self._lock = threading.Lock()

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        *_, ys, xs = key
        data = np.asarray(block, dtype=np.uint32)
        with self._lock:
            if data.ndim == 2:
                self._dst.write(data, 1, window=Window.from_slices(ys, xs))
            else:
                self._dst.write(data, window=Window.from_slices(ys, xs))


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
            yield Uint32Sink(dst)
            for i, text in enumerate(descriptions, start=1):
                dst.set_band_description(i, text)
            dst.update_tags(**{CLASSES_TAG: json.dumps(schema.to_json())}, **(tags or {}))
        # Nearest overviews: averaging ids or classes would invent new ones.
        rasterio.shutil.copy(
            stage, final, driver="COG", COMPRESS="DEFLATE", OVERVIEW_RESAMPLING="NEAREST",
            BLOCKSIZE=512, BIGTIFF="IF_SAFER",
        )  # fmt: skip


@contextlib.contextmanager
def staging_raster(
    beside: str | os.PathLike[str], height: int, width: int
) -> Iterator[tuple[Uint32Sink, Callable[[tuple[slice, slice]], np.ndarray]]]:
    """A temporary one-band ``uint32`` GeoTIFF beside ``beside``: ``(sink, read)``.

    ``sink[(ys, xs)] = block`` writes, ``read((ys, xs))`` reads back; the file is
    removed at exit, also after an error.
    """
    profile = {
        "driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": "uint32",
        **_TILED,
    }  # fmt: skip
    with temporary_sibling(Path(beside), "ids") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a scratch file, no grid
        with rasterio.open(tmp, "w+", **profile) as ds:
            sink = Uint32Sink(ds)

            def read(key: tuple[slice, slice]) -> np.ndarray:
                return np.asarray(ds.read(1, window=Window.from_slices(*key)))

            yield sink, read


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
