"""Label maps for change tests: uint8 rasters with a GEOSEG_CLASSES tag, made in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from geoseg.types import ClassInfo, ClassSchema
from tests.conftest import write_raster

SCHEMA = ClassSchema(
    (
        ClassInfo(1, "forest", (0, 120, 0)),
        ClassInfo(4, "water", (0, 0, 200)),
        ClassInfo(9, "urban", (200, 0, 0)),
    )
)


def write_labels(
    path: Path,
    labels: np.ndarray,
    *,
    schema: ClassSchema = SCHEMA,
    crs: str = "EPSG:32633",
    transform: Affine | None = None,
    date: str | None = None,
) -> Path:
    """Write ``(H, W) uint8`` labels (255 = nodata) with the schema tag (and a DATE tag)."""
    write_raster(path, labels[None], crs=crs, transform=transform, nodata=255)
    with rasterio.open(path, "r+") as dst:
        tags = {"GEOSEG_CLASSES": json.dumps(schema.to_json())}
        if date:
            tags["DATE"] = date
        dst.update_tags(**tags)
    return path


def random_labels(shape: tuple[int, int], seed: int, nodata_share: float = 0.05) -> np.ndarray:
    """``(H, W) uint8`` random classes of SCHEMA with some nodata."""
    rng = np.random.default_rng(seed)
    out = rng.choice(np.array(SCHEMA.ids, np.uint8), size=shape)
    out[rng.random(shape) < nodata_share] = 255
    return out
