"""Write a synthetic scene pair as sample data: four GeoTIFFs and a districts layer, atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from geoseg.errors import OutputExistsError
from geoseg.io.raster import write_geotiff
from geoseg.io.vectors import write_vectors
from geoseg.synthetic.districts import aoi_zones
from geoseg.synthetic.materials import SENTINEL2_BANDS, TRUTH_SCHEMA
from geoseg.synthetic.scene import ScenePair, generate_scene_pair
from geoseg.types import NODATA_LABEL

__all__ = ["DATE_AFTER", "DATE_BEFORE", "write_sample_data"]

DATE_BEFORE = "2024-07-15"
DATE_AFTER = "2025-07-20"
_SENSOR = "synthetic Sentinel-2-like"
_FILE_NAMES = {
    "before": "scene_before.tif",
    "after": "scene_after.tif",
    "truth_before": "truth_before.tif",
    "truth_after": "truth_after.tif",
    "aoi": "districts.gpkg",
}


def _write_outputs(tmp: dict[str, Path], scene: ScenePair) -> None:
    """Write the four rasters of ``scene`` and its districts to the paths in ``tmp``."""
    h, w = scene.labels_before.shape
    districts = aoi_zones(h, w, scene.transform, scene.crs)
    write_vectors(districts, tmp["aoi"], "gpkg", "districts", overwrite=True)
    classes = json.dumps(TRUTH_SCHEMA.to_json())
    grid = {"crs": scene.crs, "transform": scene.transform}
    for key, date in (("before", DATE_BEFORE), ("after", DATE_AFTER)):
        tags = {"DATE": date, "SENSOR": _SENSOR}
        write_geotiff(
            tmp[key], getattr(scene, key), nodata=0, descriptions=SENTINEL2_BANDS, tags=tags,
            **grid,
        )  # fmt: skip
        write_geotiff(
            tmp[f"truth_{key}"], getattr(scene, f"labels_{key}")[None], nodata=NODATA_LABEL,
            descriptions=["class"], tags={"DATE": date, "GEOSEG_CLASSES": classes},
            colormap=TRUTH_SCHEMA.colormap(), **grid,
        )  # fmt: skip


def write_sample_data(
    out_dir: Path, height: int = 768, width: int = 1024, seed: int = 0, overwrite: bool = False
) -> dict[str, Path]:
    """Generate a scene pair; write four tiled (256 px), deflate GeoTIFFs and its districts.

    ``scene_{before,after}.tif``: 6 bands uint16, nodata 0, band descriptions
    ``SENTINEL2_BANDS``, tags ``DATE`` and ``SENSOR``. ``truth_{before,after}.tif``:
    uint8 classes, nodata 255, colour table and ``GEOSEG_CLASSES`` tag (JSON) from
    ``TRUTH_SCHEMA``. ``districts.gpkg``: the :func:`aoi_zones` polygons (layer
    ``districts``, field ``name``), the flood workflow's areas of interest. Files
    are written under temporary names and renamed at the end, so a failure leaves
    no partial output.

    Args:
        out_dir: folder to write into; created if missing.
        height: rows in pixels.
        width: columns in pixels.
        seed: random seed, see :func:`generate_scene_pair`.
        overwrite: replace existing files instead of refusing.

    Returns:
        Paths keyed ``"before"``, ``"after"``, ``"truth_before"``, ``"truth_after"``,
        ``"aoi"``.

    Raises:
        OutputExistsError: if an output exists and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    paths = {key: out_dir / name for key, name in _FILE_NAMES.items()}
    for path in paths.values():
        if path.exists() and not overwrite:
            raise OutputExistsError(
                f"{path} already exists; use overwrite (--overwrite) to replace it"
            )
    scene = generate_scene_pair(height, width, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = {k: p.with_name(f".{p.stem}.{os.getpid()}.tmp{p.suffix}") for k, p in paths.items()}
    try:
        _write_outputs(tmp, scene)
        for key, path in paths.items():
            os.replace(tmp[key], path)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return paths
