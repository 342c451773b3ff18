"""The three named districts of a synthetic scene: the flood workflow's areas of interest."""

from __future__ import annotations

import geopandas as gpd
import shapely
from rasterio.transform import Affine

__all__ = ["AOI_ZONES", "aoi_zones"]

#: Districts of ``districts.gpkg``: name -> polygon ring as (column, row) fractions of the
#: scene. The west/east bank line runs along the river's mean course, so the flood falls in
#: both; the uplands have a slanted southern edge; the south-east corner is in no district.
AOI_ZONES: dict[str, tuple[tuple[float, float], ...]] = {
    "west bank": ((0.0, 0.0), (0.2, 0.0), (0.2, 1.0), (0.0, 1.0)),
    "east bank": ((0.2, 0.0), (0.5, 0.0), (0.5, 1.0), (0.2, 1.0)),
    "uplands": ((0.5, 0.0), (1.0, 0.0), (1.0, 0.5), (0.75, 0.75), (0.5, 0.75)),
}


def aoi_zones(height: int, width: int, transform: Affine, crs: str) -> gpd.GeoDataFrame:
    """The :data:`AOI_ZONES` districts of an ``H x W`` scene, with a ``name`` column.

    Vertices are rounded to whole pixel corners, so the districts share edges
    exactly, never overlap, and an edge along a pixel boundary never passes
    through a pixel centre.

    Args:
        height: scene rows ``H``.
        width: scene columns ``W``.
        transform: the scene's pixel -> CRS transform.
        crs: the scene's CRS; the polygons are in it.

    Returns:
        Three polygons (``name``, ``geometry``) in ``crs``.
    """
    polygons = []
    for ring in AOI_ZONES.values():
        corners = [transform @ (round(fx * width), round(fy * height)) for fx, fy in ring]
        polygons.append(shapely.Polygon(corners))
    return gpd.GeoDataFrame({"name": list(AOI_ZONES)}, geometry=polygons, crs=crs)
