"""Is a probability file really its label map's? A check of content, not of names.

``geoseg predict`` writes a label map as the argmax of the very probabilities it
stores (:mod:`geoseg.io.probabilities`), so in the file of the right date and scene
the labelled class holds the top stored probability at every pixel, up to rounding:
``round(254 p)`` may turn two close probabilities into equal bytes, or lift the
runner-up one byte over the winner. A file of another date or scene on the same grid
(or two files swapped) passes every check of tags, bands and grid; its argmax
disagrees with the map wherever the land cover or the classification differs.

The check reads a fixed set of small windows (:func:`sample_windows`: up to
``SAMPLE_WINDOWS**2`` windows of ``SAMPLE_SIDE**2`` px, evenly spread, chosen by
the raster's size only, so the verdict is the same for any chunking and run) from
both files on their own grid: memory and time do not grow with the scene. A pixel
disagrees when it is nodata in one file only, or when the labelled class's stored
probability is more than :data:`ROUNDING` below the top one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.change.posterior import valid_probabilities
from geoseg.types import ClassSchema

__all__ = [
    "MAX_DISAGREEMENT", "ROUNDING", "SAMPLE_SIDE", "SAMPLE_WINDOWS", "Agreement",
    "agreement", "disagreeing", "sample_windows",
]  # fmt: skip

#: Side (px) of one sampled window: one COG tile or two per window and file.
SAMPLE_SIDE = 32
#: Windows per axis: up to 100 windows, 102,400 px.
SAMPLE_WINDOWS = 10
#: Stored-byte gap between the labelled class and the top class that rounding explains.
ROUNDING = 1
#: Largest share of sampled pixels that may disagree. The right file disagrees
#: nowhere (rounding is forgiven above), so this is a margin for label maps edited
#: after predict (a few pixels relabelled by hand), not for the model: a file whose
#: argmax matches the map on 99.5 % of pixels moves the posterior rule's most likely
#: classes on at most about 0.5 % of the area. Another date or scene differs far more
#: (the Slovenia trial's cloudy date: tens of per cent). 102,400 samples measure
#: the share to about +-0.05 % (2 SE at 0.5 %).
MAX_DISAGREEMENT = 0.005


@dataclass(frozen=True)
class Agreement:
    """How a probability file's argmax and its label map compare on the sample.

    Attributes:
        disagreeing: sampled pixels that disagree (module doc).
        compared: sampled pixels that either file holds data for.
    """

    disagreeing: int
    compared: int

    @property
    def share(self) -> float:
        """Disagreeing share of the compared pixels (0 when none were compared)."""
        return self.disagreeing / self.compared if self.compared else 0.0


def sample_windows(height: int, width: int) -> list[Window]:
    """The windows read from a ``height x width`` raster: all of it when small enough,
    else a ``SAMPLE_WINDOWS x SAMPLE_WINDOWS`` grid of ``SAMPLE_SIDE`` px squares
    from corner to corner (fewer along a short side; they may overlap)."""
    side = SAMPLE_SIDE
    if height * width <= (side * SAMPLE_WINDOWS) ** 2:
        return [Window(0, 0, width, height)]
    h, w = min(side, height), min(side, width)
    rows = np.unique(np.rint(np.linspace(0, height - h, SAMPLE_WINDOWS)).astype(int))
    cols = np.unique(np.rint(np.linspace(0, width - w, SAMPLE_WINDOWS)).astype(int))
    return [Window(int(c), int(r), w, h) for r in rows for c in cols]


def disagreeing(labels: np.ndarray, stored: np.ndarray, class_ids: list[int]) -> np.ndarray:
    """``(h, w) bool``: where ``(K, h, w) uint8`` stored probabilities and ``(h, w)``
    class ids (255 or ids outside ``class_ids``: nodata) disagree (module doc)."""
    index = np.full(256, -1, np.int64)
    index[np.asarray(class_ids, np.int64)] = np.arange(len(class_ids))
    labelled = index[labels]
    has_label = labelled >= 0
    has_probs = valid_probabilities(stored)
    q = stored.astype(np.int16)
    mine = np.take_along_axis(q, np.maximum(labelled, 0)[None], axis=0)[0]
    beaten = mine < q.max(axis=0) - ROUNDING
    return (has_label != has_probs) | (has_label & has_probs & beaten)


def agreement(
    labels_path: str | os.PathLike[str], probs_path: str | os.PathLike[str], schema: ClassSchema
) -> Agreement:
    """Compare a label map and a probability file on the same grid (module doc)."""
    ids = [int(c) for c in schema.ids]
    bad = seen = 0
    with rasterio.open(labels_path) as lab, rasterio.open(probs_path) as prob:
        for win in sample_windows(lab.height, lab.width):
            labels = np.asarray(lab.read(1, window=win))
            stored = np.asarray(prob.read(window=win))
            bad += int(disagreeing(labels, stored, ids).sum())
            seen += int((np.isin(labels, ids) | valid_probabilities(stored)).sum())
    return Agreement(bad, seen)
