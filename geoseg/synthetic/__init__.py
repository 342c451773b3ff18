"""Deterministic synthetic Sentinel-2-like scene pair with true land-cover labels.

A 10 m landscape in UTM 33N (meandering river and lake, fields in different crop
phases, forest, a town with a street grid, bare soil) seen on two dates a year
apart: in between, forest is clear-cut and the river floods nearby fields; clouds
(with shadows) and illumination differ. Both dates have a slanted nodata collar
like a real swath edge. Everything comes from a seed; no real data is copied.
Beside the scenes, three named districts (``districts.gpkg``) are the area of
interest layer of the flood workflow.
Used by ``make demo`` (``python -m geoseg.synthetic sample_data``) and by tests.

Modules: ``materials`` (classes, bands, spectra), ``canvas`` (grids, noise),
``landscape`` (first date), ``changes`` (what differs on the second),
``observe`` (one acquisition), ``scene`` (the pair), ``districts`` (areas of
interest), ``files`` (writing the sample data), ``cli`` (``main``).
"""

from geoseg.synthetic.cli import main
from geoseg.synthetic.districts import AOI_ZONES, aoi_zones
from geoseg.synthetic.files import DATE_AFTER, DATE_BEFORE, write_sample_data
from geoseg.synthetic.materials import SENTINEL2_BANDS, TRUTH_SCHEMA
from geoseg.synthetic.scene import CRS, GSD_M, ScenePair, generate_scene_pair

__all__ = [
    "AOI_ZONES",
    "CRS",
    "DATE_AFTER",
    "DATE_BEFORE",
    "GSD_M",
    "SENTINEL2_BANDS",
    "TRUTH_SCHEMA",
    "ScenePair",
    "aoi_zones",
    "generate_scene_pair",
    "main",
    "write_sample_data",
]
