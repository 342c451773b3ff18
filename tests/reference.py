"""An independent, deliberately plain implementation of tiled inference for tests.

It pads the whole in-memory scene once and loops over the global window grid one
window at a time: no dask, no chunks, no batching.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geoseg.tiling import hann_weight
from geoseg.types import Predictor, TileSpec


def reference_labels(
    scene: np.ndarray,
    valid: np.ndarray,
    spec: TileSpec,
    model: Predictor,
    class_ids: Sequence[int],
) -> np.ndarray:
    """``(H, W) uint8`` labels of ``scene`` ``(C, H, W)`` computed window by window."""
    return reference_top(scene, valid, spec, model, class_ids)[0]


def reference_top(
    scene: np.ndarray,
    valid: np.ndarray,
    spec: TileSpec,
    model: Predictor,
    class_ids: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W) uint8`` labels and confidence ``round(254 p)`` (255 = nodata), window by window.

    The winning probability is the blended one (float64 sums, so within one step of
    geoseg's float32 for ``hann``; exact for ``trim``, where it is the model's own).
    """
    _, h, w = scene.shape
    s, m, win = spec.stride, spec.margin, spec.window
    hp, wp = -(-h // s) * s, -(-w // s) * s
    pad = ((m, hp - h + m), (m, wp - w + m))
    x = np.pad(scene, ((0, 0), *pad), mode="reflect").astype(np.float32)
    v = np.pad(valid, pad, mode="reflect")
    acc = np.zeros((len(class_ids), hp + 2 * m, wp + 2 * m), np.float64)
    wsum = np.zeros((hp + 2 * m, wp + 2 * m), np.float64)
    weight = hann_weight(win)
    for i in range(hp // s):
        for j in range(wp // s):
            r, c = i * s, j * s
            core = (slice(r + m, r + m + s), slice(c + m, c + m + s))
            extent = (slice(r, r + win), slice(c, c + win))
            if not v[core if spec.blend == "trim" else extent].any():
                continue
            p = model.predict(x[None, :, extent[0], extent[1]], v[None, extent[0], extent[1]])[0]
            if spec.blend == "trim":
                acc[(slice(None), *core)] = p[:, m : m + s, m : m + s]
                wsum[core] = 1
            else:
                acc[(slice(None), *extent)] += p * weight
                wsum[extent] += weight
    acc, wsum = acc[:, m : m + h, m : m + w], wsum[m : m + h, m : m + w]
    best = acc.argmax(0)
    out = np.asarray(class_ids, np.uint8)[best]
    top = np.take_along_axis(acc, best[None], 0)[0] / np.maximum(wsum, 1e-12)
    conf = np.rint(np.clip(top.astype(np.float32), 0.0, 1.0) * np.float32(254)).astype(np.uint8)
    nodata = ~valid | (wsum == 0)
    out[nodata] = 255
    conf[nodata] = 255
    return out, conf
