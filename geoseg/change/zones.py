"""Transition tables per area of interest (AOI) feature, rasterized block by block.

Each feature is burnt into a block with ``rasterio.features.geometry_mask``
(pixel centre inside, GDAL's default rule) only where its bounding box meets the
block, so overlapping features each get their full area and memory stays one
block. Geometries are expected in the map's CRS (see :func:`prepare_aoi`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.features import geometry_mask

from geoseg.areas import HECTARE_M2, polygon_area_m2
from geoseg.change.transitions import TransitionMatrix, TransitionSink
from geoseg.errors import GeosegError
from geoseg.io.reproject import layer_in_crs

__all__ = ["FULL_COVER", "ZoneCoverage", "ZoneMasker", "prepare_aoi"]

log = logging.getLogger(__name__)

#: A feature whose covered share is below this is named in a warning: its table
#: counts only the part the maps cover.
FULL_COVER = 0.99


@dataclass(frozen=True)
class ZoneCoverage:
    """How much of each AOI feature the maps' valid pixels cover.

    Attributes:
        area_m2: ``(N,) float64`` each feature's own ellipsoidal area, m².
        covered: ``(N,) float64`` share (0-1) of that area on valid map pixels:
            the part inside the grid (exact, geometric) less the zone's nodata
            pixels; 0 for a feature that met no valid pixel.
    """

    area_m2: np.ndarray
    covered: np.ndarray


def prepare_aoi(
    frame: gpd.GeoDataFrame, crs: Any, field: str | None, source: str, grid: str = "the maps",
    bounds: tuple[float, float, float, float] | None = None, option: str = "--aoi-crs",
) -> tuple[list[str], np.ndarray]:  # fmt: skip
    """AOI names and ``(N,)`` polygons in ``crs``, invalid geometries made valid.

    Features that cannot be put in ``crs`` (infinite coordinates there) are left out
    with a warning (:func:`geoseg.io.reproject.layer_in_crs`).

    Args:
        frame: the AOI layer (must have a CRS).
        crs: the map grid's CRS.
        field: attribute naming each feature (None: the feature number).
        source: the AOI file, for messages.
        grid: the map whose grid ``crs`` is, for messages.
        bounds: the maps' ``(west, south, east, north)`` in ``crs``; when given, an
            AOI none of whose features meets them is refused.
        option: the option that gives the AOI's CRS, for messages.

    Raises:
        GeosegError: no CRS, no polygon, ``field`` is not a column, or no feature
            overlaps ``bounds``.
        InvalidVectorError: the AOI's CRS cannot be transformed to ``crs`` (a
            local CRS without a datum on either side).
    """
    if frame.crs is None:
        raise GeosegError(f"{source}: the AOI layer has no CRS; set one (e.g. with ogr2ogr -a_srs)")
    if field is not None and field not in frame.columns:
        fields = ", ".join(str(c) for c in frame.columns if c != frame.geometry.name)
        raise GeosegError(f"{source}: no field {field!r}; its fields are {fields}")
    geoms = np.asarray(frame.geometry.values, dtype=object)
    bad = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
    if bad.any():
        log.warning("%s: %d invalid AOI geometries made valid", source, int(bad.sum()))
        geoms[bad] = shapely.make_valid(geoms[bad])
    names = [str(v) for v in frame[field]] if field else [str(i) for i in range(len(frame))]
    keep = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    if not keep.any():
        raise GeosegError(f"{source}: the AOI layer has no geometry")
    kept = gpd.GeoDataFrame(geometry=geoms[keep], crs=frame.crs)
    moved = np.asarray(layer_in_crs(kept, crs, source, grid, option).geometry.values)
    names = [n for n, k in zip(names, keep, strict=True) if k]
    placed = ~shapely.is_missing(moved)  # False: infinite in crs, left out by layer_in_crs
    if bounds is not None and not shapely.intersects(moved[placed], shapely.box(*bounds)).any():
        raise GeosegError(
            f"{source}: the AOI does not overlap the maps ({_where(moved[placed], bounds)}); "
            f"check that it covers the maps' area and that its CRS is right ({option})"
        )
    return [n for n, p in zip(names, placed, strict=True) if p], moved[placed]


def _where(geoms: np.ndarray, bounds: tuple[float, float, float, float]) -> str:
    """The AOI's and the maps' bounds, for the message that they do not meet."""
    maps = ", ".join(f"{v:.6g}" for v in bounds)
    if geoms.size == 0:
        return f"none of its features can be put in the maps' CRS; maps' bounds {maps}"
    aoi = ", ".join(f"{v:.6g}" for v in shapely.total_bounds(geoms))
    return f"AOI bounds {aoi}, maps' bounds {maps}, in the maps' CRS"


def _met(m: TransitionMatrix) -> bool:
    """The zone has valid pixels: classified, or left uncertain by the posterior rule."""
    return bool(m.pixels.any()) or m.uncertain_pixels > 0


class ZoneMasker:
    """Adds code blocks to a zoned :class:`TransitionSink`, one zone per AOI feature.

    Args:
        geoms: ``(N,)`` shapely polygons in the grid's CRS.
        names: ``(N,)`` their names.
        transform: the grid's transform.
        totals: a sink with ``n_zones == N``.
    """

    def __init__(
        self, geoms: Any, names: Sequence[str], transform: Affine, totals: TransitionSink
    ) -> None:
        if totals.n_zones != len(geoms) or len(names) != len(geoms):
            raise GeosegError("give one name and one zone of the sink per AOI geometry")
        self.names = list(names)
        self._geoms = np.asarray(geoms, dtype=object)
        self._tree = shapely.STRtree(self._geoms)
        self._transform = transform
        self.totals = totals

    def add_codes(self, ys: slice, xs: slice, codes: np.ndarray) -> None:
        """Add a ``(h, w)`` code block at rows ``ys``, columns ``xs`` to each AOI it meets."""
        t = self._transform @ Affine.translation(xs.start, ys.start)
        h, w = codes.shape
        box = shapely.box(t.c, t.f + t.e * h, t.c + t.a * w, t.f)
        zones = []
        for i in sorted(self._tree.query(box).tolist()):
            mask = ~geometry_mask([self._geoms[i]], out_shape=(h, w), transform=t)
            zones.append((i, mask))
        if zones:
            self.totals.add_codes(ys, xs, codes, zones)

    def empty_zones(self) -> list[str]:
        """Names of the zones that met no valid pixel (every area of their table is 0)."""
        ids = [str(c) for c in self.totals.class_ids]
        return [n for z, n in enumerate(self.names) if not _met(self.totals.matrix(ids, z))]

    def coverage(self, crs: Any, shape: tuple[int, int]) -> ZoneCoverage:
        """Each feature's own area and the share of it on valid pixels of the ``(H, W)`` grid.

        The part outside the grid is cut off geometrically, so a feature wholly on
        valid pixels is 100 % covered whatever its size (pixel-centre rasterization
        would be off by the pixels along its edge).
        """
        h, w = shape
        t = self._transform
        grid = shapely.Polygon([t @ (0, 0), t @ (w, 0), t @ (w, h), t @ (0, h)])
        area = polygon_area_m2(self._geoms, crs)
        inside = polygon_area_m2(shapely.intersection(self._geoms, grid), crs)
        ids = [str(c) for c in self.totals.class_ids]
        nodata = np.zeros(area.size)
        met = np.zeros(area.size, bool)
        for z in range(area.size):
            m = self.totals.matrix(ids, z)
            nodata[z], met[z] = m.nodata_area_m2, _met(m)
        share = np.divide(inside - nodata, area, out=np.zeros_like(area), where=area > 0)
        return ZoneCoverage(area, np.where(met, np.clip(share, 0.0, 1.0), 0.0))

    def warn_partly_covered(self, source: str, cover: ZoneCoverage) -> None:
        """Log a warning naming the features that met valid pixels but are under
        :data:`FULL_COVER` covered (features that met none: :meth:`warn_empty`)."""
        part = [z for z, c in enumerate(cover.covered) if 0 < c < FULL_COVER]
        if not part:
            return
        named = [
            f"{self.names[z]} ({100 * cover.covered[z]:.1f} % of "
            f"{cover.area_m2[z] / HECTARE_M2:,.2f} ha)"
            for z in part[:10]
        ]
        more = f" and {len(part) - 10} more" if len(part) > 10 else ""
        log.warning(
            "%s: %d of %d AOI features are only partly covered by valid pixels of the maps "
            "(under %g %%): %s; their rows in transitions_by_aoi.csv count the covered part "
            "only (aoi_covered_percent)", source, len(part), len(self.names),
            100 * FULL_COVER, ", ".join(named) + more,
        )  # fmt: skip

    def warn_empty(self, source: str, option: str = "--aoi-crs") -> None:
        """Log a warning naming the zones that met no valid pixel (their tables are all 0 ha)."""
        empty = self.empty_zones()
        if empty:
            more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
            log.warning(
                "%s: %d of %d AOI features overlap no valid pixel of the maps, so their areas "
                "are 0 ha: %s; check that they cover the maps and that their CRS is right "
                "(%s)", source, len(empty), len(self.names), ", ".join(empty[:10]) + more, option,
            )  # fmt: skip
