"""The prompts of ``geoseg prompt``: boxes, points or one point, in the scene's pixel frame.

A layer's CRS follows geoseg's vector rule (:mod:`geoseg.io.vectors_crs`, option
``--prompts-crs``) and the layer is reprojected to the scene's CRS. Each prompt
becomes a :class:`Prompt` in continuous scene pixel coordinates (``x`` = column,
``y`` = row, pixel ``(r, c)`` covering ``[c, c + 1) x [r, r + 1)``):

- ``--boxes``: every feature is one prompt, its geometry's bounding box (in the
  scene's CRS) the box; its id is its feature number (1-based, the file's order:
  a GeoPackage's fid when it was written in one go); with ``interior_points``
  N > 0, up to N positive points inside the polygon join its box
  (:func:`geoseg.pipelines.prompt_refine.interior_points`; those on nodata are
  dropped), and the polygons are kept (:attr:`Prompts.shapes`) to be compared
  with the objects;
- ``--points``: ``label`` 1 (positive, the default) or 0 (negative);
  ``prompt_id`` (a whole number > 0) groups several points into one object and is
  its id; without it every feature (a Point or MultiPoint) is one prompt;
- ``--point X,Y[,CRS]``: one positive point (CRS default: the scene's), id 1; it
  takes its CRS in the text, so ``--prompts-crs`` with it alone is refused.

On a geographic scene across the antimeridian, prompt longitudes are taken
modulo 360 into the scene's range (:mod:`geoseg.pipelines.prompt_antimeridian`).
Invalid geometries are made valid (with a warning); a box wholly outside the
scene, or a point outside it or on nodata, is skipped with a warning; a prompt
left without a positive point is skipped, counted as outside (its positive points
all miss the scene), on nodata (they all fall on nodata) or negative-only (it has
none: label 0 points alone say what is not the object); when nothing is left the
run is refused. A box mostly (over :data:`MOSTLY_OUTSIDE`) outside the scene is
kept, with a warning naming its feature: its object is cut at the scene's edge.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from affine import Affine
from rasterio.windows import Window

from geoseg.errors import GeosegError, InvalidVectorError
from geoseg.io.reproject import layer_in_crs
from geoseg.io.vectors_crs import read_input_layer
from geoseg.pipelines.prompt_antimeridian import Wrap, longitude_wrap, wrap_geometries
from geoseg.pipelines.prompt_refine import interior_points as polygon_points

__all__ = [
    "LABEL", "MOSTLY_OUTSIDE", "OPTION", "PROMPT_ID", "Prompt", "Prompts", "SceneFrame",
    "attribute_row", "read_prompts",
]  # fmt: skip

log = logging.getLogger(__name__)

#: Field of a point layer: 1 positive, 0 negative.
LABEL = "label"
#: Field of a point layer grouping several points into one object (its id).
PROMPT_ID = "prompt_id"
#: The option naming a prompt layer's CRS.
OPTION = "--prompts-crs"
#: Share of a box's area outside the scene above which the box is said to lie mostly outside.
MOSTLY_OUTSIDE = 0.5
#: Features named at most in one warning.
_NAMED = 10


@dataclass(frozen=True)
class SceneFrame:
    """Where the scene is: CRS, pixel grid and which pixels hold data.

    Attributes:
        path: the scene, for messages.
        crs: its CRS (any pyproj input).
        transform: its pixel -> CRS affine transform (north-up).
        height, width: its size in px.
        valid_at: ``valid_at(rows, cols) -> (N,) bool``: True where the pixels hold data.
        valid_window: ``valid_window(window) -> (h, w) bool``: where a window of the
            scene (inside it) holds data, as the instance COG marks it; None: the
            masks of ``bands`` of the file at ``path`` (read on demand, see :meth:`valid`).
        bands: the 1-based scene bands the model reads (a pixel missing one holds no
            data: :mod:`geoseg.io.nodata`); None: every band.
    """

    path: str
    crs: Any
    transform: Affine
    height: int
    width: int
    valid_at: Callable[[np.ndarray, np.ndarray], np.ndarray]
    valid_window: Callable[[Window], np.ndarray] | None = None
    bands: tuple[int, ...] | None = None

    @contextlib.contextmanager
    def valid(self) -> Iterator[Callable[[Window], np.ndarray]]:
        """``valid(window) -> (h, w) bool`` in a block: :attr:`valid_window`, else the
        masks of :attr:`bands` of ``path`` (opened once for the block), the rule the COG
        follows."""
        if self.valid_window is not None:
            yield self.valid_window
            return
        # prompt_windows imports this module
        from geoseg.pipelines.prompt_windows import scene_rasterio, scene_valid

        with scene_rasterio(self.path) as src:
            yield lambda window: scene_valid(src, window, bands=self.bands)


@dataclass(frozen=True)
class Prompt:
    """One object to segment, in continuous scene pixel coordinates.

    Attributes:
        id: the object's id (> 0): band 2 of the output raster.
        points: ``(k, 2) float64`` ``(x, y)`` points (k = 0 for a box).
        labels: ``(k,) int64`` 1 positive, 0 negative.
        box: ``(x0, y0, x1, y1)`` or None.
        row: index of its attributes in :attr:`Prompts.attributes`.
    """

    id: int
    points: np.ndarray
    labels: np.ndarray
    box: tuple[float, float, float, float] | None
    row: int


@dataclass(frozen=True)
class Prompts:
    """The prompts of a run, their layer's attributes and what was skipped.

    Attributes:
        items: the prompts kept.
        attributes: one row per prompt (``Prompt.row``) of the layer's own fields.
        outside: prompts skipped because they (their positive points) miss the scene.
        nodata: prompts skipped because their positive points fall on nodata.
        shapes: ``--boxes``: the layer's geometries in the scene's CRS, one per
            attribute row (``Prompt.row``); empty for point prompts.
        negative: point prompts skipped because they hold no positive point (label 0 only).
    """

    items: list[Prompt]
    attributes: pd.DataFrame = field(default_factory=pd.DataFrame)
    outside: int = 0
    nodata: int = 0
    shapes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    negative: int = 0

    def skipped(self, scene: str = "the scene") -> str:
        """What was skipped, for people: ``2 prompts outside SCENE, 1 prompt on nodata``..."""
        said = [f"{_prompts(self.outside)} outside {scene}"] * bool(self.outside)
        said += [f"{_prompts(self.nodata)} on nodata"] * bool(self.nodata)
        said += [f"{_prompts(self.negative)} with only negative points (label 0): a prompt needs "
                 "at least one positive point (label 1)"] * bool(self.negative)  # fmt: skip
        return ", ".join(said)


def _prompts(n: int) -> str:
    return f"{n} prompt" + "s" * (n != 1)


def read_prompts(
    frame: SceneFrame, *, boxes: str | None = None, points: str | None = None,
    point: str | None = None, prompts_crs: str | None = None, interior_points: int = 0,
    crs_option: str = OPTION,
) -> Prompts:  # fmt: skip
    """The prompts of exactly one of ``boxes`` (a layer), ``points`` (a layer), ``point``
    (``interior_points``: positive points added inside each box's polygon;
    ``crs_option``: the option for ``prompts_crs`` that errors name).

    Raises:
        InvalidVectorError: an unreadable or empty layer, a layer without a usable
            CRS, point fields out of range, or every prompt skipped.
        GeosegError: not exactly one source, a ``point`` that is not ``X,Y[,CRS]``, or
            ``prompts_crs`` with ``point`` (its CRS is written ``X,Y,CRS``).
    """
    if sum(v is not None for v in (boxes, points, point)) != 1:
        raise GeosegError("give exactly one of --boxes LAYER, --points LAYER, --point X,Y")
    if point is not None:
        if prompts_crs is not None:
            _parse_point(point)
            xy = ",".join(p.strip() for p in point.split(",")[:2])
            # 'raster' (the scene's CRS) is what --point X,Y means already
            here = xy if prompts_crs.strip().lower() == "raster" else f"{xy},{prompts_crs}"
            raise GeosegError(
                f"{crs_option} names a prompt layer's CRS, not --point's: write --point X,Y,CRS "
                f"(here --point {here}) and drop {crs_option}"
            )
        found = _point_prompts(frame, point)
        source = f"--point {point}"
    else:
        path = str(boxes or points)
        layer = _layer(frame, path, prompts_crs, crs_option)
        found = (
            _box_prompts(frame, layer, path, interior_points) if boxes
            else _point_layer_prompts(frame, layer, path)
        )  # fmt: skip
        source = path
    if not found.items:
        raise InvalidVectorError(
            f"{source}: no prompt is left to segment ({found.skipped(frame.path)})"
            f"{_advice(found, point is not None, crs_option)}"
        )
    if found.outside or found.nodata or found.negative:
        log.warning("%s: skipped %s", source, found.skipped(frame.path))
    return found


def _advice(found: Prompts, one_point: bool, crs_option: str) -> str:
    """What to check when no prompt is left (negative-only prompts say it themselves)."""
    if found.outside and one_point:
        return "; check the coordinates and give their CRS as --point X,Y,EPSG:XXXX"
    if found.outside:
        return f"; check the prompts and their CRS ({crs_option})"
    if found.nodata:
        return "; put the positive points on pixels that hold data"
    return ""


def _layer(
    frame: SceneFrame, path: str, given: str | None, option: str = OPTION
) -> gpd.GeoDataFrame:
    """The layer in the scene's CRS, geometries made valid, with ``_fid`` (1-based)."""
    layer = read_input_layer(path, given, frame.crs, option)
    if len(layer) == 0:
        raise InvalidVectorError(f"{path}: the layer has no features; give at least one prompt")
    layer = layer_in_crs(layer, frame.crs, path, frame.path, option)
    geoms = wrap_geometries(np.asarray(layer.geometry.values, dtype=object), _wrap(frame))
    bad = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
    if bad.any():
        log.warning("%s: %d invalid geometries made valid (shapely.make_valid)", path, bad.sum())
        geoms = geoms.copy()
        geoms[bad] = shapely.make_valid(geoms[bad])
    layer = layer.set_geometry(gpd.GeoSeries(geoms, index=layer.index, crs=layer.crs))
    return layer.assign(_fid=np.arange(1, len(layer) + 1))


def _attributes(layer: gpd.GeoDataFrame) -> pd.DataFrame:
    return pd.DataFrame(layer.drop(columns=[layer.geometry.name, "_fid"])).reset_index(drop=True)


def _box_prompts(frame: SceneFrame, layer: gpd.GeoDataFrame, path: str, inner: int = 0) -> Prompts:
    geoms = np.asarray(layer.geometry.values, dtype=object)
    kinds = shapely.get_type_id(geoms)
    if np.isin(kinds, (0, 4)).any():  # Point, MultiPoint
        raise InvalidVectorError(
            "--boxes takes polygons (each becomes its bounding box); give points with --points"
        )
    items, outside, mostly_out = [], 0, []
    for row, (geom, fid) in enumerate(zip(geoms, layer["_fid"], strict=True)):
        if geom is None or shapely.is_empty(geom):
            outside += 1
            continue
        x0, y0, x1, y1 = shapely.bounds(geom)
        cols, rows = _to_pixels(frame.transform, np.array([x0, x1]), np.array([y0, y1]))
        box = (float(min(cols)), float(min(rows)), float(max(cols)), float(max(rows)))
        if box[2] <= 0 or box[3] <= 0 or box[0] >= frame.width or box[1] >= frame.height:
            outside += 1
            continue
        if _share_outside(box, frame) > MOSTLY_OUTSIDE:
            mostly_out.append(int(fid))
        points = _on_data(frame, polygon_points(geom, frame.transform, inner))
        items.append(Prompt(int(fid), points, np.ones(len(points), np.int64), box, row))
    if mostly_out:
        which = ("the box of feature %s lies" if len(mostly_out) == 1
                 else "the boxes of features %s lie")  # fmt: skip
        log.warning(
            f"%s: {which} mostly (over %.0f %%) outside %s: segmented, but cut at its edge",
            path, _named(mostly_out), 100 * MOSTLY_OUTSIDE, frame.path,
        )  # fmt: skip
    return Prompts(items, _attributes(layer), outside, shapes=geoms)


def _share_outside(box: tuple[float, float, float, float], frame: SceneFrame) -> float:
    """Share of the box's area (scene px ``(x0, y0, x1, y1)``) outside the scene (0 if none)."""
    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0)
    if area <= 0:
        return 0.0
    across = max(min(x1, frame.width) - max(x0, 0.0), 0.0)
    down = max(min(y1, frame.height) - max(y0, 0.0), 0.0)
    return 1.0 - across * down / area


def _named(ids: list[int]) -> str:
    """``1, 4, 9`` (at most :data:`_NAMED`, then ``and N more``)."""
    more = f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else ""
    return ", ".join(map(str, ids[:_NAMED])) + more


def _on_data(frame: SceneFrame, points: np.ndarray) -> np.ndarray:
    """``(k, 2)`` scene px points, less those outside the scene or on nodata."""
    if not len(points):
        return points
    c, r = np.floor(points[:, 0]).astype(int), np.floor(points[:, 1]).astype(int)
    inside = (r >= 0) & (r < frame.height) & (c >= 0) & (c < frame.width)
    keep = inside.copy()
    if inside.any():
        keep[inside] = frame.valid_at(r[inside], c[inside])
    return points[keep]


def _point_layer_prompts(frame: SceneFrame, layer: gpd.GeoDataFrame, path: str) -> Prompts:
    geoms = np.asarray(layer.geometry.values, dtype=object)
    if not np.isin(shapely.get_type_id(geoms[~shapely.is_missing(geoms)]), (0, 4)).all():
        raise InvalidVectorError(f"{path}: --points takes Point/MultiPoint features")
    labels = _whole_field(layer, LABEL, path, lambda v: np.isin(v, (0, 1)), "0 or 1", 1)
    ids = _whole_field(layer, PROMPT_ID, path, lambda v: v > 0, "> 0", None)
    ids = layer["_fid"].to_numpy(np.int64) if ids is None else ids
    labels = np.ones(len(layer), np.int64) if labels is None else labels
    parts, index = shapely.get_parts(geoms, return_index=True)
    xy = shapely.get_coordinates(parts)
    pixels = np.column_stack(_to_pixels(frame.transform, xy[:, 0], xy[:, 1]))
    return _group_points(frame, pixels, labels[index], ids[index], index, _attributes(layer))


def _wrap(frame: SceneFrame) -> Wrap | None:
    """Longitudes into the scene's range where it crosses the antimeridian (else None)."""
    return longitude_wrap(frame.crs, frame.transform, frame.width)


def _to_pixels(transform: Affine, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CRS coordinates -> continuous scene pixel ``(x = column, y = row)``, float64."""
    inv = ~transform
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f


def _whole_field(
    layer: gpd.GeoDataFrame, name: str, path: str, ok: Callable[[np.ndarray], np.ndarray],
    rule: str, default: int | None,
) -> np.ndarray | None:  # fmt: skip
    """``(N,) int64`` values of field ``name`` (whole numbers meeting ``rule``), or the default."""
    if name not in layer:
        return None if default is None else np.full(len(layer), default, np.int64)
    values = pd.to_numeric(layer[name], errors="coerce").to_numpy(np.float64)
    whole = np.isfinite(values) & (values == np.round(values))
    fine = whole & ok(np.where(whole, values, 0))
    if not fine.all():
        bad = layer[name].to_numpy()[~fine][0]
        bad = bad.item() if isinstance(bad, np.generic) else bad
        raise InvalidVectorError(
            f"{path}: field {name!r} holds {bad!r}; each value must be a whole number {rule}"
        )
    return values.astype(np.int64)


def _group_points(
    frame: SceneFrame, pixels: np.ndarray, labels: np.ndarray, ids: np.ndarray,
    rows: np.ndarray, attributes: pd.DataFrame,
) -> Prompts:  # fmt: skip
    """One prompt per id: its points inside the scene and on data; counts of those skipped."""
    inside = (
        (pixels[:, 0] >= 0) & (pixels[:, 0] < frame.width)
        & (pixels[:, 1] >= 0) & (pixels[:, 1] < frame.height)
    )  # fmt: skip
    valid = np.zeros(len(pixels), bool)
    if inside.any():
        r, c = np.floor(pixels[inside, 1]).astype(int), np.floor(pixels[inside, 0]).astype(int)
        valid[inside] = frame.valid_at(r, c)
    items, skipped = [], {"outside": 0, "nodata": 0, "negative": 0}
    positive = labels == 1
    for pid in dict.fromkeys(ids.tolist()):
        mine = ids == pid
        keep = mine & inside & valid
        if not (keep & positive).any():
            why = (
                "negative" if not (mine & positive).any()
                else "nodata" if (mine & positive & inside).any() else "outside"
            )  # fmt: skip
            skipped[why] += 1
            continue
        first = int(rows[np.flatnonzero(mine)[0]])
        items.append(Prompt(int(pid), pixels[keep], labels[keep].astype(np.int64), None, first))
    return Prompts(items, attributes, skipped["outside"], skipped["nodata"],
                   negative=skipped["negative"])  # fmt: skip


def _point_prompts(frame: SceneFrame, text: str) -> Prompts:
    """``--point X,Y[,CRS]`` as one prompt (a CRS may itself hold commas: ``EPSG:4326``)."""
    x, y, crs = _parse_point(text)
    if crs is not None:
        try:
            to_scene = pyproj.Transformer.from_crs(
                pyproj.CRS.from_user_input(crs), pyproj.CRS.from_user_input(frame.crs),
                always_xy=True,
            )  # fmt: skip
        except pyproj.exceptions.CRSError as exc:
            raise GeosegError(f"--point {text}: {crs!r} is not a CRS ({exc})") from exc
        try:
            x, y = to_scene.transform(x, y, errcheck=True)
        except pyproj.exceptions.ProjError as exc:
            raise GeosegError(
                f"--point {text}: cannot be put in {frame.path}'s CRS ({exc})"
            ) from exc
    wrap = _wrap(frame)
    lon = np.array([x]) if wrap is None else wrap(np.array([x]))
    pixels = np.column_stack(_to_pixels(frame.transform, lon, np.array([y])))
    one = np.ones(1, np.int64)
    return _group_points(frame, pixels, one, one, np.zeros(1, np.int64), pd.DataFrame(index=[0]))


def _parse_point(text: str) -> tuple[float, float, str | None]:
    parts = [p.strip() for p in text.split(",")]
    try:
        x, y = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise GeosegError(
            f"--point {text!r}: expected X,Y or X,Y,CRS (e.g. 512300,4210800,EPSG:32633)"
        ) from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise GeosegError(f"--point {text!r}: coordinates must be finite numbers")
    return x, y, ",".join(parts[2:]) or None


def attribute_row(prompts: Prompts, prompt: Prompt) -> Mapping[str, Any]:
    """The layer's own fields of ``prompt`` (empty for ``--point``)."""
    if prompts.attributes.empty:
        return {}
    return dict(prompts.attributes.iloc[prompt.row])
