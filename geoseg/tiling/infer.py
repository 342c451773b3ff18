"""Seam-free tiled inference as a dask graph (DESIGN.md, "Tiled inference").

The scene is reflect-padded to whole strides, cut into chunks that are multiples
of the stride, and given a halo (``m`` for trim stitching, ``S + m`` for Hann
blending) with ``dask.array.overlap``. Each chunk then runs exactly the windows of
the global grid that reach its core, so the result does not depend on chunking,
worker count or scheduler.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dask.array as da
import numpy as np

from geoseg.io.probabilities import quantize
from geoseg.tiling.grid import chunk_starts, hann_weight, reflect_indices, windows_touching
from geoseg.tiling.halo import recomputed, with_halo
from geoseg.types import NODATA_LABEL, Predictor, TileSpec

__all__ = ["confidence_to_uint8", "halo_chunks", "predict_blocks", "reflect_pad"]

PredictorLoader = Callable[[], Predictor]


def confidence_to_uint8(p: np.ndarray) -> np.ndarray:
    """Probability in [0, 1] -> uint8 ``round(254 p)``; 255 is left for nodata.

    The quantisation of class-probability rasters (:func:`geoseg.io.probabilities.quantize`).
    """
    return quantize(p)


def reflect_pad(arr: da.Array, axis: int, before: int, after: int) -> da.Array:
    """``arr`` reflect-padded along ``axis`` like ``np.pad(mode="reflect")``, any pad width."""
    n = arr.shape[axis]
    idx = reflect_indices(n, before, after)
    parts = []
    if before:
        parts.append(da.take(arr, idx[:before], axis=axis))
    parts.append(arr)
    if after:
        parts.append(da.take(arr, idx[before + n :], axis=axis))
    return da.concatenate(parts, axis=axis) if len(parts) > 1 else arr


def _padded_chunks(starts: Sequence[int], margin: int) -> tuple[int, ...]:
    sizes = [b - a for a, b in itertools.pairwise(starts)]
    sizes[0] += margin
    sizes[-1] += margin
    return tuple(sizes)


def _window_batches(
    block: np.ndarray,
    vblock: np.ndarray,
    origins: list[tuple[int, int]],
    spec: TileSpec,
    dtype: np.dtype[Any] | type = np.float32,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(N, C, W, W)`` windows as ``dtype`` and ``(N, W, W) bool`` validity, batch by batch."""
    w = spec.window
    for k in range(0, len(origins), spec.batch_size):
        part = origins[k : k + spec.batch_size]
        x = np.stack([block[:, r : r + w, c : c + w] for r, c in part], dtype=dtype)
        v = np.stack([vblock[r : r + w, c : c + w] for r, c in part])
        yield x, v


def _run_windows(
    block: np.ndarray,
    vblock: np.ndarray,
    origins: list[tuple[int, int]],
    predictor: Predictor,
    spec: TileSpec,
) -> list[np.ndarray]:
    """Probabilities ``(K, W, W)`` for each window whose top-left is at ``origins``."""
    out: list[np.ndarray] = []
    for x, v in _window_batches(block, vblock, origins, spec):
        out.extend(predictor.predict(x, v))
    return out


def _filled(
    batches: Iterator[tuple[np.ndarray, np.ndarray]], size: int, counts: list[int]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each batch filled up to ``size`` windows with blank (all-nodata) ones.

    cuDNN chooses its convolution algorithms by batch size, so on a GPU a window
    run in a short last batch can come out a rounding step different from the same
    window in a full one; filling every batch keeps the map independent of the
    chunking. ``counts`` receives the number of real windows of each batch.
    """
    for x, v in batches:
        n = len(x)
        counts.append(n)
        if n < size:
            x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)])
            v = np.concatenate([v, np.zeros((size - n, *v.shape[1:]), bool)])
        yield x, v


def _tops(
    predictor: Predictor, block: np.ndarray, vblock: np.ndarray,
    origins: list[tuple[int, int]], spec: TileSpec, probabilities: bool = False,
) -> Iterator[np.ndarray]:  # fmt: skip
    """``(2 or 2 + K, W, W) uint8`` of each window, in order: the winning channel,
    ``round(254 p)`` of its probability and, with ``probabilities``, of every channel's.

    A predictor with ``predict_tops`` (:class:`~geoseg.models.runtime.TorchPredictor`)
    reduces on its device and takes the scene's own integer type; any other, or any
    asked for ``probabilities``, gives probabilities that are reduced here (the same
    softmax values, so the same winner). With ``probabilities`` every batch is
    filled (:func:`_filled`) on the CPU too: oneDNN's float sums also depend on the
    batch size, and every class's ``round(254 p)`` lands on a rounding edge far more
    often than the winner changes (measured: 2 values in 78 000 moved between
    chunkings without filling).
    """
    many = None if probabilities else getattr(predictor, "predict_tops", None)
    counts: list[int] = []  # windows in each batch, before filling
    dtype = np.float32 if many is None else block.dtype
    batches = _window_batches(block, vblock, origins, spec, dtype)
    if probabilities or getattr(predictor, "fixed_batch", False):
        batches = _filled(batches, spec.batch_size, counts)
    if many is not None:
        for k, top in enumerate(many(batches)):
            yield from top[: counts[k]] if counts else top
        return
    for k, (x, v) in enumerate(batches):
        prob = predictor.predict(x, v)
        yield from _reduced(prob[: counts[k]] if counts else prob, probabilities)


def _reduced(prob: np.ndarray, probabilities: bool) -> np.ndarray:
    """``(N, 2 [+ K], W, W) uint8`` winner, its ``round(254 p)`` [and all K] of ``(N, K, W, W)``."""
    best = np.argmax(prob, axis=1)
    p = np.take_along_axis(prob, best[:, None], axis=1)
    parts = [best[:, None].astype(np.uint8), confidence_to_uint8(p)]
    if probabilities:
        parts.append(quantize(prob))
    return np.concatenate(parts, axis=1)


def _trim_core(
    block: np.ndarray,
    vblock: np.ndarray,
    wins: list[tuple[int, int]],
    offset: tuple[int, int],
    shape: tuple[int, int],
    load: PredictorLoader,
    spec: TileSpec,
    bands: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """``(bands, h, w) uint8`` channel index, confidence [and K probabilities] of a chunk
    core (``bands`` is 2 or 2 + K), and what is covered.

    Window cores tile the plane, so with trim blending each pixel takes the winner of
    the one window whose core holds it; without probabilities the model reduces its
    own to that before they leave the device (``predict_tops``). The result equals
    accumulating the probabilities with weight 1 (:func:`_accumulate`, :func:`_finish`).
    """
    h, w = shape
    m, s = spec.margin, spec.stride
    top = np.zeros((bands, h, w), dtype=np.uint8)
    covered = np.zeros((h, w), dtype=bool)
    if not wins:
        return top, covered
    tops = _tops(load(), block, vblock, wins, spec, probabilities=bands > 2)
    for (r, c), win in zip(wins, tops, strict=True):
        r, c = r + offset[0], c + offset[1]
        r0, r1 = max(r + m, 0), min(r + m + s, h)
        c0, c1 = max(c + m, 0), min(c + m + s, w)
        if r0 < r1 and c0 < c1:
            top[:, r0:r1, c0:c1] = win[:, r0 - r : r1 - r, c0 - c : c1 - c]
            covered[r0:r1, c0:c1] = True
    return top, covered


def _kernel(
    block: np.ndarray,
    vblock: np.ndarray,
    *,
    ys: tuple[int, ...],
    xs: tuple[int, ...],
    spec: TileSpec,
    load: PredictorLoader,
    lut: np.ndarray,
    with_confidence: bool,
    with_probabilities: bool,
    block_id: tuple[int, int, int],
) -> np.ndarray:
    """Labels [confidence] [K probabilities] ``(1 [+ 1] [+ K], h, w) uint8`` of a chunk core."""
    s, m, d = spec.stride, spec.margin, spec.halo
    by, bx = block_id[1], block_id[2]
    cy0, cy1, cx0, cx1 = ys[by], ys[by + 1], xs[bx], xs[bx + 1]
    dy0, dx0 = max(cy0 - d, -m), max(cx0 - d, -m)
    vblock = vblock[0]
    core_valid = vblock[cy0 - dy0 : cy1 - dy0, cx0 - dx0 : cx1 - dx0]
    wins = [
        (i * s - m - dy0, j * s - m - dx0)
        for i in windows_touching(cy0, cy1, (ys[-1]) // s, spec)
        for j in windows_touching(cx0, cx1, (xs[-1]) // s, spec)
    ]
    lo = m if spec.blend == "trim" else 0
    hi = lo + (s if spec.blend == "trim" else spec.window)
    wins = [(r, c) for r, c in wins if vblock[r + lo : r + hi, c + lo : c + hi].any()]
    shape = (cy1 - cy0, cx1 - cx0)
    offset = (dy0 - cy0, dx0 - cx0)
    bands = (with_confidence, with_probabilities)
    if spec.blend == "trim":
        n = 2 + len(lut) * with_probabilities
        top, covered = _trim_core(block, vblock, wins, offset, shape, load, spec, n)
        return _labels(top, covered & core_valid, lut, *bands)
    acc = np.zeros((len(lut), *shape), dtype=np.float32)
    wsum = np.zeros(shape, dtype=np.float32)
    if wins:
        probs = _run_windows(block, vblock, wins, load(), spec)
        weight = hann_weight(spec.window)
        for (r, c), p in zip(wins, probs, strict=True):
            _accumulate(acc, wsum, p, weight, r + offset[0], c + offset[1], lo, hi)
    return _finish(acc, wsum, core_valid, lut, bands)


def _accumulate(
    acc: np.ndarray,
    wsum: np.ndarray,
    prob: np.ndarray,
    weight: np.ndarray,
    r: int,
    c: int,
    lo: int,
    hi: int,
) -> None:
    """Add the part ``[lo:hi]`` of a window whose top-left is at core offset ``(r, c)``."""
    h, w = wsum.shape
    r0, r1 = max(r + lo, 0), min(r + hi, h)
    c0, c1 = max(c + lo, 0), min(c + hi, w)
    if r0 >= r1 or c0 >= c1:
        return
    sl = (slice(r0 - r, r1 - r), slice(c0 - c, c1 - c))
    wt = weight[sl]
    acc[:, r0:r1, c0:c1] += prob[(slice(None), *sl)] * wt
    wsum[r0:r1, c0:c1] += wt


def _labels(
    top: np.ndarray, covered: np.ndarray, lut: np.ndarray, with_conf: bool, with_probs: bool
) -> np.ndarray:
    """``(1 [+ 1] [+ K], h, w) uint8`` class ids [confidence] [probabilities] of ``top``
    (channel, confidence, probabilities) where ``covered``, else nodata."""
    label = np.full(covered.shape, NODATA_LABEL, dtype=np.uint8)
    label[covered] = lut[top[0][covered]]
    picked = [1] * with_conf + list(range(2, 2 + len(lut) * with_probs))
    out = np.full((1 + len(picked), *covered.shape), NODATA_LABEL, dtype=np.uint8)
    out[0] = label
    for k, band in enumerate(picked, start=1):
        out[k][covered] = top[band][covered]
    return out


def _finish(
    acc: np.ndarray, wsum: np.ndarray, valid: np.ndarray, lut: np.ndarray,
    bands: tuple[bool, bool],
) -> np.ndarray:  # fmt: skip
    """:func:`_labels` of blended probabilities ``acc`` ``(K, h, w)`` with weights ``wsum``.

    ``bands``: with confidence, with probabilities. The probabilities are the
    blended ones whose argmax is the label.
    """
    covered = valid & (wsum > 0)
    best = np.argmax(acc, axis=0)
    with_conf, with_probs = bands
    top = np.zeros((2 + len(lut) * with_probs, *wsum.shape), dtype=np.uint8)
    top[0] = best
    if with_conf or with_probs:
        p = acc[:, covered] / wsum[covered]
        top[1][covered] = confidence_to_uint8(np.take_along_axis(p, best[covered][None], 0)[0])
        if with_probs:
            top[2:, covered] = quantize(p)
    return _labels(top, covered, lut, with_conf, with_probs)


def halo_chunks(
    data: da.Array, valid: da.Array, spec: TileSpec
) -> tuple[da.Array, da.Array, list[int], list[int]]:
    """The scene reflect-padded to whole strides and cut into chunks with their halo.

    Returns:
        ``(C, ...)`` band and ``(1, ...)`` validity chunks with a halo of ``spec.halo``
        px, and the chunk start rows and columns (:func:`~geoseg.tiling.grid.chunk_starts`)
        that a kernel's ``block_id`` indexes.
    """
    _, h, w = data.shape
    m, d = spec.margin, spec.halo
    ys, xs = chunk_starts(h, spec), chunk_starts(w, spec)
    cy, cx = _padded_chunks(ys, m), _padded_chunks(xs, m)
    padded = reflect_pad(reflect_pad(data, 1, m, ys[-1] - h + m), 2, m, xs[-1] - w + m)
    vpad = reflect_pad(reflect_pad(valid[None], 1, m, ys[-1] - h + m), 2, m, xs[-1] - w + m)
    padded = padded.rechunk((data.shape[0], cy, cx))
    vpad = vpad.rechunk((1, cy, cx))
    # the rims come from a second read of each chunk (see with_halo), so that a row
    # of read chunks is not held while the row above runs
    rims, vrims = recomputed(padded, vpad)
    return with_halo(padded, d, rims), with_halo(vpad, d, vrims), ys, xs


def predict_blocks(
    data: da.Array,
    valid: da.Array,
    load: PredictorLoader,
    spec: TileSpec,
    class_ids: Sequence[int],
    with_confidence: bool = False,
    with_probabilities: bool = False,
) -> da.Array:
    """Lazy tiled prediction of a whole scene.

    Args:
        data: ``(C, H, W)`` dask array of band values.
        valid: ``(H, W) bool`` dask array, False where the scene has no data.
        load: picklable callable returning the model; it is called inside each
            chunk task and must cache per process (see ``geoseg.models.cache``).
        spec: window grid.
        class_ids: label value of each model output channel.
        with_confidence: add a band with the winning probability.
        with_probabilities: add one band per output channel with its probability
            (the blended one whose argmax is the label; K = ``len(class_ids)``).

    Returns:
        ``(1 [+ 1] [+ K], H, W) uint8`` dask array: class ids with 255 = nodata,
        then confidence ``round(254 p)``, then each channel's ``round(254 p)``,
        255 = nodata.
    """
    _, h, w = data.shape
    ov, ovv, ys, xs = halo_chunks(data, valid, spec)
    kernel = functools.partial(
        _kernel,
        ys=tuple(ys),
        xs=tuple(xs),
        spec=spec,
        load=load,
        lut=np.asarray(class_ids, dtype=np.uint8),
        with_confidence=with_confidence,
        with_probabilities=with_probabilities,
    )
    n_out = 1 + with_confidence + len(class_ids) * with_probabilities
    out_chunks = ((n_out,), tuple(np.diff(ys)), tuple(np.diff(xs)))
    out = da.map_blocks(
        kernel,
        ov,
        ovv,
        chunks=out_chunks,
        dtype=np.uint8,
        meta=np.array((), np.uint8),
        token="geoseg-predict",
    )
    return out[:, :h, :w]
