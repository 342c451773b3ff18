"""``segment_instances``: scene + instance model -> instance COG (+ panoptic COG)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg import __version__
from geoseg.errors import BandMismatchError
from geoseg.io.atomic import check_output_path
from geoseg.io.instances import (
    PANOPTIC_BANDS,
    instance_cog_writer,
    label_block_reader,
    staging_raster,
)
from geoseg.io.raster import Scene, open_scene
from geoseg.stitching import InstanceIds, InstanceLoader, plan_chunks, stitch_instances
from geoseg.stitching.panoptic import panoptic_block
from geoseg.tiling.execute import Progress
from geoseg.types import ClassSchema, TileSpec

__all__ = ["InstanceOptions", "InstanceResult", "segment_instances"]


@dataclass(frozen=True)
class InstanceOptions:
    """Options of :func:`segment_instances`.

    Attributes:
        window: window side in px.
        margin: margin in px (>= 1); an instance belongs to the window whose core
            holds its bounding-box centre.
        chunk: dask chunk side in px, rounded to a whole number of strides.
        batch_size: windows per model call.
        min_iou: IoU over two windows' shared pixels that joins two fragments.
        bands: band selection (1-based numbers or names); None = all bands.
        assume_crs: CRS for scenes without one.
        scheduler: ``threads``, ``sync``, ``local`` or ``tcp://host:port``.
        workers: threads or worker processes.
        overwrite: replace existing outputs.
        panoptic: also write a panoptic raster here.
        stuff_labels: semantic label raster of the same scene (e.g. from
            ``geoseg predict``) giving the stuff classes of the panoptic raster.
    """

    window: int = 256
    margin: int = 32
    chunk: int = 1024
    batch_size: int = 4
    min_iou: float = 0.5
    bands: Sequence[str] | None = None
    assume_crs: str | None = None
    scheduler: str = "threads"
    workers: int | None = None
    overwrite: bool = False
    panoptic: str | os.PathLike[str] | None = None
    stuff_labels: str | os.PathLike[str] | None = None


@dataclass(frozen=True)
class InstanceResult:
    """What :func:`segment_instances` wrote.

    Attributes:
        output: the instance COG (band 1 id, band 2 class).
        count: instances in the scene (ids ``1..count``).
        schema: the model's classes.
        panoptic: the panoptic COG (band 1 class, band 2 id), if one was asked for.
    """

    output: Path
    count: int
    schema: ClassSchema
    panoptic: Path | None = None


def _tile_spec(opts: InstanceOptions) -> TileSpec:
    probe = TileSpec(window=opts.window, margin=opts.margin)
    chunk_windows = max(1, round(opts.chunk / probe.stride))
    return TileSpec(opts.window, opts.margin, chunk_windows, "trim", opts.batch_size)


def segment_instances(
    scene_path: str | os.PathLike[str],
    load: InstanceLoader,
    output: str | os.PathLike[str],
    options: InstanceOptions | None = None,
    progress: Progress | None = None,
) -> InstanceResult:
    """Find the object instances of a whole scene, each with one scene-unique id.

    Args:
        scene_path: GeoTIFF/COG/VRT.
        load: picklable callable returning the instance model (cached per process).
        output: instance COG to write.
        options: see :class:`InstanceOptions`.
        progress: ``progress(done, total)`` over chunks of the first pass.

    Raises:
        GeosegError: bad input, model or output; nothing is written.
    """
    opts = options or InstanceOptions()
    path, out = os.fspath(scene_path), Path(output)
    pan = None if opts.panoptic is None else Path(opts.panoptic)
    for target in (out, pan):
        if target is not None:
            check_output_path(target, opts.overwrite, [Path(path)])
    tile = _tile_spec(opts)
    scene = open_scene(path, opts.bands, tile.chunk, opts.assume_crs)
    model = load()  # fail early on a bad model, before any pixel is read
    if len(model.bands) != scene.count:
        raise BandMismatchError(
            f"{path}: the model expects {len(model.bands)} bands {list(model.bands)}, the "
            f"selection has {scene.count}; pick them with bands=[...]"
        )
    h, w = scene.height, scene.width
    with staging_raster(out, h, w) as (stage, read):
        ids = stitch_instances(
            scene.data.data, scene.valid, load, tile, stage, opts.scheduler, opts.workers,
            progress, opts.min_iou,
        )  # fmt: skip
        _write_outputs(scene, model.schema, read, ids, tile, out, pan, opts)
    return InstanceResult(out, ids.count, model.schema, pan)


def _write_outputs(
    scene: Scene, schema: ClassSchema, read: Callable[[tuple[slice, slice]], np.ndarray],
    ids: InstanceIds, tile: TileSpec, out: Path, pan: Path | None, opts: InstanceOptions,
) -> None:  # fmt: skip
    """Pass 2: relabel the staged blocks into the instance (and panoptic) COG."""
    kw: dict[str, Any] = {
        "height": scene.height, "width": scene.width, "crs": scene.crs,
        "transform": scene.transform, "schema": schema, "overwrite": opts.overwrite,
        "tags": {"GEOSEG_VERSION": __version__, "GEOSEG_SOURCE": Path(scene.path).name},
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        inst_sink = stack.enter_context(instance_cog_writer(out, **kw))
        pan_sink = stuff = None
        if pan is not None:
            pan_sink = stack.enter_context(
                instance_cog_writer(pan, descriptions=PANOPTIC_BANDS, **kw)
            )
            if opts.stuff_labels is not None:
                stuff = stack.enter_context(
                    label_block_reader(opts.stuff_labels, scene.height, scene.width)
                )
        for plan in plan_chunks(scene.height, scene.width, tile):
            block = ids.relabel(plan.origin, read(plan.slices))
            inst_sink[(slice(0, 2), *plan.slices)] = block
            if pan_sink is not None:
                sem = None if stuff is None else stuff(plan.slices)
                pan_sink[(slice(0, 2), *plan.slices)] = panoptic_block(block, sem, schema)
