"""Label rasters for the vector tests: smooth blobs that span chunks, speckle, nodata."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def blob_labels(
    height: int,
    width: int,
    seed: int = 0,
    classes: int = 4,
    smooth: float = 6.0,
    speckle: float = 0.02,
    nodata: float = 0.01,
) -> np.ndarray:
    """``(H, W) uint8`` class ids ``0..classes-1`` with 255 = nodata.

    Blobs come from a Gaussian-smoothed random field cut at its quantiles, so
    regions are tens of pixels across and many cross any chunk grid; speckle
    adds single pixels (diagonal contacts, one-pixel holes); nodata is random.
    """
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(height, width)), smooth)
    cuts = np.quantile(field, np.linspace(0, 1, classes + 1)[1:-1])
    labels = np.digitize(field, cuts).astype(np.uint8)
    spots = rng.random((height, width)) < speckle
    labels[spots] = rng.integers(0, classes, int(spots.sum()))
    labels[rng.random((height, width)) < nodata] = 255
    return labels


def components(labels: np.ndarray, connectivity: int) -> int:
    """Connected regions of equal class (nodata excluded), as ``scipy.ndimage.label`` counts."""
    structure = np.ones((3, 3)) if connectivity == 8 else None
    return sum(
        ndimage.label(labels == k, structure=structure)[1] for k in np.unique(labels) if k != 255
    )
