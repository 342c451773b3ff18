"""The class-probability files of label maps: found, checked, and put on the maps' common grid.

The files follow :mod:`geoseg.io.probabilities` (written by ``geoseg predict
--probabilities``). Each must lie on its own label map's grid, hold one band per
class of the map's schema, and its argmax must reproduce the map (checked on a
sample, on the map's own grid, by :mod:`geoseg.change.probability_content`: names
prove nothing, a file of another date may carry any name); once checked, it is read like its map in
:func:`geoseg.change.align.align_label_maps`: a window of it when the map is on
the first map's grid, else resampled (nearest, through a ``WarpedVRT``) onto the
common grid, block by block.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geoseg.change.align import AlignedMaps, LabelMapInfo, read_label_map_info
from geoseg.change.probability_content import MAX_DISAGREEMENT, agreement
from geoseg.errors import InputNotFoundError, InvalidRasterError
from geoseg.io.grids import same_grid
from geoseg.io.labels import read_class_schema
from geoseg.io.probabilities import LABELS_TAG, PROB_NODATA, probabilities_of
from geoseg.io.truncation import refuse_truncated

__all__ = ["align_probabilities", "probability_paths"]

log = logging.getLogger(__name__)

_GIVE = "give the files in date order with --probabilities-of P1 P2 ..."


def probability_paths(maps: Sequence[str], given: Sequence[str] | None) -> list[Path]:
    """The probability file of each map: ``given`` (date order), else each map's tag.

    Raises:
        InputNotFoundError: a map has no tag and none was given, a tag names a
            missing file, or a given file does not exist.
        InvalidRasterError: ``given`` does not hold one file per map.
    """
    if given is not None:
        if len(given) != len(maps):
            raise InvalidRasterError(
                f"--probabilities-of gives {len(given)} files for {len(maps)} maps; "
                "give one probability file per map, in the maps' order"
            )
        for path in given:
            if not Path(path).is_file():
                raise InputNotFoundError(f"{path}: no such probability file; {_GIVE}")
        return [Path(p) for p in given]
    found = []
    for path in maps:
        prob = probabilities_of(path)
        if prob is None:
            raise InputNotFoundError(
                f"{path}: names no probability file; run `geoseg predict` with "
                f"--probabilities for every date, or {_GIVE}"
            )
        found.append(prob)
    return found


def _check(prob: Path, info: LabelMapInfo, others: Sequence[str]) -> None:
    """``prob`` is a probability file of ``info``'s map (module doc); ``others``: all maps."""
    k = len(info.schema)
    refuse_truncated(str(prob))  # else its lost tags read as another grid or no classes
    with rasterio.open(prob) as src:
        count, dtype, tags = src.count, np.dtype(src.dtypes[0]), src.tags()
        grid = (src.crs, src.transform, (src.height, src.width))
    if dtype != np.uint8 or count != k:
        raise InvalidRasterError(
            f"{prob}: has {count} {dtype} bands, not the {k} uint8 class probabilities of "
            f"{info.path} ({', '.join(info.schema.names)}); {_GIVE}"
        )
    schema = read_class_schema(prob)
    if schema != info.schema:
        names = list(schema.names) if schema is not None else "none"
        raise InvalidRasterError(
            f"{prob}: its classes ({names}) are not those of {info.path} "
            f"({list(info.schema.names)}); {_GIVE}"
        )
    if not same_grid(*grid, info.crs, info.transform, (info.height, info.width)):
        raise InvalidRasterError(
            f"{prob}: is not on the grid of its label map {info.path} (CRS, transform or "
            f"size differ); {_GIVE}"
        )
    _check_content(prob, info, tags.get(LABELS_TAG), others)


def _check_content(prob: Path, info: LabelMapInfo, owner: str | None, maps: Sequence[str]) -> None:
    """The argmax of ``prob`` reproduces ``info``'s map (:mod:`geoseg.change.probability_content`);
    the file's :data:`LABELS_TAG` (``owner``) only adds a hint to the message."""
    found = agreement(info.path, prob, info.schema)
    if found.share <= MAX_DISAGREEMENT:
        return
    hint = (
        f"; its {LABELS_TAG} tag names {owner}" if owner and owner != Path(info.path).name else ""
    )
    order = " ".join(f"<probabilities of {m}>" for m in maps)
    raise InvalidRasterError(
        f"{prob}: its most likely classes disagree with {info.path} at "
        f"{100 * found.share:.1f} % of {found.compared:,} sampled pixels (at most "
        f"{100 * MAX_DISAGREEMENT:g} % may), so it holds another date's or scene's "
        f"probabilities{hint}; give each map the file `geoseg predict --probabilities` "
        f"wrote with it, in date order: --probabilities-of {order}"
    )


def _window_blocks(path: Path, info: LabelMapInfo, aligned: AlignedMaps, chunk: int) -> da.Array:
    """The window of ``path`` that the common grid covers (``info`` is on the first map's grid)."""
    col, row = ~info.transform @ (aligned.transform.c, aligned.transform.f)
    ys, xs = round(row), round(col)

    def read(src: Any, win: Window) -> np.ndarray:
        return np.asarray(
            src.read(window=Window(xs + win.col_off, ys + win.row_off, win.width, win.height))
        )

    return _blocks(path, aligned, chunk, read)


def _warped(src: Any, aligned: AlignedMaps, win: Window) -> np.ndarray:
    with WarpedVRT(
        src, crs=aligned.crs, transform=aligned.transform, width=aligned.width,
        height=aligned.height, resampling=Resampling.nearest, nodata=PROB_NODATA,
        src_nodata=PROB_NODATA,
    ) as vrt:  # fmt: skip
        return np.asarray(vrt.read(window=win))


def _blocks(path: Path, aligned: AlignedMaps, chunk: int, read: Any) -> da.Array:
    """``(K, H, W) uint8`` lazy blocks of ``path`` on the common grid, ``read(src, window)``."""
    k = len(aligned.schema)
    shape = (aligned.height, aligned.width)

    def block(block_info: Any = None) -> np.ndarray:
        _, (y0, y1), (x0, x1) = block_info[None]["array-location"]
        with rasterio.open(path) as src:
            return np.asarray(read(src, Window(x0, y0, x1 - x0, y1 - y0)), np.uint8)

    chunks = da.core.normalize_chunks((k, chunk, chunk), (k, *shape))
    return da.map_blocks(block, chunks=chunks, dtype=np.uint8, meta=np.array((), np.uint8))


def align_probabilities(
    aligned: AlignedMaps, probs: Sequence[str | os.PathLike[str]], chunk: int
) -> tuple[da.Array, da.Array]:
    """Check every map's probability file; the first and last date's on the common grid.

    Returns:
        ``((K, H, W), (K, H, W))`` lazy uint8 stored probabilities (255 nodata) of
        the first and the last map, chunked like the aligned label maps.

    Raises:
        InputNotFoundError / InvalidRasterError: a file is missing, has other
            classes or bands, or lies on another grid than its label map.
    """
    infos = [read_label_map_info(p) for p in aligned.paths]
    for prob, info in zip(probs, infos, strict=True):
        if not Path(prob).is_file():
            raise InputNotFoundError(f"{prob}: no such probability file; {_GIVE}")
        _check(Path(prob), info, aligned.paths)
    out = []
    for i in (0, len(infos) - 1):
        path = Path(probs[i])
        if aligned.resampled[i]:
            out.append(_blocks(path, aligned, chunk, lambda s, w: _warped(s, aligned, w)))
        else:
            out.append(_window_blocks(path, infos[i], aligned, chunk))
    return out[0], out[1]
