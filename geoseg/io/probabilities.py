"""Class-probability rasters: what ``geoseg predict --probabilities`` writes and change reads.

The file format is a contract between ``predict`` (the writer) and ``change --rule
posterior`` (the reader), so it is fixed here:

* a COG on the label map's grid, ``uint8``, one band per class of the label map's
  schema in schema order (band ``k + 1`` is class index ``k``; its description is the
  class name), value ``round(254 p)``, :data:`PROB_NODATA` (255) on every band where
  the label map is nodata;
* tags: ``GEOSEG_CLASSES`` (the label map's schema, as in label maps) and
  :data:`LABELS_TAG` (the label map's file name);
* the label map carries :data:`PROBABILITIES_TAG`: the probability file's path,
  relative to the label map's folder when it lies in or under it, else absolute.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio

from geoseg.errors import InputNotFoundError

__all__ = [
    "LABELS_TAG",
    "PROBABILITIES_TAG",
    "PROB_NODATA",
    "PROB_SCALE",
    "dequantize",
    "probabilities_of",
    "quantize",
    "tag_value",
]

#: Tag of a label map naming its probability file.
PROBABILITIES_TAG = "GEOSEG_PROBABILITIES"
#: Tag of a probability file naming its label map.
LABELS_TAG = "GEOSEG_PROBABILITIES_OF"
#: Stored value of probability 1.
PROB_SCALE = 254
#: Stored value where the label map is nodata.
PROB_NODATA = 255


def quantize(p: np.ndarray) -> np.ndarray:
    """``round(254 p)`` as uint8 for probabilities ``p`` in [0, 1] (any shape)."""
    return np.rint(np.clip(p, 0.0, 1.0) * PROB_SCALE).astype(np.uint8)


def dequantize(stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stored ``(K, h, w) uint8`` bands -> ``(K, h, w) float32`` probabilities, valid mask.

    Probabilities are renormalised to sum to 1 per pixel (rounding to 1/254 breaks
    the sum by up to ``K / 508``); nodata pixels (any band 255, or all bands 0)
    are 0 and ``False`` in the ``(h, w)`` mask.
    """
    valid = ~(stored == PROB_NODATA).any(axis=0)
    p = np.where(valid, stored, 0).astype(np.float32)
    total = p.sum(axis=0)
    valid &= total > 0
    p /= np.where(valid, total, 1.0)
    return p, valid


def tag_value(label_path: str | os.PathLike[str], prob_path: str | os.PathLike[str]) -> str:
    """The :data:`PROBABILITIES_TAG` value a label map stores for its probability file."""
    folder = Path(label_path).resolve().parent
    target = Path(prob_path).resolve()
    try:
        return target.relative_to(folder).as_posix()
    except ValueError:
        return str(target)


def probabilities_of(label_path: str | os.PathLike[str]) -> Path | None:
    """The probability file a label map's tag names, or None when it has no tag.

    Raises:
        InputNotFoundError: the tag names a file that does not exist (moved or
            deleted); the message says to pass ``--probabilities-of``.
    """
    with rasterio.open(label_path) as src:
        value = src.tags().get(PROBABILITIES_TAG)
    if not value:
        return None
    path = Path(value)
    if not path.is_absolute():
        path = Path(label_path).resolve().parent / path
    if not path.is_file():
        raise InputNotFoundError(
            f"{label_path}: its probability file {path} is missing (moved or deleted?); "
            "give the files in date order with --probabilities-of P1 P2 ..."
        )
    return path
