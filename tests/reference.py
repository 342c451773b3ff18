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
    out = np.asarray(class_ids, np.uint8)[acc.argmax(0)]
    out[~valid | (wsum == 0)] = 255
    return out
