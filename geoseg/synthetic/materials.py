"""Land-cover classes, band names and the spectral materials of the synthetic scenes.

A material fixes a spectrum and a class; several materials (roof types, turbid
flood water, clear-cut slash) share a class, as on the ground.
"""

from __future__ import annotations

import numpy as np

from geoseg.types import ClassInfo, ClassSchema

__all__ = [
    "ASPHALT",
    "BARE",
    "CLOUD_CLASS",
    "CLOUD_SPECTRUM",
    "CONCRETE",
    "CROP",
    "CROP_RIPE",
    "DARK_ROOF",
    "FOREST",
    "GRASS",
    "MATERIAL_CLASS",
    "OPEN_LAND",
    "SENTINEL2_BANDS",
    "SLASH",
    "SPECTRA",
    "SUBURB",
    "TEXTURE_AMP",
    "TILE_ROOF",
    "TRUTH_SCHEMA",
    "TURBID",
    "WATER",
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
#: Class id of ``"cloud"`` in :data:`TRUTH_SCHEMA`.
CLOUD_CLASS = 6

# Material ids: rows of SPECTRA.
WATER, TURBID, FOREST, CROP, GRASS, CONCRETE = range(6)
TILE_ROOF, DARK_ROOF, ASPHALT, SUBURB, BARE, SLASH = range(6, 12)
#: Surface reflectance (0-1) per material (rows) and SENTINEL2_BANDS (columns).
SPECTRA = np.array(
    [
        [0.06, 0.05, 0.03, 0.02, 0.01, 0.01],  # clear water
        [0.08, 0.09, 0.08, 0.06, 0.03, 0.02],  # turbid flood water
        [0.03, 0.05, 0.03, 0.35, 0.16, 0.07],  # forest
        [0.04, 0.08, 0.04, 0.46, 0.20, 0.09],  # crop at peak green (see CROP_RIPE)
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
#: Class id of :data:`TRUTH_SCHEMA` per material.
MATERIAL_CLASS = np.array([0, 0, 1, 2, 3, 4, 4, 4, 4, 4, 5, 5], dtype=np.uint8)
#: Reflectance of ripe crop; crop fields lie between it and the ``CROP`` row of SPECTRA.
CROP_RIPE = np.array([0.08, 0.10, 0.12, 0.26, 0.30, 0.20], dtype=np.float32)
CLOUD_SPECTRUM = np.array([0.45, 0.45, 0.45, 0.45, 0.40, 0.40], dtype=np.float32)
#: Amplitude of fine per-pixel texture per material: canopy and roofs are rougher than fields.
TEXTURE_AMP = np.array(
    [0.02, 0.03, 0.10, 0.04, 0.04, 0.08, 0.08, 0.08, 0.05, 0.10, 0.05, 0.10], np.float32
)
#: Materials of fields: the open land that floods and changes crop phase.
OPEN_LAND = (CROP, GRASS, BARE)
