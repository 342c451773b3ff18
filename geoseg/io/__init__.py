"""The only code in geoseg that opens files: rasters, checkpoints, vectors, reports."""

import os

# GDAL's block cache defaults to 5 % of RAM and fills up as a scene streams through
# it, so memory would grow with the scene. geoseg reads each block about once: a
# chunk shares file blocks with its neighbour in the row (a few MB, kept by any
# cache) and with the chunk below, one chunk row later, which only a cache larger
# than a chunk row keeps (60 MB at 8 000 px wide, 300 MB at 40 000). 32 MB costs
# 0.4 s of decoding on a whole 8 000^2 scene against 128 MB and nothing from
# ~12 000 px wide, and takes ~100 MB off predict's peak (benchmarks/README.md,
# bench_onnx.py). A value set by the user wins.
os.environ.setdefault("GDAL_CACHEMAX", "32")
