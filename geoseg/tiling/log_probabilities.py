"""Float log-probabilities of labelled pixels, from predict's own window grid.

A calibration fit (:mod:`geoseg.training.calibration`) needs the model's class
probabilities at labelled pixels as floats, not the ``round(254 p)`` bytes that
``predict --probabilities`` writes (a byte of 0 has no finite log). This runs the
same global window grid as :func:`~geoseg.tiling.infer.predict_blocks` with trim
stitching (each pixel from the one window whose core holds it; a ``hann`` spec is
run as ``trim``: the probabilities of one window, not a blend), keeps the
``log p`` of the labelled pixels chunk by chunk and never holds the scene.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass

import dask.array as da
import numpy as np

from geoseg.models.temperature import TINY
from geoseg.tiling.execute import Progress, store_blocks
from geoseg.tiling.grid import windows_touching
from geoseg.tiling.infer import PredictorLoader, halo_chunks
from geoseg.types import Predictor, TileSpec

__all__ = [
    "LabelledPixels",
    "LabelledScores",
    "labelled_log_probabilities",
    "tiled_log_probabilities",
]

#: Multiplier of the pixel hash that thins the labelled pixels (Knuth's golden ratio).
_HASH = np.uint64(2654435761)


def _scorer(predictor: Predictor) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``(batch, valid) -> (N, K, W, W) float32`` log-probabilities of ``predictor``:
    its own ``log_probabilities`` (exact log-softmax) where it has one, else ``log p``."""
    own: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = getattr(
        predictor, "log_probabilities", None
    )
    if own is not None:
        return own
    return lambda x, v: np.log(np.maximum(predictor.predict(x, v), TINY)).astype(np.float32)


def _kernel(
    block: np.ndarray, vblock: np.ndarray, *, ys: tuple[int, ...], xs: tuple[int, ...],
    spec: TileSpec, load: PredictorLoader, k: int, block_id: tuple[int, int, int],
) -> np.ndarray:  # fmt: skip
    """``(K, h, w) float32`` log-probabilities of a chunk core; NaN where not valid."""
    s, m, d, w = spec.stride, spec.margin, spec.halo, spec.window
    cy0, cy1 = ys[block_id[1]], ys[block_id[1] + 1]
    cx0, cx1 = xs[block_id[2]], xs[block_id[2] + 1]
    dy0, dx0 = max(cy0 - d, -m), max(cx0 - d, -m)
    valid = vblock[0]
    wins = [
        (i * s - m - dy0, j * s - m - dx0)
        for i in windows_touching(cy0, cy1, ys[-1] // s, spec)
        for j in windows_touching(cx0, cx1, xs[-1] // s, spec)
    ]
    wins = [(r, c) for r, c in wins if valid[r + m : r + m + s, c + m : c + m + s].any()]
    out = np.full((k, cy1 - cy0, cx1 - cx0), np.nan, np.float32)
    if not wins:
        return out
    score = _scorer(load())
    for b in range(0, len(wins), spec.batch_size):
        part = wins[b : b + spec.batch_size]
        x = np.stack([block[:, r : r + w, c : c + w] for r, c in part], dtype=np.float32)
        v = np.stack([valid[r : r + w, c : c + w] for r, c in part])
        for (r, c), logp in zip(part, score(x, v), strict=True):
            r, c = r + dy0 - cy0, c + dx0 - cx0  # window origin in core coordinates
            r0, r1 = max(r + m, 0), min(r + m + s, out.shape[1])
            c0, c1 = max(c + m, 0), min(c + m + s, out.shape[2])
            if r0 < r1 and c0 < c1:
                out[:, r0:r1, c0:c1] = logp[:, r0 - r : r1 - r, c0 - c : c1 - c]
    core_valid = valid[cy0 - dy0 : cy1 - dy0, cx0 - dx0 : cx1 - dx0]
    out[:, ~core_valid] = np.nan
    return out


def tiled_log_probabilities(
    data: da.Array, valid: da.Array, load: PredictorLoader, spec: TileSpec, k: int
) -> da.Array:
    """Lazy ``(K, H, W) float32`` log-probabilities of a scene, NaN where it has no data.

    Args:
        data, valid, load: as for :func:`~geoseg.tiling.infer.predict_blocks`.
        spec: the window grid (run with trim stitching).
        k: the model's number of output channels.
    """
    spec = dataclasses.replace(spec, blend="trim")
    _, h, w = data.shape
    ov, ovv, ys, xs = halo_chunks(data, valid, spec)
    kernel = functools.partial(_kernel, ys=tuple(ys), xs=tuple(xs), spec=spec, load=load, k=k)
    out = da.map_blocks(
        kernel, ov, ovv, chunks=((k,), tuple(np.diff(ys)), tuple(np.diff(xs))),
        dtype=np.float32, meta=np.array((), np.float32), token="geoseg-log-probabilities",
    )  # fmt: skip
    return out[:, :h, :w]


class LabelledScores:
    """``sink[slices] = (K + 1, h, w)`` blocks (log-probabilities, then the class index
    as float, NaN = unlabelled) collect the labelled pixels' rows.

    Args:
        width: the scene's width (pixels are thinned by their position in it).
        keep: the share of labelled pixels kept, in (0, 1]: a pixel is kept when a
            hash of its position falls below it, so the sample does not depend on
            the chunking.
    """

    def __init__(self, width: int, keep: float = 1.0) -> None:
        self.width, self.keep = width, keep
        self.scores: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.labelled = self.non_finite = 0
        self._lock = threading.Lock()

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        logp, target = block[:-1], block[-1]
        labelled = np.isfinite(target)
        take = labelled & np.isfinite(logp).all(axis=0)
        # counted before thinning: the share of NaN/inf does not depend on the sample
        counts = int(labelled.sum()), int((labelled & ~take).sum())
        if self.keep < 1.0:
            rows = np.arange(key[1].start, key[1].stop, dtype=np.uint64)[:, None]
            cols = np.arange(key[2].start, key[2].stop, dtype=np.uint64)[None, :]
            hashed = ((rows * np.uint64(self.width) + cols) * _HASH) % np.uint64(1 << 32)
            take &= hashed < np.uint64(self.keep * (1 << 32))
        with self._lock:
            self.labelled += counts[0]
            self.non_finite += counts[1]
            self.scores.append(logp[:, take].T.copy())
            self.targets.append(target[take].astype(np.int64))


@dataclass(frozen=True)
class LabelledPixels:
    """The labelled pixels with data, as a calibration fit reads them.

    Attributes:
        scores: ``(N, K) float32`` log-probabilities of the kept pixels.
        target: ``(N,) int64`` class index of each.
        labelled: labelled pixels with data (before thinning).
        non_finite: of those, the ones the model gave NaN or inf (never kept).
    """

    scores: np.ndarray
    target: np.ndarray
    labelled: int
    non_finite: int


def labelled_log_probabilities(
    data: da.Array, valid: da.Array, target: da.Array, load: PredictorLoader, spec: TileSpec,
    k: int, max_pixels: int = 1_000_000, scheduler: str = "threads",
    workers: int | None = None, progress: Progress | None = None,
) -> LabelledPixels:  # fmt: skip
    """The model's log-probabilities at the labelled pixels of a scene that hold data.

    Args:
        data, valid, load, spec, k: as for :func:`tiled_log_probabilities`.
        target: ``(H, W)`` dask array of class indices ``0..K-1``; any other value
            is unlabelled.
        max_pixels: at most about this many labelled pixels are kept (a
            position-hashed share of them when there are more).

    Returns:
        the kept pixels' scores and classes, and how many labelled pixels with data
        the model gave a non-finite score (dropped; see :class:`LabelledPixels`).
    """
    index = target.astype(np.float32)
    # nodata is unlabelled here, so a NaN score left is the model's, not the kernel's mask
    index = da.where((target >= 0) & (target < k) & valid, index, np.nan)
    labelled = int(da.isfinite(index).sum().compute(scheduler="sync"))
    sink = LabelledScores(data.shape[2], min(1.0, max_pixels / max(labelled, 1)))
    logp = tiled_log_probabilities(data, valid, load, spec, k)
    stacked = da.concatenate([logp, index.rechunk(logp.chunks[1:])[None]], axis=0)
    store_blocks(stacked.rechunk({0: k + 1}), sink, scheduler, workers, progress)
    if not sink.scores:
        return LabelledPixels(np.zeros((0, k), np.float32), np.zeros(0, np.int64), 0, 0)
    return LabelledPixels(np.concatenate(sink.scores), np.concatenate(sink.targets),
                          sink.labelled, sink.non_finite)  # fmt: skip
