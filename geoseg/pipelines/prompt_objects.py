"""From SAM's mask logits on a window to objects on the scene grid, and their outputs.

An :class:`ObjectMask` is one prompt's mask cropped to its bounding box in
native scene px, so memory grows with the objects, never with the scene. The
instance COG (band 1 class: 1 object, 0 background, 255 nodata; band 2 object id)
is written block by block; where objects overlap, the higher predicted-IoU
score wins the pixel (on equal scores the smaller id). Polygons keep every
object whole, so they may overlap.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

from geoseg.areas import ACRE_M2, HECTARE_M2, polygon_area_m2
from geoseg.io.instances import instance_cog_writer
from geoseg.pipelines.prompt_inputs import Prompts, SceneFrame, attribute_row
from geoseg.pipelines.prompt_windows import PromptWindow, scene_valid
from geoseg.types import NODATA_LABEL, ClassSchema

__all__ = [
    "BLOCK",
    "OBJECT_FIELDS",
    "ObjectMask",
    "cut_to_valid",
    "object_polygon",
    "object_table",
    "place_mask",
    "stability_score",
    "write_object_raster",
]

log = logging.getLogger(__name__)

#: Side in px of the blocks the instance COG is written in.
BLOCK = 1024
#: SAM's stability offset: IoU of the mask at logit +1 and at logit -1.
STABILITY_OFFSET = 1.0
#: Fields of the polygon output after the prompt's own (``candidate`` with ``--multimask all``;
#: ``--boxes`` adds ``input_iou`` after them).
OBJECT_FIELDS = ("object_id", "candidate", "score", "stability", "area_m2", "area_ha", "area_ac")


@dataclass(frozen=True)
class ObjectMask:
    """One prompt's mask on the scene grid.

    Attributes:
        id: the prompt's id (band 2 of the raster).
        prompt: index of the prompt in :attr:`Prompts.items`.
        candidate: which of SAM's masks (0 with ``--multimask best``).
        score: SAM's predicted IoU.
        stability: IoU of the mask thresholded at logit +1 and at -1.
        row0, col0: scene px of ``mask[0, 0]``.
        mask: ``(h, w) bool``, cropped to its True pixels.
        best: the prompt's best candidate (the one the raster keeps).
    """

    id: int
    prompt: int
    candidate: int
    score: float
    stability: float
    row0: int
    col0: int
    mask: np.ndarray
    best: bool = True


def stability_score(logits: np.ndarray) -> float:
    """``|logits > +1| / |logits > -1|`` (SAM's automatic mask generator's score; 0 if empty)."""
    union = int(np.count_nonzero(logits > -STABILITY_OFFSET))
    return float(np.count_nonzero(logits > STABILITY_OFFSET) / union) if union else 0.0


def place_mask(
    logits: np.ndarray, valid: np.ndarray, window: PromptWindow, height: int, width: int
) -> tuple[int, int, np.ndarray] | None:
    """SAM's ``(S, S)`` logits on ``window`` -> ``(row0, col0, mask)`` on the scene, or None.

    The mask (logit > 0, on data) is cut to the part of the window on the scene and
    cropped to its True pixels while still decimated; only that crop is repeated
    ``2**level`` times along each axis. So memory follows the object's box on the
    scene, never the window's side (a box far larger than the scene reads a window
    of ``2**k`` x the scene, which at native resolution would not fit in memory).
    """
    f = window.factor
    # the window's native px on the scene, [r0, r1) x [c0, c1), and the decimated
    # px that cover them
    r0, c0 = max(0, -window.row0), max(0, -window.col0)
    r1 = min(window.side, height - window.row0)
    c1 = min(window.side, width - window.col0)
    if r1 <= r0 or c1 <= c0:
        return None
    d_r0, d_c0 = r0 // f, c0 // f
    on_scene = (logits > 0) & valid
    on_scene = on_scene[d_r0 : -(-r1 // f), d_c0 : -(-c1 // f)]
    coarse = _crop(on_scene)
    if coarse is None:
        return None
    top, left, crop = coarse
    mask = np.repeat(np.repeat(crop, f, axis=0), f, axis=1) if f > 1 else crop
    # native px of mask[0, 0] in the window; clip the repeated edges to the scene
    m_r0, m_c0 = (d_r0 + top) * f, (d_c0 + left) * f
    cut_r, cut_c = max(0, r0 - m_r0), max(0, c0 - m_c0)
    mask = mask[cut_r : r1 - m_r0, cut_c : c1 - m_c0]
    cropped = _crop(mask)
    if cropped is None:
        return None
    dy, dx, mask = cropped
    return window.row0 + m_r0 + cut_r + dy, window.col0 + m_c0 + cut_c + dx, mask


def _crop(mask: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    """``(row, col, crop)``: ``mask`` cropped to its True pixels and where the crop starts."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def cut_to_valid(o: ObjectMask, valid: Callable[[Window], np.ndarray]) -> ObjectMask | None:
    """``o`` less its pixels on nodata, cropped again (None: nothing left).

    A mask from a decimated window is repeated ``2**level`` times along each axis:
    a native pixel on nodata next to data can hold it; the instance COG leaves it
    out (its ``valid``), so the polygons, areas and IoUs do too.

    Args:
        valid: ``valid(window) -> (h, w) bool`` where the scene holds data.
    """
    h, w = o.mask.shape
    here = valid(Window(o.col0, o.row0, w, h))
    if here.all():
        return o
    cropped = _crop(o.mask & here)
    if cropped is None:
        return None
    top, left, mask = cropped
    return dataclasses.replace(o, row0=o.row0 + top, col0=o.col0 + left, mask=mask)


def write_object_raster(
    path: Path, frame: SceneFrame, src: Any, objects: Sequence[ObjectMask],
    schema: ClassSchema, overwrite: bool = False, tags: dict[str, str] | None = None,
    valid: Callable[[Window], np.ndarray] | None = None,
) -> None:  # fmt: skip
    """The instance COG of the best candidates on the scene grid (see module doc).

    Args:
        tags: extra dataset tags (``geoseg track``: the date's ``DATE``).
        valid: ``valid(window) -> (h, w) bool``, where the scene holds data (None: ``src``'s
            masks of ``frame.bands``); False pixels are nodata (class 255) and hold no object.
    """
    ranked = sorted((o for o in objects if o.best), key=lambda o: o.id)
    boxes = np.array(
        [(o.row0, o.col0, o.row0 + o.mask.shape[0], o.col0 + o.mask.shape[1]) for o in ranked]
    ).reshape(-1, 4)
    with instance_cog_writer(
        path, height=frame.height, width=frame.width, crs=src.crs, transform=frame.transform,
        schema=schema, tags=tags, overwrite=overwrite, nodata_class=NODATA_LABEL,
    ) as sink:  # fmt: skip
        for y0 in range(0, frame.height, BLOCK):
            for x0 in range(0, frame.width, BLOCK):
                h, w = min(BLOCK, frame.height - y0), min(BLOCK, frame.width - x0)
                win = Window(x0, y0, w, h)
                here = scene_valid(src, win, bands=frame.bands) if valid is None else valid(win)
                hit = np.flatnonzero(
                    (boxes[:, 0] < y0 + h) & (boxes[:, 2] > y0)
                    & (boxes[:, 1] < x0 + w) & (boxes[:, 3] > x0)
                )  # fmt: skip
                block = _block(here, [ranked[k] for k in hit], y0, x0)
                sink[(slice(None), slice(y0, y0 + h), slice(x0, x0 + w))] = block


def _block(valid: np.ndarray, objects: Sequence[ObjectMask], y0: int, x0: int) -> np.ndarray:
    """``(2, h, w) uint32`` class and id of one block at scene px ``(y0, x0)``."""
    h, w = valid.shape
    # calloc'd: a block without objects costs its zero pages, not a pass over them
    out = np.zeros((2, h, w), np.uint32)
    if objects:
        ids = out[1]
        # per-pixel best scores only over the box of the block's objects
        top = max(y0, min(o.row0 for o in objects))
        left = max(x0, min(o.col0 for o in objects))
        bottom = min(y0 + h, max(o.row0 + o.mask.shape[0] for o in objects))
        right = min(x0 + w, max(o.col0 + o.mask.shape[1] for o in objects))
        # scores are SAM's float32 IoUs: float32 compares them exactly, at half the memory
        best = np.full((bottom - top, right - left), -np.inf, np.float32)
        for o in objects:
            oh, ow = o.mask.shape
            ys = slice(max(top, o.row0), min(bottom, o.row0 + oh))
            xs = slice(max(left, o.col0), min(right, o.col0 + ow))
            here = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
            mine = o.mask[
                ys.start - o.row0 : ys.stop - o.row0, xs.start - o.col0 : xs.stop - o.col0
            ]
            scored = (slice(ys.start - top, ys.stop - top), slice(xs.start - left, xs.stop - left))
            take = mine & valid[here] & (o.score > best[scored])
            ids[here][take] = o.id
            best[scored][take] = o.score
        np.greater(ids, 0, out=out[0], casting="unsafe")
    if not valid.all():
        out[0][~valid] = NODATA_LABEL
    return out


def object_table(
    objects: Sequence[ObjectMask], prompts: Prompts, frame: SceneFrame, candidates: bool,
    polygons: Sequence[Any] | None = None, input_iou: np.ndarray | None = None,
) -> gpd.GeoDataFrame:  # fmt: skip
    """One polygon per object (per candidate with ``candidates``): the prompt's fields, then
    :data:`OBJECT_FIELDS` (true ellipsoidal areas), in the scene's CRS.

    The polygons are made of the pixels the instance COG gives the object: its mask
    on data (:func:`cut_to_valid`, :meth:`SceneFrame.valid`), so an area is the sum of
    its raster pixels' true areas; an object left without a pixel gets no polygon.

    Args:
        polygons: each object's :func:`object_polygon` (None: made here).
        input_iou: ``(len(objects),)`` IoU with the prompt's input polygon: an
            ``input_iou`` field after the others (None: no field).
    """
    if polygons is None:
        with frame.valid() as valid:
            cut = [cut_to_valid(o, valid) for o in objects]
        kept = [k for k, o in enumerate(cut) if o is not None]
        objects = [o for o in cut if o is not None]
        polygons = [object_polygon(o, frame) for o in objects]
        input_iou = None if input_iou is None else np.asarray(input_iou)[kept]
    geoms = np.array(list(polygons), dtype=object).reshape(-1)
    area = polygon_area_m2(geoms, frame.crs) if len(geoms) else np.zeros(0)
    rows = []
    clashes: set[str] = set()
    for k, (o, a) in enumerate(zip(objects, area, strict=True)):
        own = dict(attribute_row(prompts, prompts.items[o.prompt]))
        ours = {"object_id": o.id, "candidate": o.candidate, "score": o.score,
                "stability": o.stability, "area_m2": float(a), "area_ha": float(a) / HECTARE_M2,
                "area_ac": float(a) / ACRE_M2}  # fmt: skip
        if not candidates:
            del ours["candidate"]
        if input_iou is not None:
            ours["input_iou"] = float(input_iou[k])
        clashes |= set(own) & set(ours)
        rows.append({**own, **ours})
    if clashes:
        log.warning("prompt fields %s are replaced by geoseg's own", ", ".join(sorted(clashes)))
    table = pd.DataFrame(rows) if rows else _no_rows(prompts, candidates, input_iou is not None)
    return gpd.GeoDataFrame(table, geometry=geoms, crs=frame.crs)


def _no_rows(prompts: Prompts, candidates: bool, iou: bool) -> pd.DataFrame:
    """The table of no object, with the column types of one (writers need them)."""
    own = prompts.attributes.iloc[:0].reset_index(drop=True)
    names = [n for n in OBJECT_FIELDS if candidates or n != "candidate"] + ["input_iou"] * iou
    ours = {name: pd.Series([], dtype="int64" if name in ("object_id", "candidate") else "float64")
            for name in names}  # fmt: skip
    return pd.concat([own.drop(columns=list(ours), errors="ignore"), pd.DataFrame(ours)], axis=1)


def object_polygon(o: ObjectMask, frame: SceneFrame) -> Any:
    """The object's mask as one (Multi)Polygon in the scene's CRS."""
    transform = frame.transform @ Affine.translation(o.col0, o.row0)
    parts = [
        shapely.geometry.shape(geom)
        for geom, _ in rasterio.features.shapes(
            o.mask.astype(np.uint8), mask=o.mask, connectivity=8, transform=transform
        )
    ]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
