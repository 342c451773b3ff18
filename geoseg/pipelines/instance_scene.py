"""``segment_instances``: scene + loaded instance model -> instance COG (+ panoptic COG).

Pass 1 stitches the objects of every window into scene-unique ids
(:mod:`geoseg.stitching`); pass 2 relabels the staged blocks into the instance
COG and, if asked, a panoptic COG whose stuff comes from the model's semantic
head or from another model's label map (:func:`stuff_schema`). The semantic head's
labels come from pass 1's forward passes (staged like the ids), so no window runs
twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg import __version__
from geoseg.areas import pixel_size_m
from geoseg.errors import BandMismatchError, GeosegError, InvalidRasterError
from geoseg.io.atomic import check_output_path
from geoseg.io.instances import (
    PANOPTIC_BANDS,
    SCORES_TAG,
    check_same_grid,
    instance_cog_writer,
    label_block_reader,
    staging_raster,
)
from geoseg.io.labels import read_class_schema
from geoseg.io.raster import Scene, open_scene
from geoseg.stitching import (
    InstanceIds,
    InstanceLoader,
    SemanticInstancePredictor,
    plan_chunks,
    stitch_instances,
)
from geoseg.stitching.panoptic import panoptic_block
from geoseg.tiling.execute import Progress
from geoseg.tiling.infer import predict_blocks
from geoseg.types import (
    ClassSchema,
    Predictor,
    TileSpec,
    bands_count,
    require_at_least,
    require_finite,
)

__all__ = ["InstanceOptions", "InstanceResult", "segment_instances", "stuff_schema"]


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
            ``geoseg predict``) giving the stuff classes of the panoptic raster;
            None: the model's own semantic head where it has one
            (:class:`~geoseg.stitching.SemanticInstancePredictor`: from the same
            forward passes as the instances; a plain :class:`~geoseg.types.Predictor`:
            from a second pass), else no stuff (void).
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

    def __post_init__(self) -> None:
        require_at_least(
            "InstanceOptions", window=(self.window, 1), margin=(self.margin, 1),
            chunk=(self.chunk, 1), batch_size=(self.batch_size, 1), workers=(self.workers, 1),
        )  # fmt: skip
        require_finite("InstanceOptions", min_iou=(self.min_iou, 0.0, 1.0))


@dataclass(frozen=True)
class InstanceResult:
    """What :func:`segment_instances` wrote.

    Attributes:
        output: the instance COG (band 1 class, band 2 id).
        count: instances in the scene (ids ``1..count``).
        schema: the model's classes.
        panoptic: the panoptic COG (band 1 class, band 2 id), if one was asked for.
        object_px: ``(count + 1,) int64`` pixels of each id (``[0]``: no object).
        pixel_m: the scene's ground sample distance, metres.
    """

    output: Path
    count: int
    schema: ClassSchema
    panoptic: Path | None = None
    object_px: np.ndarray | None = None
    pixel_m: float | None = None


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
            f"{path}: the model expects {bands_count(len(model.bands))} {list(model.bands)}, the "
            f"selection has {scene.count}; pick them with bands=[...]"
        )
    pan_schema = model.schema
    if pan is not None and opts.stuff_labels is not None:
        pan_schema = stuff_schema(model.schema, os.fspath(opts.stuff_labels), scene)
    own_stuff = pan is not None and opts.stuff_labels is None
    with contextlib.ExitStack() as stack:
        stage, read = stack.enter_context(staging_raster(out, scene.height, scene.width))
        labels = read_labels = None
        if own_stuff and isinstance(model, SemanticInstancePredictor):  # from pass 1's forwards
            labels, read_labels = stack.enter_context(
                staging_raster(out, scene.height, scene.width, "uint8", "sem")
            )
        valid_stage = read_valid = None
        if scene.maskable:  # the chunks' valid masks, kept from pass 1 for the COGs' masks
            valid_stage, read_valid = stack.enter_context(
                staging_raster(out, scene.height, scene.width, "uint8", "valid")
            )
        ids = stitch_instances(
            scene.data.data, scene.valid, load, tile, stage, opts.scheduler, opts.workers,
            progress, opts.min_iou, labels, valid_stage,
        )  # fmt: skip
        if read_labels is None and own_stuff and isinstance(model, Predictor):
            read_labels = _semantic_reader(scene, model, tile)  # a second pass
        px = _write_outputs(scene, model.schema, pan_schema, read, ids, tile, out, pan, opts,
                            read_labels, read_valid)  # fmt: skip
    return InstanceResult(out, ids.count, model.schema, pan, px, _gsd_or_none(scene))


def _gsd_or_none(scene: Scene) -> float | None:
    """The scene's pixel size in metres; None where its CRS has no metric size."""
    try:
        return pixel_size_m(scene.crs, scene.transform, (scene.height, scene.width))
    except GeosegError:  # the object-size check then compares pixels
        return None


def stuff_schema(things: ClassSchema, labels_path: str, scene: Scene) -> ClassSchema:
    """Classes of a panoptic map fusing an instance model with another model's label map.

    Panoptic FPN rules: objects keep their pixels; other pixels take the label map's
    class if it is stuff. A label-map class named like one of the instance model's
    thing classes is a thing there too: its pixels without an object become void.

    Args:
        things: the instance model's classes.
        labels_path: label raster of the same scene (``geoseg predict`` with a
            semantic model): same grid, class names in its ``GEOSEG_CLASSES`` tag
            (a raster without them is read with the instance model's class ids).
        scene: the scene being segmented (its grid).

    Returns:
        The instance model's thing classes plus the label map's stuff classes.

    Raises:
        InvalidRasterError: another grid, or a class id that means different
            classes in the two models.
    """
    check_same_grid(labels_path, scene.height, scene.width, scene.crs, scene.transform)
    stuff = read_class_schema(labels_path)
    if stuff is None:  # no class names: numbered like the instance model
        return things
    thing_classes = [c for c in things.classes if c.is_thing]
    names = {c.name.lower() for c in thing_classes}
    ids = {c.id: c for c in thing_classes}
    kept = []
    for c in stuff.classes:
        if c.name.lower() in names:
            continue  # a thing: left to the instance model
        if c.id in ids:
            raise InvalidRasterError(
                f"{labels_path}: class {c.id} is {c.name!r} here but {ids[c.id].name!r} in the "
                "instance model; the two models must number their classes apart"
            )
        kept.append(dataclasses.replace(c, is_thing=False))
    return ClassSchema(tuple(sorted([*thing_classes, *kept], key=lambda c: c.id)))


def _write_outputs(
    scene: Scene, schema: ClassSchema, pan_schema: ClassSchema,
    read: Callable[[tuple[slice, slice]], np.ndarray], ids: InstanceIds, tile: TileSpec,
    out: Path, pan: Path | None, opts: InstanceOptions,
    own_stuff: Callable[[tuple[slice, slice]], np.ndarray] | None,
    read_valid: Callable[[tuple[slice, slice]], np.ndarray] | None = None,
) -> np.ndarray:  # fmt: skip
    """Pass 2: relabel the staged blocks into the instance (and panoptic) COG.

    With ``read_valid`` (the valid masks pass 1 staged, for a scene that can hold
    nodata: :attr:`Scene.maskable`) both COGs get a mask that is invalid on the scene's
    nodata, so it reads apart from "no object" (class 255).

    The panoptic COG's stuff comes from ``opts.stuff_labels``, else from
    ``own_stuff`` (the model's semantic labels of a block), else none. Returns
    ``(count + 1,) int64`` pixels of each scene id, counted on the way.
    """
    kw: dict[str, Any] = {
        "height": scene.height, "width": scene.width, "crs": scene.crs,
        "transform": scene.transform, "schema": schema, "overwrite": opts.overwrite,
        "tags": {"GEOSEG_VERSION": __version__, "GEOSEG_SOURCE": Path(scene.path).name},
    }  # fmt: skip
    if ids.scores is not None:  # per object: the best of its fragments' detection scores
        kw["tags"][SCORES_TAG] = json.dumps([round(float(v), 4) for v in ids.scores])
    with contextlib.ExitStack() as stack:
        inst_sink = stack.enter_context(instance_cog_writer(out, **kw))
        pan_sink = stuff = None
        if pan is not None:
            pan_sink = stack.enter_context(
                instance_cog_writer(
                    pan, descriptions=PANOPTIC_BANDS, **(kw | {"schema": pan_schema})
                )
            )
            if opts.stuff_labels is not None:
                stuff = stack.enter_context(
                    label_block_reader(opts.stuff_labels, scene.height, scene.width)
                )
            else:
                stuff = own_stuff
        px = np.zeros(ids.count + 1, np.int64)
        for plan in plan_chunks(scene.height, scene.width, tile):
            block = ids.relabel(plan.origin, read(plan.slices))  # (ids, classes)
            px += np.bincount(block[0].ravel(), minlength=ids.count + 1)[: ids.count + 1]
            inst_sink[(slice(0, 2), *plan.slices)] = block[::-1]
            valid = None if read_valid is None else read_valid(plan.slices).astype(bool)
            if valid is not None:  # the scene's nodata is masked, not "no object"
                inst_sink.write_valid(plan.slices, valid)
            if pan_sink is not None:
                sem = None if stuff is None else stuff(plan.slices)
                pan_sink[(slice(0, 2), *plan.slices)] = panoptic_block(block, sem, pan_schema)
                if valid is not None:
                    pan_sink.write_valid(plan.slices, valid)
    return px


def _semantic_reader(
    scene: Scene, model: Predictor, tile: TileSpec
) -> Callable[[tuple[slice, slice]], np.ndarray]:
    """``read((ys, xs))`` -> ``(h, w) uint8`` labels of ``model``'s semantic head, lazily.

    For a model that gives its labels only through ``predict``: a second pass over
    the scene (a :class:`~geoseg.stitching.SemanticInstancePredictor` needs none).
    """
    labels = predict_blocks(scene.data.data, scene.valid, lambda: model, tile, model.schema.ids)

    def read(key: tuple[slice, slice]) -> np.ndarray:
        return np.asarray(labels[(0, *key)].compute(scheduler="sync"))

    return read
