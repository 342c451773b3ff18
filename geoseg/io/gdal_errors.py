"""Keep GDAL from printing its own ``ERROR 1: ...`` lines while geoseg writes a file.

pyogrio's GDAL prints every error of a failed write to stderr (5-8 lines for one
full disk) before the exception geoseg turns into one message arrives. GDAL's
error handlers are per thread: :func:`quiet_gdal_errors` pushes GDAL's quiet
handler for the calling thread; the errors still reach pyogrio's exception.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os
from collections.abc import Iterator

__all__ = ["quiet_gdal_errors"]


@functools.cache
def _pyogrio_gdal() -> ctypes.CDLL | None:
    """The GDAL library pyogrio runs on (its wheel's copy, else the system's); None if unknown."""
    import pyogrio

    here = os.path.dirname(os.path.dirname(pyogrio.__file__))
    found = sorted(glob.glob(os.path.join(here, "pyogrio.libs", "libgdal*")))
    for name in (*found, "libgdal.so"):
        with contextlib.suppress(OSError):
            lib = ctypes.CDLL(name)
            lib.CPLPushErrorHandler.argtypes = [ctypes.c_void_p]
            return lib
    return None


@contextlib.contextmanager
def quiet_gdal_errors() -> Iterator[None]:
    """GDAL prints nothing in this thread inside the block."""
    lib = _pyogrio_gdal()
    if lib is None:
        yield
        return
    lib.CPLPushErrorHandler(ctypes.cast(lib.CPLQuietErrorHandler, ctypes.c_void_p))
    try:
        yield
    finally:
        lib.CPLPopErrorHandler()
