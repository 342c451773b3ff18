"""Checks of a workflow's scenes against its model and each other, before anything runs.

A scene with bands the model cannot read, or scenes that do not overlap at all, used
to be found when their turn came: after every earlier date had been predicted (a
minute or an hour of work), and for disjoint scenes with a message naming the maps
rather than the scenes. Both are read from the files' headers here.
"""

from __future__ import annotations

import os

from rasterio.transform import array_bounds

from geoseg.errors import GeosegError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.io.raster import Scene, open_scene
from geoseg.io.reproject import bounds_in_crs
from geoseg.models.bands import named_by_colour
from geoseg.pipelines.model_input import match_bands
from geoseg.pipelines.workflow_file import Workflow

__all__ = ["check_scene_bands", "check_scenes_overlap"]


def check_scene_bands(wf: Workflow) -> None:
    """Refuse a scene whose bands the workflow's checkpoint model cannot read (by name,
    order or ``predict: {bands: ...}``), naming the workflow and the scene.

    A weights-free model (a family name such as ``spectral``) reads bands by role,
    which its own run checks.
    """
    if not os.path.isfile(wf.model):
        return
    meta = read_checkpoint_meta(wf.model)
    bands = wf.predict.get("bands")
    for scene in wf.scenes:
        opened = open_scene(scene, None, assume_crs=wf.predict.get("assume_crs"))
        names = named_by_colour(opened.band_names, opened.colorinterp)
        try:
            match_bands(str(scene), names, meta, bands)
        except GeosegError as exc:
            raise type(exc)(f"{wf.path}: scenes: {exc}") from None


def _bounds(scene: Scene) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of ``scene`` in its CRS (north-up)."""
    h, w = scene.data.shape[1:]
    return array_bounds(h, w, scene.transform)


def check_scenes_overlap(wf: Workflow) -> None:
    """Refuse scenes whose footprints share no ground with the first scene's.

    Bounds are compared in the first scene's CRS (a scene in another CRS is brought
    there with :func:`geoseg.io.reproject.bounds_in_crs`); touching edges do not
    count, and bounds that wrap the antimeridian there (left > right) are not judged.

    Raises:
        InvalidRasterError: a scene is not a raster geoseg can read, or its CRS has no
            transformation to the first scene's (named).
    """
    assume = wf.predict.get("assume_crs")
    first = open_scene(wf.scenes[0], None, assume_crs=assume)
    crs, (x0, y0, x1, y1) = first.crs, _bounds(first)
    for scene in wf.scenes[1:]:
        other = open_scene(scene, None, assume_crs=assume)
        bx0, by0, bx1, by1 = bounds_in_crs(
            other.crs, crs, _bounds(other), str(scene), str(wf.scenes[0]),
            "reproject the scenes to one CRS (gdalwarp -t_srs)",
        )  # fmt: skip
        if bx0 <= bx1 and (bx0 >= x1 or bx1 <= x0 or by0 >= y1 or by1 <= y0):
            raise GeosegError(
                f"{wf.path}: scenes: {scene} does not overlap {wf.scenes[0]} (its bounds in "
                f"{crs}: {bx0:.6g}, {by0:.6g}, {bx1:.6g}, {by1:.6g}; the first scene's: "
                f"{x0:.6g}, {y0:.6g}, {x1:.6g}, {y1:.6g}); change detection compares the "
                "same place on every date: list scenes of one area"
            )
