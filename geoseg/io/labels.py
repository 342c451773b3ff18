"""Write label rasters (class ids, 255 = nodata) as COGs, atomically.

Two ways, same pixels and metadata (colour table, class names, band descriptions,
tags, DEFLATE, mode overviews; class-probability rasters, :func:`probabilities_meta`,
take average overviews and no colour table): :func:`label_cog_from_chunks` lays out tiles the
chunk tasks already compressed (:mod:`geoseg.io.cog`; the default of ``predict``
and ``change``); :func:`label_cog_writer` streams blocks into a temporary tiled
GeoTIFF and has GDAL's COG driver copy it (chunks no COG tile side divides). A
failed or interrupted run leaves no file under the output name and removes its
temporaries.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from geoseg.errors import GeosegError, InvalidRasterError
from geoseg.io.atomic import atomic_output, check_output_path, temporary_sibling
from geoseg.io.cog import ChunkLoader, CogGrid, all_nodata_error, write_label_cog
from geoseg.io.json_text import parse_json
from geoseg.io.probabilities import LABELS_TAG
from geoseg.io.tiff import metadata_tags, unspecify_extra_samples
from geoseg.types import NODATA_LABEL, ClassSchema

__all__ = [
    "BlockSink",
    "LabelMeta",
    "change_raster_tags",
    "label_cog_from_chunks",
    "label_cog_writer",
    "probabilities_meta",
    "read_class_schema",
    "refuse_change_raster",
    "refuse_probability_raster",
]

#: GeoTIFF tag holding the class schema as JSON.
CLASSES_TAG = "GEOSEG_CLASSES"
#: Tags of a change raster (``geoseg change``'s change.tif): the first and last label map.
CHANGE_FROM_TAG, CHANGE_TO_TAG = "GEOSEG_CHANGE_FROM", "GEOSEG_CHANGE_TO"


class BlockSink:
    """``sink[(band, y, x) slices] = block`` writes a block into an open dataset.

    Safe to call from several threads (writes are serialized); counts the valid
    (non-nodata) pixels of band 1 so an all-nodata result can be refused.
    """

    def __init__(self, dataset: Any) -> None:
        self._dst = dataset
        self._lock = threading.Lock()
        self.valid_pixels = 0
        self.blocks_written = 0

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        _, ys, xs = key
        window = Window.from_slices(ys, xs)
        with self._lock:
            self._dst.write(np.asarray(block, dtype=np.uint8), window=window)
            self.valid_pixels += int(np.count_nonzero(block[0] != NODATA_LABEL))
            self.blocks_written += 1


@dataclass(frozen=True)
class LabelMeta:
    """What a label raster carries besides its pixels (both writers take it).

    Attributes:
        crs, transform: georeferencing, copied from the input scene.
        schema: classes, written as colour table and ``GEOSEG_CLASSES`` tag.
        descriptions: one description per band (1 = labels, 2 = labels + confidence).
        tags: extra dataset tags (model, software version, ...).
        source: the input, named in the all-nodata error.
        overview: ``"mode"``: band 1 holds class ids (colour table, mode overviews);
            ``"average"``: every band is a value (class probabilities: no colour
            table, average overviews).
    """

    crs: CRS
    transform: Affine
    schema: ClassSchema
    descriptions: Sequence[str]
    tags: Mapping[str, str] = field(default_factory=dict)
    source: str = "the input"
    overview: str = "mode"

    @property
    def count(self) -> int:
        """Bands."""
        return len(self.descriptions)

    def profile(self) -> dict[str, Any]:
        """The rasterio creation profile entries for this metadata (uint8, nodata 255)."""
        # value bands: 3 or 4 of them must not become RGB(A)
        photometric = {} if self.overview == "mode" else {"photometric": "MINISBLACK"}
        return {"count": self.count, "dtype": "uint8", "crs": self.crs,
                "transform": self.transform, "nodata": NODATA_LABEL, **photometric}  # fmt: skip

    def write(self, dst: Any) -> None:
        """Set colour table, band descriptions and tags (class schema as JSON) on ``dst``."""
        if self.overview == "mode":
            dst.write_colormap(1, self.schema.colormap())
            if dst.count == 2:  # confidence is a value band, not transparency
                dst.colorinterp = [ColorInterp.palette, ColorInterp.undefined]
        else:
            dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (dst.count - 1)
        for i, text in enumerate(self.descriptions, start=1):
            dst.set_band_description(i, text)
        dst.update_tags(**{CLASSES_TAG: json.dumps(self.schema.to_json())}, **self.tags)


@contextlib.contextmanager
def label_cog_writer(
    path: str | os.PathLike[str], meta: LabelMeta, *, height: int, width: int,
    overwrite: bool = False,
) -> Iterator[BlockSink]:  # fmt: skip
    """Context manager yielding a :class:`BlockSink`; on success the COG appears at ``path``.

    Args:
        path: output ``.tif``.
        meta: georeferencing, classes, band descriptions, tags.
        height, width: raster size in pixels.
        overwrite: replace an existing ``path``.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        InvalidRasterError: no valid pixel was written (the input was all nodata).
    """
    out = Path(path)
    check_output_path(out, overwrite)
    profile = {
        **meta.profile(), "driver": "GTiff", "height": height, "width": width, "tiled": True,
        "blockxsize": 512, "blockysize": 512, "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    with temporary_sibling(out, "stage") as stage, atomic_output(out, overwrite) as final:
        with rasterio.open(stage, "w", **profile) as dst:
            sink = BlockSink(dst)
            yield sink
            if sink.valid_pixels == 0:
                raise all_nodata_error(meta.source)
            meta.write(dst)
        # Tiles are compressed (and overviews computed) on every core; each tile is
        # compressed on its own, so the bytes do not depend on the thread count.
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
            rasterio.shutil.copy(
                stage, final, driver="COG", COMPRESS="DEFLATE",
                OVERVIEW_RESAMPLING=meta.overview.upper(), BLOCKSIZE=512, BIGTIFF="IF_SAFER",
                NUM_THREADS="ALL_CPUS",
            )  # fmt: skip
        if meta.count >= 2:
            unspecify_extra_samples(final)


def label_cog_from_chunks(
    path: str | os.PathLike[str], meta: LabelMeta, grid: CogGrid, load: ChunkLoader,
    overwrite: bool = False,
) -> int:  # fmt: skip
    """Write the label COG at ``path`` from chunks encoded by :func:`~geoseg.io.cog.encode_chunk`.

    Same pixels and metadata as :func:`label_cog_writer` (classes, colour table, band
    descriptions, tags, nodata 255, DEFLATE), but the tiles were compressed by the
    chunk tasks and are only laid out here; tile side and overviews follow
    :mod:`geoseg.io.cog` (cascaded 2 x 2 mode: ties go to the smaller value where
    GDAL's MODE keeps the first, ~0.2 % of overview pixels).

    Returns:
        The number of labelled pixels.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        InvalidRasterError: no pixel is labelled (nothing is written).
    """
    check_output_path(Path(path), overwrite)
    tags = metadata_tags(meta.profile(), meta.write)
    return write_label_cog(path, grid, tags, load, overwrite, meta.source)


def probabilities_meta(labels: LabelMeta, label_path: str | os.PathLike[str]) -> LabelMeta:
    """The metadata of the class-probability raster beside the label map ``label_path``.

    One band per class of ``labels.schema`` (described by its name), the label map's
    classes and provenance tags, :data:`~geoseg.io.probabilities.LABELS_TAG` naming
    the label map, average overviews (see :mod:`geoseg.io.probabilities`).
    """
    tags = {**labels.tags, LABELS_TAG: Path(label_path).name}
    return LabelMeta(
        labels.crs, labels.transform, labels.schema, labels.schema.names, tags, labels.source,
        overview="average",
    )  # fmt: skip


def refuse_probability_raster(path: str | os.PathLike[str], tags: Mapping[str, str]) -> None:
    """Refuse a class-probability raster (``predict --probabilities``) given as a label map.

    It is uint8 and carries the label map's class schema, so the header checks of a
    label map pass, and its band 1 (one class's probability x 254) read as class ids
    gives a report of nonsense transitions with exit 0.

    Args:
        path: the raster given as a label map.
        tags: its dataset tags.

    Raises:
        InvalidRasterError: naming the label map it was written beside.
    """
    if LABELS_TAG not in tags:
        return
    labels = Path(path).with_name(tags[LABELS_TAG])
    raise InvalidRasterError(
        f"{path}: is a class-probability raster (one band per class, 0-254; written by "
        f"`geoseg predict --probabilities` beside the label map {tags[LABELS_TAG]}), not a "
        f"label map of class ids; pass the label map instead, e.g. {labels}"
    )


def change_raster_tags(first: str, last: str) -> dict[str, str]:
    """The tags naming the first and last label map a change raster was computed from."""
    return {CHANGE_FROM_TAG: first, CHANGE_TO_TAG: last}


def refuse_change_raster(path: str | os.PathLike[str], tags: Mapping[str, str]) -> None:
    """Refuse a change raster (``geoseg change``'s change.tif) given as a label map.

    It is uint8 with a class schema (its classes are the transitions, "forest ->
    grassland"), so the header checks of a label map pass, and change detection
    then refuses its K x K classes as too many for a change raster.

    Raises:
        InvalidRasterError: naming the label maps it was computed from.
    """
    if CHANGE_FROM_TAG not in tags:
        return
    first, last = tags[CHANGE_FROM_TAG], tags.get(CHANGE_TO_TAG, "the later map")
    raise InvalidRasterError(
        f"{path}: is a change raster written by `geoseg change` (transition codes from "
        f"{first} to {last}), not a label map of class ids; pass the label maps themselves, "
        f"e.g. {first} {last}"
    )


def read_class_schema(path: str | os.PathLike[str]) -> ClassSchema | None:
    """The class schema stored in a geoseg label raster, or None if it has none."""
    with rasterio.open(path) as src:
        raw = src.tags().get(CLASSES_TAG)
    if raw is None:
        return None
    fix = "rewrite the map with `geoseg predict` or fix the tag with `gdal_edit.py -mo`"
    # a hand-edited tag may be anything, nested 200 000 deep included
    items = parse_json(raw, path, f"{CLASSES_TAG} tag", InvalidRasterError, fix)
    try:
        return ClassSchema.from_json(items)
    except (ValueError, TypeError, KeyError, GeosegError) as exc:
        raise InvalidRasterError(
            f"{path}: malformed {CLASSES_TAG} tag ({str(exc)[:200]}); {fix}"
        ) from exc
