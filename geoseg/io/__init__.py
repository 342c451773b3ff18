"""The only code in geoseg that opens files: rasters, checkpoints, vectors, reports."""

import os

# GDAL's block cache defaults to 5 % of RAM and fills up as a scene streams through
# it, so memory would grow with the scene. geoseg reads each block about once, so a
# small cache costs no speed (benchmarks/bench_memory.py). A value set by the user wins.
os.environ.setdefault("GDAL_CACHEMAX", "128")
