"""Deterministic synthetic Sentinel-2-like scene pair with true land-cover labels.

A 10 m landscape in UTM 33N (meandering river and lake, fields in different crop
phases, forest, a town with a street grid, bare soil) seen on two dates a year
apart: in between, forest is clear-cut and the river floods nearby fields; clouds
(with shadows) and illumination differ. Both dates have a slanted nodata collar
like a real swath edge. Everything comes from a seed; no real data is copied.
Beside the scenes, three named districts (``districts.gpkg``) are the area of
interest layer of the flood workflow.
Used by ``make demo`` (``python -m geoseg.synthetic sample_data``) and by tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray
from rasterio.transform import Affine
from scipy import ndimage

from geoseg.errors import GeosegError, OutputExistsError
from geoseg.io.raster import write_geotiff
from geoseg.io.vectors import write_vectors
from geoseg.types import NODATA_LABEL, ClassInfo, ClassSchema

__all__ = [
    "AOI_ZONES",
    "CRS",
    "DATE_AFTER",
    "DATE_BEFORE",
    "GSD_M",
    "SENTINEL2_BANDS",
    "TRUTH_SCHEMA",
    "ScenePair",
    "aoi_zones",
    "generate_scene_pair",
    "main",
    "write_sample_data",
]

#: Land-cover classes of the synthetic truth rasters.
TRUTH_SCHEMA = ClassSchema(
    (
        ClassInfo(0, "water", (31, 120, 180)),
        ClassInfo(1, "forest", (27, 120, 55)),
        ClassInfo(2, "cropland", (255, 211, 0)),
        ClassInfo(3, "grassland", (150, 210, 90)),
        ClassInfo(4, "built-up", (227, 26, 28)),
        ClassInfo(5, "bare", (210, 180, 140)),
        ClassInfo(6, "cloud", (240, 240, 240)),
    )
)
#: Band names of the synthetic scenes: blue, green, red, nir, swir1, swir2.
SENTINEL2_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
CRS = "EPSG:32633"
GSD_M = 10.0
DATE_BEFORE = "2024-07-15"
DATE_AFTER = "2025-07-20"
_ORIGIN = (500_000.0, 5_100_000.0)  # upper-left corner, easting/northing in m
_MIN_SIDE = 64
_SENSOR = "synthetic Sentinel-2-like"
_CLOUD = 6

# Spectral materials. A material fixes a spectrum and a class; several materials
# (roof types, turbid flood water, clear-cut slash) share a class, as on the ground.
_WATER, _TURBID, _FOREST, _CROP, _GRASS, _CONCRETE = range(6)
_TILE_ROOF, _DARK_ROOF, _ASPHALT, _SUBURB, _BARE, _SLASH = range(6, 12)
# Surface reflectance (0-1) per material (rows) and SENTINEL2_BANDS (columns).
_SPECTRA = np.array(
    [
        [0.06, 0.05, 0.03, 0.02, 0.01, 0.01],  # clear water
        [0.08, 0.09, 0.08, 0.06, 0.03, 0.02],  # turbid flood water
        [0.03, 0.05, 0.03, 0.35, 0.16, 0.07],  # forest
        [0.04, 0.08, 0.04, 0.46, 0.20, 0.09],  # crop at peak green (see _CROP_RIPE)
        [0.05, 0.08, 0.06, 0.30, 0.22, 0.12],  # grassland
        [0.12, 0.13, 0.14, 0.18, 0.22, 0.21],  # concrete roof
        [0.08, 0.09, 0.15, 0.19, 0.27, 0.22],  # red tile roof
        [0.07, 0.08, 0.09, 0.13, 0.17, 0.16],  # dark roof
        [0.07, 0.08, 0.09, 0.11, 0.14, 0.13],  # asphalt road
        [0.08, 0.10, 0.10, 0.24, 0.22, 0.18],  # houses with gardens (mixed pixels)
        [0.09, 0.12, 0.16, 0.22, 0.30, 0.26],  # bare soil
        [0.07, 0.09, 0.11, 0.20, 0.26, 0.20],  # fresh clear-cut with slash
    ],
    dtype=np.float32,
)
_MATERIAL_CLASS = np.array([0, 0, 1, 2, 3, 4, 4, 4, 4, 4, 5, 5], dtype=np.uint8)
_CROP_RIPE = np.array([0.08, 0.10, 0.12, 0.26, 0.30, 0.20], dtype=np.float32)
_CLOUD_SPECTRUM = np.array([0.45, 0.45, 0.45, 0.45, 0.40, 0.40], dtype=np.float32)
# Amplitude of fine per-pixel texture: canopy and roofs are rougher than fields.
_TEXTURE_AMP = np.array(
    [0.02, 0.03, 0.10, 0.04, 0.04, 0.08, 0.08, 0.08, 0.05, 0.10, 0.05, 0.10], np.float32
)
_OPEN_LAND = (_CROP, _GRASS, _BARE)


@dataclass(frozen=True, eq=False)
class ScenePair:
    """Two co-registered observations of one synthetic landscape and their truth.

    Arrays are read-only. ``after`` is the same place one year later.

    Attributes:
        before: ``(6, H, W) uint16`` reflectance x 10000 in ``SENTINEL2_BANDS``
            order; 0 = nodata (all bands together).
        after: ``(6, H, W) uint16``, like ``before``.
        labels_before: ``(H, W) uint8`` class ids of ``TRUTH_SCHEMA``; 255 = nodata,
            exactly where all bands of ``before`` are 0.
        labels_after: ``(H, W) uint8``, like ``labels_before`` for ``after``.
        transform: pixel -> UTM 33N affine transform, 10 m pixels, north up.
        crs: ``"EPSG:32633"``.
    """

    before: NDArray[np.uint16]
    after: NDArray[np.uint16]
    labels_before: NDArray[np.uint8]
    labels_after: NDArray[np.uint8]
    transform: Affine
    crs: str


@dataclass(frozen=True, eq=False)
class _Landscape:
    material: NDArray[np.uint8]  # (H, W) material id on the first date
    field_id: NDArray[np.intp]  # (H, W) index of the field cell holding each pixel
    field_gain: NDArray[np.float32]  # (n_fields,) brightness of each field (soil, moisture)
    broad: NDArray[np.float32]  # (H, W) smooth zero-mean brightness variation
    fine: NDArray[np.float32]  # (H, W) per-pixel zero-mean texture


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma_px: float
) -> NDArray[np.float32]:
    """Gaussian-filtered noise ``(H, W) float32``, zero mean, unit std (coarse grid: fast)."""
    h, w = shape
    step = max(1, int(sigma_px // 4))
    noise = rng.standard_normal((h // step + 3, w // step + 3), dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, sigma_px / step, mode="wrap")
    if step > 1:
        noise = ndimage.zoom(noise, step, order=1)
    field = noise[:h, :w]
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def _grid(h: int, w: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Row ``(H, 1)`` and column ``(1, W)`` pixel coordinates."""
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


def _scale(shape: tuple[int, int]) -> float:
    """Size factor for features drawn in pixels, 1 at the default 768 x 1024."""
    return float(np.clip(min(shape) / 768, 0.4, 2.0))


def _river_and_lake(rng: np.random.Generator, h: int, w: int) -> NDArray[np.bool_]:
    """Water mask ``(H, W) bool``: a north-south meandering river and a lake beside it."""
    yy, xx = _grid(h, w)
    y = yy[:, 0]
    wander = ndimage.gaussian_filter1d(rng.standard_normal(h + 200), 40)[100 : 100 + h]
    wander /= wander.std() + 1e-12
    period = rng.uniform(0.6, 1.1) * h
    centre = rng.uniform(0.15, 0.25) * w + 0.03 * w * wander
    centre += 0.04 * w * np.sin(2 * np.pi * y / period + rng.uniform(0, 2 * np.pi))
    half_width = 4.5 + 1.5 * np.sin(2 * np.pi * y / rng.uniform(80, 160))
    water = np.abs(xx - centre[:, None]) < half_width[:, None]
    radius = max(6.0, 0.07 * min(h, w))
    lake_y = rng.uniform(0.55, 0.8) * h
    lake_x = centre[int(lake_y)] - 0.9 * radius  # west of the river, away from the town
    dist = np.hypot((yy - lake_y) / 0.75, xx - lake_x) / radius
    return water | (dist + 0.25 * _smooth_noise(rng, (h, w), 12) < 1)


def _field_cells(rng: np.random.Generator, h: int, w: int) -> tuple[NDArray, NDArray, int]:
    """Rotated grid of 250-700 m fields: ``(H, W) intp`` index, ``(H, W) bool`` hedges, count."""
    yy, xx = _grid(h, w)
    angle = rng.uniform(-0.35, 0.35)
    coords = (xx * np.cos(angle) + yy * np.sin(angle), yy * np.cos(angle) - xx * np.sin(angle))
    index, edge, count = np.zeros((h, w), np.intp), np.zeros((h, w), bool), 1
    for coord in coords:
        lo, hi = float(coord.min()), float(coord.max())
        cuts = lo - 1 + np.cumsum(rng.uniform(25, 70, size=int((hi - lo) / 25) + 2))
        idx = np.searchsorted(cuts, coord)
        near = np.minimum(
            np.abs(coord - cuts[np.minimum(idx, cuts.size - 1)]),
            np.abs(coord - cuts[np.maximum(idx - 1, 0)]),
        )
        edge |= near < 0.75
        index, count = index * (cuts.size + 1) + idx, count * (cuts.size + 1)
    return index, edge, count


def _town(rng: np.random.Generator, h: int, w: int) -> NDArray[np.uint8]:
    """Town materials ``(H, W) uint8`` (streets, blocks, parks, a main road); 255 = not town."""
    yy, xx = _grid(h, w)
    dy, dx = yy - rng.uniform(0.35, 0.65) * h, xx - rng.uniform(0.45, 0.6) * w
    radius, block = max(12.0, 0.12 * min(h, w)), rng.uniform(18, 26)
    angle, road_angle = rng.uniform(0, np.pi / 2), rng.uniform(0, np.pi)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = dy * np.cos(angle) - dx * np.sin(angle)
    n = int(2 * radius / block) + 2
    kinds = rng.choice(
        np.array([_CONCRETE, _TILE_ROOF, _DARK_ROOF, _SUBURB, _GRASS], np.uint8),
        p=[0.25, 0.3, 0.1, 0.25, 0.1],
        size=(2 * n + 1, 2 * n + 1),
    )
    bi = np.clip(np.floor(u / block).astype(np.intp) + n, 0, 2 * n)
    bj = np.clip(np.floor(v / block).astype(np.intp) + n, 0, 2 * n)
    street = (np.mod(u, block) < 3) | (np.mod(v, block) < 3)
    town = np.where(street, np.uint8(_ASPHALT), kinds[bi, bj])
    inside = np.hypot(dx, dy) / radius + 0.3 * _smooth_noise(rng, (h, w), 20) < 1
    town[~inside] = 255
    town[np.abs(dx * np.sin(road_angle) - dy * np.cos(road_angle)) < 1.2] = _ASPHALT
    return town


def _base_landscape(rng: np.random.Generator, h: int, w: int) -> _Landscape:
    """Material map of the first date plus the textures both dates share."""
    field_id, edge, n_fields = _field_cells(rng, h, w)
    field_kind = rng.choice(np.array(_OPEN_LAND, np.uint8), p=[0.6, 0.28, 0.12], size=n_fields)
    material = field_kind[field_id]
    material[edge] = _GRASS
    forest = _smooth_noise(rng, (h, w), 45) + 0.3 * _smooth_noise(rng, (h, w), 5)
    material[forest > np.quantile(forest, 0.68)] = _FOREST
    yy, xx = _grid(h, w)  # a gravel pit north or south of the town, so bare soil always shows
    pit_y = rng.choice([rng.uniform(0.08, 0.22), rng.uniform(0.78, 0.92)]) * h
    pit = np.hypot(yy - pit_y, (xx - rng.uniform(0.3, 0.65) * w) / 1.5) < 0.035 * min(h, w)
    material[pit] = _BARE
    material[_river_and_lake(rng, h, w)] = _WATER
    town = _town(rng, h, w)
    material = np.where(town != 255, town, material)
    fine = ndimage.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), 0.8)
    return _Landscape(
        material=material,
        field_id=field_id,
        field_gain=rng.uniform(0.85, 1.15, n_fields).astype(np.float32),
        broad=_smooth_noise(rng, (h, w), 15),
        fine=fine / (fine.std() + 1e-12),
    )


def _footprints(rng: np.random.Generator, h: int, w: int) -> tuple[NDArray, NDArray]:
    """Valid masks ``(H, W) bool`` of both dates: a ragged, slanted swath edge in the east."""
    yy, xx = _grid(h, w)
    edge = rng.uniform(0.76, 0.84) * w + rng.uniform(0.18, 0.26) * w * yy / h
    edge = edge + rng.integers(-1, 2, size=(h, 1))
    return xx < edge, xx < edge - rng.uniform(4, 12)


def _clear_forest(
    rng: np.random.Generator, material: NDArray[np.uint8], valid: NDArray[np.bool_]
) -> NDArray[np.uint8]:
    """Copy of ``material`` with four rectangular clear-cuts: three fresh, one regrown."""
    h, w = material.shape
    out = material.copy()
    forest = material == _FOREST
    candidates = np.flatnonzero(forest & valid)
    if candidates.size == 0:
        return out
    yy, xx = _grid(h, w)
    for k, idx in enumerate(rng.choice(candidates, size=4)):
        cy, cx = divmod(int(idx), w)
        angle = rng.uniform(0, np.pi)
        half_u, half_v = rng.uniform(12, 30, size=2) * _scale((h, w))
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = (yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)
        out[(np.abs(u) < half_u) & (np.abs(v) < half_v) & forest] = _SLASH if k < 3 else _GRASS
    return out


def _flood(rng: np.random.Generator, material: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Open land ``(H, W) bool`` the river overflows into, connected to existing water."""
    water = np.isin(material, (_WATER, _TURBID))
    dist = ndimage.distance_transform_edt(~water)
    reach = 30 * _scale(material.shape) * np.clip(_smooth_noise(rng, dist.shape, 40) + 0.4, 0, None)
    flood = (dist < reach) & np.isin(material, _OPEN_LAND)
    parts, _ = ndimage.label(flood | water)
    wet_parts = np.unique(parts[water])
    return flood & np.isin(parts, wet_parts[wet_parts > 0])


def _surface_reflectance(
    rng: np.random.Generator, land: _Landscape, material: NDArray[np.uint8]
) -> NDArray[np.float32]:
    """Cloud-free reflectance ``(6, H, W) float32`` (0-1): new crop phases and sensor noise."""
    phase = rng.uniform(0.3, 1.0, int(land.field_gain.size)).astype(np.float32)[land.field_id]
    crop = material == _CROP
    open_land = np.isin(material, _OPEN_LAND)
    gain = 1 + 0.05 * land.broad + _TEXTURE_AMP[material] * land.fine
    gain *= np.where(open_land, land.field_gain[land.field_id], np.float32(1))
    out = np.empty((len(SENTINEL2_BANDS), *material.shape), np.float32)
    for b in range(out.shape[0]):
        band = _SPECTRA[:, b][material]
        ripe = _CROP_RIPE[b] + (_SPECTRA[_CROP, b] - _CROP_RIPE[b]) * phase
        out[b] = np.where(crop, ripe, band) * gain
    out *= 1 + 0.02 * rng.standard_normal(out.shape, dtype=np.float32)
    return ndimage.gaussian_filter(out, (0, 0.5, 0.5)).astype(np.float32, copy=False)


def _cloud_opacity(
    rng: np.random.Generator, shape: tuple[int, int], cover: float, sigma_px: float
) -> NDArray[np.float32]:
    """Soft cloud blobs ``(H, W) float32`` in 0-1; ``cover`` of the scene is >= 0.5."""
    puff = _smooth_noise(rng, shape, sigma_px) + 0.35 * _smooth_noise(rng, shape, sigma_px / 5)
    threshold = np.quantile(puff, 1 - cover)
    return np.clip((puff - threshold) / 0.5 + 0.5, 0, 1).astype(np.float32)


def _add_clouds(
    refl: NDArray[np.float32], opacity: NDArray[np.float32], shadow_px: tuple[int, int]
) -> NDArray[np.float32]:
    """Composite clouds over ``refl`` ``(6, H, W)``; shadows fall ``shadow_px`` (dy, dx) away."""
    h, w = opacity.shape
    dy, dx = shadow_px
    shadow = np.zeros_like(opacity)
    shadow[dy:, dx:] = opacity[: h - dy, : w - dx]
    cloud = _CLOUD_SPECTRUM[:, None, None] * (0.85 + 0.15 * opacity)
    return (refl * (1 - 0.6 * shadow) * (1 - opacity) + cloud * opacity).astype(np.float32)


def _observe(
    rng: np.random.Generator,
    land: _Landscape,
    material: NDArray[np.uint8],
    valid: NDArray[np.bool_],
    cloud_cover: float,
) -> tuple[NDArray[np.uint16], NDArray[np.uint8]]:
    """One acquisition: ``(6, H, W) uint16`` DN (0 = nodata) and ``(H, W) uint8`` truth."""
    refl = _surface_reflectance(rng, land, material)
    opacity = _cloud_opacity(rng, material.shape, cloud_cover, rng.uniform(10, 25))
    refl = _add_clouds(refl, opacity, (int(rng.integers(8, 20)), int(rng.integers(8, 20))))
    # Sun angle and atmosphere differ a little between dates: a gain and blue-heavy haze.
    haze = rng.uniform(0, 0.01) * np.array([1, 0.7, 0.4, 0, 0, 0], np.float32)
    refl = refl * rng.uniform(0.95, 1.05) + haze[:, None, None]
    dn = np.clip(np.rint(refl * 10_000), 1, 65_535).astype(np.uint16)
    dn[:, ~valid] = 0
    labels = _MATERIAL_CLASS[material]
    labels[opacity >= 0.5] = _CLOUD
    labels[~valid] = NODATA_LABEL
    return dn, labels


def generate_scene_pair(height: int = 768, width: int = 1024, seed: int = 0) -> ScenePair:
    """Generate a synthetic two-date Sentinel-2-like scene and its true land cover.

    Between the dates forest is clear-cut (to bare soil or regrowing grassland) and
    the river floods fields beside it. About 8 % of the first date is cloud, about
    1 % of the second. The default size takes well under 2 s; scenes much smaller
    than 256 px may lack a class.

    Args:
        height: rows ``H`` in pixels (>= 64).
        width: columns ``W`` in pixels (>= 64).
        seed: the same seed always gives the same arrays.

    Returns:
        The scene pair; see :class:`ScenePair` for shapes and nodata values.

    Raises:
        GeosegError: if ``height`` or ``width`` is below 64 px.
    """
    if min(height, width) < _MIN_SIDE:
        raise GeosegError(
            f"a synthetic scene needs at least {_MIN_SIDE} x {_MIN_SIDE} px, "
            f"got {height} x {width}; pass a larger height and width"
        )
    land_rng, edge_rng, change_rng, before_rng, after_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    land = _base_landscape(land_rng, height, width)
    valid_before, valid_after = _footprints(edge_rng, height, width)
    material_after = _clear_forest(change_rng, land.material, valid_before & valid_after)
    material_after[_flood(change_rng, material_after)] = _TURBID
    before, labels_before = _observe(before_rng, land, land.material, valid_before, 0.08)
    after, labels_after = _observe(after_rng, land, material_after, valid_after, 0.01)
    for array in (before, after, labels_before, labels_after):
        array.flags.writeable = False
    transform = Affine(GSD_M, 0.0, _ORIGIN[0], 0.0, -GSD_M, _ORIGIN[1])
    return ScenePair(before, after, labels_before, labels_after, transform, CRS)


_FILE_NAMES = {
    "before": "scene_before.tif",
    "after": "scene_after.tif",
    "truth_before": "truth_before.tif",
    "truth_after": "truth_after.tif",
    "aoi": "districts.gpkg",
}

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


def _write_outputs(tmp: dict[str, Path], scene: ScenePair) -> None:
    """Write the four rasters of ``scene`` and its districts to the paths in ``tmp``."""
    h, w = scene.labels_before.shape
    districts = aoi_zones(h, w, scene.transform, scene.crs)
    write_vectors(districts, tmp["aoi"], "gpkg", "districts", overwrite=True)
    classes = json.dumps(TRUTH_SCHEMA.to_json())
    grid = {"crs": scene.crs, "transform": scene.transform}
    for key, date in (("before", DATE_BEFORE), ("after", DATE_AFTER)):
        tags = {"DATE": date, "SENSOR": _SENSOR}
        write_geotiff(
            tmp[key], getattr(scene, key), nodata=0, descriptions=SENTINEL2_BANDS, tags=tags,
            **grid,
        )  # fmt: skip
        write_geotiff(
            tmp[f"truth_{key}"], getattr(scene, f"labels_{key}")[None], nodata=NODATA_LABEL,
            descriptions=["class"], tags={"DATE": date, "GEOSEG_CLASSES": classes},
            colormap=TRUTH_SCHEMA.colormap(), **grid,
        )  # fmt: skip


def write_sample_data(
    out_dir: Path, height: int = 768, width: int = 1024, seed: int = 0, overwrite: bool = False
) -> dict[str, Path]:
    """Generate a scene pair; write four tiled (256 px), deflate GeoTIFFs and its districts.

    ``scene_{before,after}.tif``: 6 bands uint16, nodata 0, band descriptions
    ``SENTINEL2_BANDS``, tags ``DATE`` and ``SENSOR``. ``truth_{before,after}.tif``:
    uint8 classes, nodata 255, colour table and ``GEOSEG_CLASSES`` tag (JSON) from
    ``TRUTH_SCHEMA``. ``districts.gpkg``: the :func:`aoi_zones` polygons (layer
    ``districts``, field ``name``), the flood workflow's areas of interest. Files
    are written under temporary names and renamed at the end, so a failure leaves
    no partial output.

    Args:
        out_dir: folder to write into; created if missing.
        height: rows in pixels.
        width: columns in pixels.
        seed: random seed, see :func:`generate_scene_pair`.
        overwrite: replace existing files instead of refusing.

    Returns:
        Paths keyed ``"before"``, ``"after"``, ``"truth_before"``, ``"truth_after"``,
        ``"aoi"``.

    Raises:
        OutputExistsError: if an output exists and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    paths = {key: out_dir / name for key, name in _FILE_NAMES.items()}
    for path in paths.values():
        if path.exists() and not overwrite:
            raise OutputExistsError(
                f"{path} already exists; use overwrite (--overwrite) to replace it"
            )
    scene = generate_scene_pair(height, width, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = {k: p.with_name(f".{p.stem}.{os.getpid()}.tmp{p.suffix}") for k, p in paths.items()}
    try:
        _write_outputs(tmp, scene)
        for key, path in paths.items():
            os.replace(tmp[key], path)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return paths


def _parse_size(text: str) -> tuple[int, int]:
    """``"768x1024"`` -> ``(768, 1024)``."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 768x1024, got {text!r}") from None
    return height, width


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m geoseg.synthetic OUT_DIR [--size HxW] [--seed N] [--overwrite]``; exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m geoseg.synthetic",
        description="Write a synthetic Sentinel-2-like scene pair, its true land cover and "
        "districts.",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the files into")
    parser.add_argument("--size", type=_parse_size, default=(768, 1024), help="HxW in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        height, width = args.size
        paths = write_sample_data(args.out_dir, height, width, args.seed, args.overwrite)
    except GeosegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
