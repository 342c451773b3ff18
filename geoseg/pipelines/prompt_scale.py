"""Is the scene on the pixel scale a SAM checkpoint expects? (``prompt``, ``track``, segment
everything).

SAM's processor takes 0-255 images to 0-1 (``rescale_factor`` 1/255) and normalises
them with a mean and std on that 0-1 scale (0.485 +- 0.229 for red). A checkpoint
stores that 1/255, or 1/``--scale`` of ``geoseg import --scale``, as its scale, so a
scene stored otherwise (float reflectance 0-0.5 with a ``--scale 10000`` import: 0 to
0.00005) is an almost black image: SAM runs, finds nothing useful and says nothing.
:func:`~geoseg.pipelines.plausibility.warn_if_outside_training`
does not catch it: a black image is only 2.1 standard deviations below SAM's mean.
Here the 99th percentile of a small decimated sample
(:func:`~geoseg.io.raster_stats.sample_valid_pixels`), after the checkpoint's scale,
is compared with the top of the 0-1 range.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from geoseg.io.raster_stats import sample_valid_pixels
from geoseg.models.bands import reflectance_scale

__all__ = ["BRIGHT_TIMES", "DARK_SHARE", "import_scale_hint", "warn_if_off_scale"]

log = logging.getLogger(__name__)

#: A 99th percentile (model units; 1 is white) below this is an almost black image. Dark
#: but real scenes stay above it: uint8 RGB needs a p99 under 5 of 255, Sentinel-2
#: reflectance x 10000 imported with --scale 10000 under 0.02 reflectance (darker than
#: open water in the visible bands, 0.03-0.08); the misscaled cases lie 255 or 10000
#: times lower.
DARK_SHARE = 0.02
#: A 99th percentile above this many times white is a saturated image. Correct imports
#: stay under it (reflectance of cloud and snow tops out near 1.6); uint16 reflectance x
#: 10000 read with SAM's default 1/255 gives 8-40.
BRIGHT_TIMES = 4.0
#: Fewest sampled pixels the percentile is drawn from.
_MIN_PIXELS = 256


def import_scale_hint(p99: float, dtype: object) -> float:
    """The ``geoseg import --scale`` that puts a raw 99th percentile ``p99`` in 0-1.

    The dtype's convention (float 1, uint8 255, 16-bit 10000:
    :func:`~geoseg.models.bands.reflectance_scale`) when it does, else ``p99`` itself
    (two significant digits).
    """
    try:
        scale = 1.0 / reflectance_scale(np.dtype(str(dtype)))
    except (TypeError, ValueError):
        scale = 0.0
    if scale > 0 and DARK_SHARE <= p99 / scale <= BRIGHT_TIMES:
        return scale
    return float(f"{p99:.2g}")


def warn_if_off_scale(
    path: str | os.PathLike[str], index: Sequence[int], scale: float, model: str,
    dtype: object, command: str, src: Any = None,
) -> None:  # fmt: skip
    """Warn (with the ``--scale`` to import ``model`` with) when SAM would see a black or
    saturated image.

    Args:
        path: the scene.
        index: 0-based scene bands feeding the model.
        scale: the checkpoint's stored value -> model units (1/255 for 0-255 images).
        model: the checkpoint, named in the fix.
        dtype: the scene's storage type (for the suggested scale).
        command: the command that runs it (``geoseg prompt``), named in the warning.
        src: ``path`` already open, sampled through this handle
            (:func:`~geoseg.io.raster_stats.sample_valid_pixels`).
    """
    sample = sample_valid_pixels(path, index, src=src)
    if sample.shape[1] < _MIN_PIXELS:
        return
    raw = float(np.percentile(sample, 99))
    seen = raw * scale
    if DARK_SHARE <= seen <= BRIGHT_TIMES:
        return
    looks = "an almost black" if seen < DARK_SHARE else "a saturated"
    log.warning(
        "%s: 99 %% of the sampled pixels are at most %.4g, %.3g after %s's scale (%g), where "
        "SAM expects 0-1 (0-255 images / 255: its pixel mean and std are on that scale); "
        "%s sees %s image. Re-import the model for this data: geoseg import SAM_FOLDER -o "
        "%s --scale %g (model input = stored value / SCALE)",
        path, raw, seen, model, scale, command, looks, model, import_scale_hint(raw, dtype),
    )  # fmt: skip
