"""``predict_scene``: scene + model -> label COG (+ confidence band, + PNG quicklook)."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import rasterio

from geoseg import __version__
from geoseg.errors import GeosegError, InvalidRasterError
from geoseg.io.cog import CogGrid, all_nodata_error, cog_grid, stored_chunks, tile_store
from geoseg.io.labels import LabelMeta, label_cog_from_chunks, label_cog_writer
from geoseg.io.outputs import output_run
from geoseg.io.parts import ChunkStore, file_stamp, parts_folder
from geoseg.io.preview import write_label_preview
from geoseg.io.raster import Scene
from geoseg.models.cache import ModelSpec, load_predictor
from geoseg.models.registry import model_family
from geoseg.pipelines.model_input import (  # the options and setup live there; same names here
    PredictOptions,
    model_window,
    prepare_model_input,
    require_pixels,
)
from geoseg.pipelines.plausibility import guessed_band_order, warn_if_dominated
from geoseg.tiling.execute import Progress, block_slices, store_blocks
from geoseg.tiling.infer import predict_blocks
from geoseg.types import ClassSchema, TileSpec

__all__ = [
    "PredictOptions",
    "PredictResult",
    "model_window",
    "predict_scene",
    "prepare_model_input",
    "require_pixels",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict_scene` wrote.

    Attributes:
        output: the label COG.
        valid_pixels: pixels with a class (not nodata).
        schema: the classes in the file.
        preview: the PNG quicklook, if one was asked for.
    """

    output: Path
    valid_pixels: int
    schema: ClassSchema
    preview: Path | None = None


def predict_scene(
    scene_path: str | os.PathLike[str],
    model: str,
    output: str | os.PathLike[str],
    options: PredictOptions | None = None,
    progress: Progress | None = None,
) -> PredictResult:
    """Segment a whole scene into a label COG with the same grid as the input.

    Args:
        scene_path: GeoTIFF/COG/VRT to segment.
        model: ``"spectral"`` or a ``.safetensors`` checkpoint.
        output: label COG to write (uint8, 255 = nodata).
        options: see :class:`PredictOptions`.
        progress: ``progress(done, total)`` callback.

    Raises:
        GeosegError: bad input, model or output (nothing is written).
    """
    opts = options or PredictOptions()
    path, out = os.fspath(scene_path), Path(output)
    with output_run(opts.overwrite, [Path(path)]) as run:
        run.lock(out)
        run.add([out, *([] if opts.preview is None else [Path(opts.preview)])])
        return _predict(path, model, out, opts, progress)


def _predict(
    path: str, model: str, out: Path, opts: PredictOptions, progress: Progress | None
) -> PredictResult:
    """:func:`predict_scene` once its outputs are registered and locked."""
    scene, spec, schema, tile = prepare_model_input(path, model, opts)
    guess = guessed_band_order(scene, spec.roles, opts.band_roles, opts.sensor)
    lazy = predict_blocks(
        scene.data.data, scene.valid, functools.partial(load_predictor, spec), tile,
        schema.ids, opts.confidence,
    )  # fmt: skip
    if opts.mask_clouds is not None:
        from geoseg.pipelines.clouds import apply_cloud_mask

        lazy = apply_cloud_mask(path, lazy, opts.mask_clouds, opts, lazy.chunks[1:])
    grid = _cog_grid(lazy, tile)
    parts = _chunk_store(out, _fingerprint(path, scene, spec, tile, opts), opts.resume, grid)
    kept: set[tuple[int, int]] = set()  # chunks of an earlier run, checked
    try:
        store_blocks(lazy, parts, opts.scheduler, opts.workers, progress, _done_in(parts, kept))
        meta = _label_meta(scene, schema, model, lazy.shape[0])
        if grid is None:
            valid = _assemble(lazy, parts, out, meta, opts.overwrite)
        else:
            valid = _write_cog(grid, parts, out, meta, opts.overwrite, kept)
    except KeyboardInterrupt:
        log.warning(
            "interrupted: finished chunks are kept in %s; rerun with --resume", parts.folder
        )
        raise
    except InvalidRasterError as exc:
        parts.remove()
        if opts.mask_clouds is None or str(exc) != str(all_nodata_error(scene.path)):
            raise
        raise InvalidRasterError(
            f"{path}: every pixel is nodata, cloud or cloud shadow by {opts.mask_clouds}; "
            "nothing is left to map on this date, choose a clearer one"
        ) from None
    except BaseException:  # io.outputs names a full disk or a refused write
        parts.remove()
        raise
    parts.remove()
    if guess is not None:
        warn_if_dominated(out, path, schema, guess)
    preview = None
    if opts.preview is not None:
        preview = write_label_preview(out, opts.preview)
    return PredictResult(out, valid, schema, preview)


def _fingerprint(
    path: str, scene: Scene, spec: ModelSpec, tile: TileSpec, opts: PredictOptions
) -> dict[str, object]:
    """What makes two runs produce the same chunks (batch size and scheduler do not).

    The model's arithmetic counts as it runs (device type and autocast dtype), so a
    GPU run is not resumed on the CPU, while ``auto`` and the precision it means are
    interchangeable.
    """
    return {
        "input": os.path.abspath(path), "input_stamp": file_stamp(path),
        "bands": list(scene.band_names), "model": spec.source, "model_stamp": list(spec.stamp),
        "scale": spec.scale, "roles": repr(spec.roles), "arithmetic": _arithmetic(spec),
        "window": tile.window, "margin": tile.margin, "chunk": tile.chunk, "blend": tile.blend,
        "confidence": opts.confidence, "geoseg": __version__,
        "mask_clouds": opts.mask_clouds and [opts.mask_clouds, file_stamp(opts.mask_clouds)],
    }  # fmt: skip


def _arithmetic(spec: ModelSpec) -> str:
    """``"cpu fp32"``, ``"cuda fp16"``, ...: where and in which precision the model runs."""
    family = model_family(spec.source)
    if family.source != "torch":
        return family.source
    from geoseg.models.runtime import resolve_device, resolve_precision

    device = resolve_device(spec.device)
    amp = resolve_precision(spec.precision, device)
    return f"{device.type} {'fp32' if amp is None else str(amp).removeprefix('torch.')}"


def _done_in(parts: ChunkStore, kept: set[tuple[int, int]]) -> Callable[[tuple[slice, ...]], bool]:
    """``done(key)``: the chunk at ``key`` is in ``parts``, intact (added to ``kept``)."""

    def done(key: tuple[slice, ...]) -> bool:
        b, ys, xs = key
        shape = (b.stop - b.start, ys.stop - ys.start, xs.stop - xs.start)
        if parts.load(ys.start, xs.start, shape) is None:
            return False
        kept.add((ys.start, xs.start))
        return True

    return done


def _cog_grid(lazy: da.Array, tile: TileSpec) -> CogGrid | None:
    """How chunk tasks tile the output COG; None if no COG tile side divides the chunk.

    (A function of its own so that benchmarks/bench_host.py can force the GDAL path.)
    """
    return cog_grid(lazy.shape, lazy.chunks, tile.chunk)


def _label_meta(scene: Scene, schema: ClassSchema, model: str, bands: int) -> LabelMeta:
    """The output's classes, georeferencing (the scene's), band descriptions and tags."""
    tags = {
        **{k: v for k, v in scene.tags.items() if k in ("DATE", "SENSOR")},
        "GEOSEG_MODEL": Path(model).name,
        "GEOSEG_VERSION": __version__,
        "GEOSEG_SOURCE": Path(scene.path).name,
    }
    return LabelMeta(
        scene.crs, scene.transform, schema, ["class", "confidence"][:bands], tags, scene.path
    )


def _chunk_store(
    out: Path, fingerprint: dict[str, object], resume: bool, grid: CogGrid | None
) -> ChunkStore:
    """Where finished chunks go: their COG tiles (``grid``), else the blocks themselves."""
    # the tiles' bytes come from GDAL's DEFLATE: a resumed run must use the same GDAL
    fingerprint = {**fingerprint, "cog_tile": grid and grid.tile, "gdal": rasterio.__gdal_version__}
    if grid is None:
        return ChunkStore(parts_folder(out), fingerprint, resume)
    return tile_store(parts_folder(out), fingerprint, resume, grid)


def _write_cog(
    grid: CogGrid, parts: ChunkStore, out: Path, meta: LabelMeta, overwrite: bool,
    kept: set[tuple[int, int]],
) -> int:  # fmt: skip
    """Lay the chunks' compressed tiles out as the output COG; the number of labelled pixels.

    ``kept``: chunks of an earlier run already checked (their digests are not again).
    """
    return label_cog_from_chunks(out, meta, grid, stored_chunks(parts, grid, kept), overwrite)


def _assemble(
    lazy: da.Array, parts: ChunkStore, out: Path, meta: LabelMeta, overwrite: bool
) -> int:
    """Copy the finished chunks into the output COG with GDAL; the number of labelled pixels."""
    _, height, width = lazy.shape
    with label_cog_writer(out, meta, height=height, width=width, overwrite=overwrite) as sink:
        for index in np.ndindex(lazy.numblocks):
            key = block_slices(lazy, index)
            shape = tuple(s.stop - s.start for s in key)
            record = parts.load(key[1].start, key[2].start, shape)
            if record is None:
                raise GeosegError(f"{parts.folder}: chunk {index} went missing; run again")
            sink[key] = record["block"]
    return sink.valid_pixels
