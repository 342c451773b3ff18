"""Confusion matrices of tiled predictions against reference labels, block by block.

Evaluation and training validation score exactly what ``predict`` writes: the
same window grid, kernel and scheduler code, streamed into a sink that counts
``(reference, predicted)`` pairs instead of writing a file.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import dask.array as da
import numpy as np

from geoseg.evaluation.metrics import confusion_from_labels
from geoseg.io.training_data import LABEL_NODATA
from geoseg.tiling.execute import Progress, store_blocks
from geoseg.tiling.infer import PredictorLoader, predict_blocks
from geoseg.types import NODATA_LABEL, TileSpec

__all__ = ["ConfusionSink", "remap_values", "tiled_confusion", "tiled_confusion_sink"]


def remap_values(values: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """``(...) int`` -> ``(...) int32`` through ``mapping``; unmapped values become 255."""
    keys = np.array(sorted(mapping), dtype=np.int64)
    out = np.full(values.shape, NODATA_LABEL, np.int32)
    if keys.size == 0:
        return out
    vals = np.array([mapping[int(k)] for k in keys], dtype=np.int32)
    flat = values.astype(np.int64, copy=False)
    pos = np.clip(np.searchsorted(keys, flat), 0, keys.size - 1)
    hit = keys[pos] == flat
    out[hit] = vals[pos[hit]]
    return out


class ConfusionSink:
    """``sink[slices] = (2, h, w)`` blocks of ``[predicted, reference]`` add to a confusion.

    Args:
        class_ids: the ``K`` classes, in row/column order.
        prediction_map: optional model id -> class id mapping applied to predictions
            (e.g. to merge classes before scoring).
        reference_map: optional reference value -> class id mapping, applied here so
            that reference values it (or, without one, ``class_ids``) does not know
            are counted in :attr:`unknown_reference` (``{value: pixels}``) rather
            than dropped unseen; 255 and the reference nodata are not counted.

    Attributes:
        scene_pixels: pixels with a prediction (valid scene pixels).
        labelled_pixels: those of them with a reference value (not nodata or 255),
            so that a reference covering part of the scene can be told.
    """

    def __init__(
        self,
        class_ids: Sequence[int],
        prediction_map: Mapping[int, int] | None = None,
        reference_map: Mapping[int, int] | None = None,
    ) -> None:
        self.class_ids = [int(c) for c in class_ids]
        self.matrix = np.zeros((len(self.class_ids),) * 2, np.int64)
        self.unknown_reference: dict[int, int] = {}
        self.scene_pixels = self.labelled_pixels = 0
        self._map, self._ref_map = prediction_map, reference_map
        known = self.class_ids if reference_map is None else list(reference_map)
        self._known = np.array([*known, NODATA_LABEL, LABEL_NODATA], np.int64)
        self._lock = threading.Lock()

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        pred, ref = block[0], block[1]
        predicted = pred != NODATA_LABEL
        labelled = int(np.count_nonzero(predicted & (ref != NODATA_LABEL) & (ref != LABEL_NODATA)))
        outside = ref[~np.isin(ref, self._known)]
        values, pixels = np.unique(outside, return_counts=True)
        if self._map is not None:
            pred = remap_values(pred, self._map)
        if self._ref_map is not None:
            ref = remap_values(ref, self._ref_map)
        counts = confusion_from_labels(ref, pred, self.class_ids)
        with self._lock:
            self.matrix += counts
            self.scene_pixels += int(np.count_nonzero(predicted))
            self.labelled_pixels += labelled
            for v, n in zip(values.tolist(), pixels.tolist(), strict=True):
                self.unknown_reference[v] = self.unknown_reference.get(v, 0) + n


def tiled_confusion(
    data: da.Array,
    valid: da.Array,
    reference: da.Array,
    load: PredictorLoader,
    spec: TileSpec,
    model_ids: Sequence[int],
    class_ids: Sequence[int],
    prediction_map: Mapping[int, int] | None = None,
    scheduler: str = "threads",
    workers: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """``(K, K) int64`` confusion (rows reference, columns predicted) over a whole scene.

    See :func:`tiled_confusion_sink` (of which this is the matrix).
    """
    return tiled_confusion_sink(
        data, valid, reference, load, spec, model_ids, class_ids, prediction_map,
        scheduler=scheduler, workers=workers, progress=progress,
    ).matrix  # fmt: skip


def tiled_confusion_sink(
    data: da.Array,
    valid: da.Array,
    reference: da.Array,
    load: PredictorLoader,
    spec: TileSpec,
    model_ids: Sequence[int],
    class_ids: Sequence[int],
    prediction_map: Mapping[int, int] | None = None,
    reference_map: Mapping[int, int] | None = None,
    scheduler: str = "threads",
    workers: int | None = None,
    progress: Progress | None = None,
) -> ConfusionSink:
    """The :class:`ConfusionSink` (confusion and unknown reference values) of a whole scene.

    Args:
        data, valid: the scene as for :func:`~geoseg.tiling.infer.predict_blocks`.
        reference: ``(H, W)`` integer dask array of reference class ids on the
            scene grid; values outside ``class_ids`` are ignored.
        load, spec: the model loader and window grid.
        model_ids: class id of each model output channel.
        class_ids: classes of the confusion matrix.
        prediction_map: optional model id -> class id mapping.
        reference_map: optional reference value -> class id mapping.
    """
    pred = predict_blocks(data, valid, load, spec, model_ids)[0].astype(np.int32)
    ref = reference.astype(np.int32).rechunk(pred.chunks)
    sink = ConfusionSink(class_ids, prediction_map, reference_map)
    store_blocks(da.stack([pred, ref]).rechunk({0: 2}), sink, scheduler, workers, progress)
    return sink
