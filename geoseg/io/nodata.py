"""Which pixels of a scene hold data: the one rule every command follows.

A pixel is valid where every band the model reads holds a value: none of the
selected bands equals the file's nodata value, and none is NaN or +-inf (a float
band). A pixel missing one band is missing an input the model cannot do without,
as NaN in one band already made it; GDAL's per-band masks (``read_masks``) say the
same, while its dataset mask (``dataset_mask``) calls a pixel valid if any band is.
Landsat's collar, for one, holds pixels like ``(0, 5, 5)`` next to a nodata of 0.

Bands may declare different nodata values (a VRT, an ENVI or netCDF file; a GeoTIFF
has one for all bands): each band is then compared with its own value
(:func:`band_nodata`), as GDAL's per-band masks do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

__all__ = ["BandNodata", "band_nodata", "nodata_in_dtype", "valid_values"]

#: One nodata value for every band, or one per band (None: that band has none).
BandNodata = float | None | tuple[float | None, ...]


def _same(a: float | None, b: float | None) -> bool:
    """Whether two nodata values are the same (NaN equals NaN)."""
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def band_nodata(src: Any, indexes: Sequence[int]) -> BandNodata:
    """Nodata of the 1-based ``indexes`` of the open rasterio dataset ``src``: one value
    where those bands share it, else a tuple with one value per band (in ``indexes``
    order). ``src.nodata`` alone is band 1's value, right only when all bands agree."""
    values = tuple(src.nodatavals[i - 1] for i in indexes)
    if not values or all(_same(v, values[0]) for v in values):
        return values[0] if values else src.nodata
    return values


def nodata_in_dtype(nodata: float | None, dtype: Any) -> Any:
    """``nodata`` as a value of ``dtype``, or None where no value of it can equal it
    (no nodata, NaN: see :func:`valid_values`; -9999 for uint8, 0.5 for int16)."""
    if nodata is None or math.isnan(nodata):
        return None
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        if not float(nodata).is_integer() or not info.min <= nodata <= info.max:
            return None
    return dt.type(nodata)


def valid_values(values: Any, nodata: BandNodata) -> Any:
    """``(h, w) bool``: True where no band of ``(bands, h, w)`` ``values`` equals
    ``nodata`` (a tuple: each band its own value) and (a float type) every band is
    finite.

    ``values`` may be a NumPy or a dask array; the result is the same kind.
    """
    if isinstance(values, np.ndarray):
        valid = np.ones(values.shape[1:], bool)
    else:
        valid = da.ones(values.shape[1:], chunks=values.chunks[1:], dtype=bool)
    if isinstance(nodata, tuple):
        for band, each in enumerate(nodata):
            value = nodata_in_dtype(each, values.dtype)
            if value is not None:
                valid = valid & (values[band] != value)
    elif (value := nodata_in_dtype(nodata, values.dtype)) is not None:
        valid = valid & ~(values == value).any(axis=0)
    if np.issubdtype(values.dtype, np.floating):
        # +inf/-inf are no more a reflectance than NaN is: they would be labelled a class
        valid = valid & np.isfinite(values).all(axis=0)
    return valid
