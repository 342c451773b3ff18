"""Class ids of a label raster in a form ``rasterio.features.shapes`` polygonizes.

GDAL's polygonizer reads uint8 and int32 (among others); a label raster of any
other integer type is polygonized as int32, so every class id it can hold
survives (CORINE's 111-523, negative codes) and none is folded into nodata.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from geoseg.errors import InvalidRasterError
from geoseg.types import NODATA_LABEL

__all__ = ["polygonizable_ids"]

_INT32 = np.iinfo(np.int32)


def _int32_ids(band: np.ndarray, valid: np.ndarray, path: str = "") -> np.ndarray:
    """``(h, w)`` class ids of a wide integer type as int32 (nodata pixels: 0, masked).

    Raises:
        InvalidRasterError: a valid pixel holds a value beyond int32.
    """
    values = band[valid]
    if values.size and (values.min() < _INT32.min or values.max() > _INT32.max):
        wide = values[(values < _INT32.min) | (values > _INT32.max)]
        raise InvalidRasterError(
            f"{path}: holds class id {int(wide[0])}, beyond what vectorize can hold (32-bit "
            f"ids, {_INT32.min} to {_INT32.max}); renumber the classes (e.g. `gdal_calc.py`) "
            "or declare that value the raster's nodata (`gdal_edit.py -a_nodata`)"
        )
    return np.where(valid, band, 0).astype(np.int32)


def polygonizable_ids(
    band: da.Array, valid: da.Array, path: str, geoseg_map: bool = False
) -> tuple[da.Array, int | None]:
    """Class ids to polygonize and the value among them that is nodata.

    uint8 maps and maps geoseg wrote (``geoseg_map``: its instance rasters' uint32
    class band, where 255 is "no object") keep 255 as nodata. Any other integer type
    is polygonized as int32 with every value a class id (CORINE's 111-523, negative
    codes); the raster's declared nodata is masked by ``valid``. Values beyond int32
    are refused when their chunk is read, never dropped.
    """
    if band.dtype == np.uint8:
        return band, NODATA_LABEL
    nodata = NODATA_LABEL if geoseg_map else None
    if np.can_cast(band.dtype, np.int32):
        return band.astype(np.int32), nodata
    ids = da.map_blocks(_int32_ids, band, valid.rechunk(band.chunks), path=path, dtype=np.int32)
    return ids, nodata
