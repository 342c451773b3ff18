"""Refining polygons with SAM: interior point prompts, and how much each outline moved.

``--interior-points N`` adds up to ``N`` positive points inside each ``--boxes``
polygon to its box prompt. They are deterministic and computed in scene pixels
(so distances are isotropic for square pixels): the polygon's representative
point (``shapely.point_on_surface``) first, then, among the centres of a
:data:`GRID` x :data:`GRID` lattice over the polygon's bounds that lie inside
it, the one farthest from both the boundary and the points already taken
(greedy max of ``min(distance to boundary, distance to the nearest point)``;
ties go to the first in row-major order) while that distance is at least
:data:`MIN_ROOM_PX`. A polygon too thin or too small for more points gets fewer.

``input_iou`` compares an input polygon with its refined object on the scene's
pixel grid, the input reprojected to the scene's CRS first: ``A`` the pixels
whose centre lies in the polygon (rasterized), ``B`` the object's pixels (the
polygons of ``--vector`` outline exactly these), both over the scene's valid
pixels only (the instance COG's: nodata pixels, like parts of the polygon
outside the scene, do not count; SAM cannot see them), each pixel weighted by its
true ellipsoidal area (:func:`geoseg.areas.pixel_area_m2`), so the IoU is
``area(A & B) / area(A | B)`` in m². Pixels rather than polygon overlays keep it
cheap for ragged masks. A polygon whose pixels all lie on nodata
(:func:`on_nodata`) cannot be scored: ``geoseg evaluate`` counts it apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

from geoseg.areas import pixel_area_m2

__all__ = [
    "GRID", "MIN_ROOM_PX", "IouSummary", "Placed", "interior_points", "mask_iou", "on_nodata",
    "summarize_ious",
]  # fmt: skip

#: An object on the scene grid: ``(row0, col0, (h, w) bool mask)``.
Placed = tuple[int, int, np.ndarray]

#: Candidate lattice side for interior points beyond the first.
GRID = 24
#: Least distance in px of a further point from the boundary and from the others.
MIN_ROOM_PX = 0.5


def interior_points(geom: Any, transform: Affine, n: int) -> np.ndarray:
    """Up to ``n`` points well inside ``geom`` (see module doc).

    Args:
        geom: a (Multi)Polygon in the scene's CRS.
        transform: the scene's pixel -> CRS affine transform.
        n: how many points at most (0: none).

    Returns:
        ``(k, 2) float64`` scene pixel ``(x, y)``, ``k <= n``.
    """
    if n <= 0 or geom is None or shapely.is_empty(geom) or shapely.area(geom) <= 0:
        return np.zeros((0, 2))
    inv = ~transform
    px = shapely.affinity.affine_transform(geom, (inv.a, inv.b, inv.d, inv.e, inv.c, inv.f))
    first = shapely.point_on_surface(px)
    chosen = [shapely.get_coordinates(first)[0]]
    if n == 1:
        return np.array(chosen, np.float64)
    x0, y0, x1, y1 = shapely.bounds(px)
    xs = x0 + (np.arange(GRID) + 0.5) * (x1 - x0) / GRID
    ys = y0 + (np.arange(GRID) + 0.5) * (y1 - y0) / GRID
    gx, gy = np.meshgrid(xs, ys)
    cand = shapely.points(gx.ravel(), gy.ravel())
    inside = shapely.contains(px, cand)
    cand_xy = shapely.get_coordinates(cand[inside])
    room = shapely.distance(shapely.boundary(px), cand[inside])
    while len(chosen) < n and len(cand_xy):
        near = np.min(np.hypot(*(cand_xy[:, None, :] - np.array(chosen)[None]).T), axis=0)
        score = np.minimum(room, near)
        best = int(np.argmax(score))
        if score[best] < MIN_ROOM_PX:
            break
        chosen.append(cand_xy[best])
    return np.array(chosen, np.float64)


def mask_iou(geom: Any, mask: Placed | None, frame: Any) -> float:
    """IoU of polygon ``geom`` and an object's pixels over the scene's valid pixels, each
    pixel weighted by its true area.

    Args:
        geom: a (Multi)Polygon in the scene's CRS.
        mask: ``(row0, col0, (h, w) bool)`` the object on the scene grid, or None
            (an empty mask: IoU 0).
        frame: the scene (a :class:`~geoseg.pipelines.prompt_inputs.SceneFrame`:
            ``crs``, ``transform``, ``height``, ``width``, ``valid()``).

    Returns:
        ``sum(area[A & B]) / sum(area[A | B])`` over the scene's valid pixels, ``A``
        the pixels whose centre is in ``geom`` and ``B`` the object's (0 when the
        union is empty).
    """
    if mask is None or geom is None or shapely.is_empty(geom):
        return 0.0
    r0, c0, obj = mask
    top, left, bottom, right = _span(geom, frame, (r0, c0, r0 + obj.shape[0], c0 + obj.shape[1]))
    ok = _valid(frame, top, left, bottom, right)
    a = _rasterized(geom, frame, top, left, bottom, right) & ok
    b = np.zeros(a.shape, bool)
    b[r0 - top : r0 - top + obj.shape[0], c0 - left : c0 - left + obj.shape[1]] = obj
    b &= ok
    area = _separable_area(frame, np.arange(top, bottom), np.arange(left, right))
    union = float(area[a | b].sum())
    return float(area[a & b].sum()) / union if union > 0 else 0.0


def on_nodata(geom: Any, frame: Any) -> bool:
    """``geom`` covers scene pixels (by their centres) and every one is nodata.

    False for a polygon that covers no pixel centre of the scene (too small, or
    outside it): it is not on nodata, it is off the grid.
    """
    if geom is None or shapely.is_empty(geom):
        return False
    top, left, bottom, right = _span(geom, frame)
    if bottom <= top or right <= left:
        return False
    centres = _rasterized(geom, frame, top, left, bottom, right)
    return bool(centres.any()) and not (centres & _valid(frame, top, left, bottom, right)).any()


def _span(
    geom: Any, frame: Any, also: tuple[int, int, int, int] | None = None
) -> tuple[int, int, int, int]:
    """Scene px ``(top, left, bottom, right)`` of ``geom``'s bounds (and of ``also``, the
    same), clipped to the scene."""
    inv = ~frame.transform
    xs, ys = np.array(shapely.bounds(geom)).reshape(2, 2).T
    cols, rows = inv @ (xs[[0, 1, 0, 1]], ys[[0, 0, 1, 1]])
    top, left = math.floor(min(rows)), math.floor(min(cols))
    bottom, right = math.ceil(max(rows)), math.ceil(max(cols))
    if also is not None:
        top, left = min(top, also[0]), min(left, also[1])
        bottom, right = max(bottom, also[2]), max(right, also[3])
    return max(0, top), max(0, left), min(frame.height, bottom), min(frame.width, right)


def _rasterized(geom: Any, frame: Any, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """``(bottom - top, right - left) bool``: pixels whose centre lies in ``geom``."""
    return rasterio.features.rasterize(
        [geom], out_shape=(bottom - top, right - left),
        transform=frame.transform @ Affine.translation(left, top), dtype="uint8",
    ).astype(bool)  # fmt: skip


def _valid(frame: Any, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """``(bottom - top, right - left) bool``: the scene's valid pixels there."""
    with frame.valid() as valid:
        return np.asarray(valid(Window(left, top, right - left, bottom - top)), bool)


def _separable_area(frame: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``(R, C)`` true pixel areas as ``row_area[r] * col_area[c] / area[mid]``: one row and
    one column of true areas instead of ``R x C`` (exact on lon/lat grids, where areas
    vary by row only; in a projected CRS the scale varies far too smoothly over one object
    for the product to differ from the true areas by more than ~1e-8: 3e-9 measured
    over 20 km in UTM 33N 4 degrees off its meridian)."""
    mid_r, mid_c = rows[len(rows) // 2], cols[len(cols) // 2]
    down = pixel_area_m2(frame.crs, frame.transform, rows, [mid_c])
    across = pixel_area_m2(frame.crs, frame.transform, [mid_r], cols)
    return np.asarray(down * across / across[0, len(cols) // 2])


@dataclass(frozen=True)
class IouSummary:
    """IoUs of a set of polygons with their refined (or predicted) polygons.

    Attributes:
        count: polygons scored (an empty mask counts, with IoU 0).
        mean, median: of the IoUs (nan when ``count`` is 0).
        share_50: share of polygons with IoU >= 0.5.
        empty: polygons whose prompt gave an empty mask.
    """

    count: int
    mean: float
    median: float
    share_50: float
    empty: int

    def line(self, what: str = "input polygons") -> str:
        """One line for people, e.g. ``input IoU mean 0.812, median 0.850 over 12 ...``."""
        if self.count == 0:
            return f"IoU: no {what} scored"
        return (
            f"IoU mean {self.mean:.3f}, median {self.median:.3f}, "
            f"{self.share_50:.1%} >= 0.5 over {self.count} {what}"
            + (f" ({self.empty} empty masks count 0)" if self.empty else "")
        )

    def to_json(self) -> dict[str, Any]:
        """The summary for ``metrics.json`` (None for undefined means)."""
        return {"count": self.count, "mean_iou": _finite(self.mean),
                "median_iou": _finite(self.median), "share_iou_0_5": _finite(self.share_50),
                "empty": self.empty}  # fmt: skip


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def summarize_ious(ious: np.ndarray, empty: int) -> IouSummary:
    """Mean, median and share >= 0.5 of ``(N,)`` IoUs (``empty`` of them from empty masks)."""
    if len(ious) == 0:
        return IouSummary(0, math.nan, math.nan, math.nan, empty)
    return IouSummary(len(ious), float(np.mean(ious)), float(np.median(ious)),
                      float(np.mean(ious >= 0.5)), empty)  # fmt: skip
