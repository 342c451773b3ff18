"""Small PNG quicklooks of label rasters."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling

from geoseg.io.atomic import atomic_output

__all__ = ["write_label_preview"]


def write_label_preview(
    label_path: str | os.PathLike[str], png_path: str | os.PathLike[str], max_side: int = 1024
) -> Path:
    """Write an RGBA PNG of band 1 coloured by its colour table, at most ``max_side`` px.

    Reads from the COG's overviews, so it costs the same for any scene size.
    """
    png = Path(png_path)
    with rasterio.open(label_path) as src:
        f = max(1.0, max(src.height, src.width) / max_side)
        shape = (max(1, round(src.height / f)), max(1, round(src.width / f)))
        labels = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = {i: (i, i, i, 255) for i in range(256)}
    lut = np.zeros((256, 4), np.uint8)
    for value, rgba in cmap.items():
        lut[value] = rgba
    with atomic_output(png, overwrite=True) as tmp:
        Image.fromarray(lut[labels], mode="RGBA").save(tmp, format="PNG")
    return png
