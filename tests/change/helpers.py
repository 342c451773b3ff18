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


def write_probabilities(
    label_path: Path,
    probs: np.ndarray,
    prob_path: Path | None = None,
    *,
    schema: ClassSchema = SCHEMA,
    tag: bool = True,
    transform: Affine | None = None,
) -> Path:
    """Write ``(K, H, W) float`` probabilities of a label map by the contract of
    :mod:`geoseg.io.probabilities` (uint8 ``round(254 p)``, 255 where the map is
    nodata, schema and label-map tags), and (with ``tag``) name the file in the map's
    ``GEOSEG_PROBABILITIES`` tag, as ``geoseg predict --probabilities`` does."""
    from geoseg.io.probabilities import LABELS_TAG, PROBABILITIES_TAG, quantize, tag_value

    prob_path = prob_path or label_path.with_name(label_path.stem + "_probs.tif")
    with rasterio.open(label_path) as src:
        labels, t = src.read(1), transform or src.transform
    stored = quantize(probs)
    stored[:, labels == 255] = 255
    write_raster(prob_path, stored, transform=t, nodata=255, descriptions=schema.names)
    with rasterio.open(prob_path, "r+") as dst:
        dst.update_tags(
            GEOSEG_CLASSES=json.dumps(schema.to_json()), **{LABELS_TAG: label_path.name}
        )
    if tag:
        with rasterio.open(label_path, "r+") as dst:
            dst.update_tags(**{PROBABILITIES_TAG: tag_value(label_path, prob_path)})
    return prob_path


def random_probabilities(
    shape: tuple[int, int], seed: int, k: int = 3, sharpness: float = 3.0
) -> np.ndarray:
    """``(K, H, W) float64`` softmax of random logits (``sharpness`` scales them)."""
    rng = np.random.default_rng(seed)
    logits = sharpness * rng.normal(size=(k, *shape))
    e = np.exp(logits - logits.max(axis=0))
    return np.asarray(e / e.sum(axis=0))


def labels_of(probs: np.ndarray, nodata: np.ndarray | None = None) -> np.ndarray:
    """``(H, W) uint8`` SCHEMA class ids of the argmax of ``(K, H, W)`` probabilities."""
    out = np.asarray(SCHEMA.ids, np.uint8)[np.argmax(probs, axis=0)]
    if nodata is not None:
        out[nodata] = 255
    return out
