"""Which pixels of a scene hold data: the one rule every command follows.

A pixel is valid where every band the model reads holds a value: none of the
selected bands equals the file's nodata value, and none is NaN or +-inf (a float
band). A pixel missing one band is missing an input the model cannot do without,
as NaN in one band already made it; GDAL's per-band masks (``read_masks``) say the
same, while its dataset mask (``dataset_mask``) calls a pixel valid if any band is.
Landsat's collar, for one, holds pixels like ``(0, 5, 5)`` next to a nodata of 0.
"""

from __future__ import annotations

import math
from typing import Any

import dask.array as da
import numpy as np

__all__ = ["nodata_in_dtype", "valid_values"]


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


def valid_values(values: Any, nodata: float | None) -> Any:
    """``(h, w) bool``: True where no band of ``(bands, h, w)`` ``values`` equals
    ``nodata`` and (a float type) every band is finite.

    ``values`` may be a NumPy or a dask array; the result is the same kind.
    """
    if isinstance(values, np.ndarray):
        valid = np.ones(values.shape[1:], bool)
    else:
        valid = da.ones(values.shape[1:], chunks=values.chunks[1:], dtype=bool)
    value = nodata_in_dtype(nodata, values.dtype)
    if value is not None:
        valid = valid & ~(values == value).any(axis=0)
    if np.issubdtype(values.dtype, np.floating):
        # +inf/-inf are no more a reflectance than NaN is: they would be labelled a class
        valid = valid & np.isfinite(values).all(axis=0)
    return valid
