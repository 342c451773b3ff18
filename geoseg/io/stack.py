"""Stack the bands of several dates into one raster, for early-fusion change models."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio

from geoseg.errors import GeosegError
from geoseg.io.atomic import atomic_output
from geoseg.io.raster import open_scene

__all__ = ["stack_dates"]


def stack_dates(
    paths: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write the bands of every date, in date order, into one GeoTIFF.

    Band ``i`` of date ``t`` (1-based) is described ``t<t>_<name>``; nodata is kept
    when every date uses the same value. Blocks are copied one window at a time.

    Raises:
        GeosegError: fewer than two dates, or dates not on one grid (CRS,
            transform, size) or of different data types.
    """
    if len(paths) < 2:
        raise GeosegError("stack needs at least two dates")
    scenes = [open_scene(p) for p in paths]
    first = scenes[0]
    for s in scenes[1:]:
        if (s.crs, s.transform, s.height, s.width) != (
            first.crs, first.transform, first.height, first.width,
        ):  # fmt: skip
            raise GeosegError(
                f"{s.path}: not on the grid of {first.path}; warp it first, e.g. "
                f"`gdalwarp -tr <res> -te <bounds> -t_srs {first.crs}`"
            )
        if s.dtype != first.dtype:
            raise GeosegError(f"{s.path}: {s.dtype} bands, {first.path} has {first.dtype}")
    nodata = {s.nodata for s in scenes}
    names = [f"t{t}_{n}" for t, s in enumerate(scenes, start=1) for n in s.band_names]
    profile = {
        "driver": "GTiff", "height": first.height, "width": first.width, "count": len(names),
        "dtype": first.dtype.name, "crs": first.crs, "transform": first.transform,
        "nodata": nodata.pop() if len(nodata) == 1 else None, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }  # fmt: skip
    with atomic_output(output, overwrite) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
        for _, window in dst.block_windows(1):
            (y0, y1), (x0, x1) = window.toranges()
            parts = [np.asarray(s.data.data[:, y0:y1, x0:x1]) for s in scenes]
            dst.write(np.concatenate(parts), window=window)
    return Path(output)
