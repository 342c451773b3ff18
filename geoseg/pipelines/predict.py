"""``predict_scene``: scene + model -> label COG (+ confidence band, + PNG quicklook)."""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np
import rasterio

from geoseg import __version__
from geoseg.errors import GeosegError, InvalidRasterError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.io.cog import CogGrid, all_nodata_error, cog_grid, stored_chunks, tile_store
from geoseg.io.labels import LabelMeta, label_cog_from_chunks, label_cog_writer
from geoseg.io.outputs import output_run
from geoseg.io.parts import ChunkStore, file_stamp, parts_folder
from geoseg.io.preview import write_label_preview
from geoseg.io.raster import Scene, canonical_band_name, open_scene, select_bands
from geoseg.models.bands import BandRoles, reflectance_scale
from geoseg.models.cache import ModelSpec, default_batch_size, load_predictor, model_spec
from geoseg.models.family import Family
from geoseg.models.registry import checkpoint_family, model_family, task_kind, window_multiple
from geoseg.pipelines.band_hints import band_count_error
from geoseg.pipelines.plausibility import (
    guessed_band_order,
    warn_if_dominated,
    warn_if_outside_training,
)
from geoseg.tiling.execute import Progress, block_slices, store_blocks
from geoseg.tiling.infer import predict_blocks
from geoseg.types import ClassSchema, ModelMeta, TileSpec

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
class PredictOptions:
    """Options of :func:`predict_scene` (the CLI flags of ``geoseg predict``).

    Attributes:
        window: window side in px (default: the model's; 512 for ``spectral``).
        margin: margin in px trimmed from each window side (default: the model's).
        chunk: dask chunk side in px, rounded to a whole number of strides.
        blend: ``"trim"`` or ``"hann"``.
        batch_size: windows per model call (None: 32 on a GPU, 4 on the CPU).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        confidence: add a confidence band (``round(254 p)``, 255 = nodata).
        overwrite: replace an existing output.
        bands: band selection (1-based numbers or names) for checkpoint models.
        band_roles: ``{"red": 3, ...}`` 1-based band numbers for ``spectral``.
        sensor: fixed band layout for ``spectral`` (``sentinel2``, ``landsat8``, ...).
        assume_crs: CRS for scenes without one.
        scheduler: ``threads``, ``sync``, ``local`` or ``tcp://host:port``.
        workers: threads or worker processes.
        preview: path of a PNG quicklook to write.
        resume: reuse the chunks an interrupted run of the same job left behind.
        torch_threads: torch intra-op threads per model call (None: torch's default).
        precision: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp32``, ``fp16`` or ``bf16``.
        mask_clouds: a cloud model checkpoint; pixels it labels as a cloud or shadow
            class become nodata (see :mod:`geoseg.pipelines.clouds`).
    """

    window: int | None = None
    margin: int | None = None
    chunk: int = 1024
    blend: str = "trim"
    batch_size: int | None = None
    device: str = "auto"
    confidence: bool = False
    overwrite: bool = False
    bands: Sequence[str] | None = None
    band_roles: Mapping[str, int] = field(default_factory=dict)
    sensor: str | None = None
    assume_crs: str | None = None
    scheduler: str = "threads"
    workers: int | None = None
    preview: str | os.PathLike[str] | None = None
    resume: bool = False
    torch_threads: int | None = None
    precision: str = "auto"
    mask_clouds: str | None = None


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


def model_window(
    model: str, defaults: tuple[int, int], multiple: int, window: int | None, margin: int | None
) -> tuple[int, int]:
    """Window and margin (px) to run ``model`` with: the options', else the model's own.

    Raises:
        GeosegError: not a multiple of ``multiple`` or a margin past window/4; the
            message says whether the value came from the option or the model file.
    """
    w, m = window or defaults[0], defaults[1] if margin is None else margin
    origin = (
        f"window {w} px ({'--window' if window else 'from the model'}), margin {m} px "
        f"({'from the model' if margin is None else '--margin'})"
    )
    if w % multiple:
        raise GeosegError(
            f"{model}: {origin}: the window must be a multiple of {multiple} for this model; "
            f"pass --window {max(multiple, round(w / multiple) * multiple)}"
        )
    try:
        TileSpec(window=w, margin=m)
    except GeosegError as exc:
        raise GeosegError(f"{model}: {origin}: {exc}; pass --window and --margin") from exc
    return w, m


def _tile_spec(
    opts: PredictOptions, window: int, margin: int, multiple: int, model: str
) -> TileSpec:
    window, margin = model_window(model, (window, margin), multiple, opts.window, opts.margin)
    probe = TileSpec(window=window, margin=margin, blend=opts.blend)
    chunk_windows = max(1, round(opts.chunk / probe.stride))
    batch = opts.batch_size or default_batch_size(model, opts.device)
    return TileSpec(window, margin, chunk_windows, opts.blend, batch)


def _weights_free_setup(
    path: str, model: str, family: Family, opts: PredictOptions
) -> tuple[Scene, ModelSpec, ClassSchema, TileSpec]:
    """A weights-free model (``spectral``): bands by role, its own fixed classes."""
    from geoseg.models.bands import resolve_band_roles

    # A weights-free model is pixel-wise: no margin is needed for exact tiling.
    tile = _tile_spec(opts, 512, 0, family.window_multiple(model, {}), model)
    scene = open_scene(path, None, tile.chunk, opts.assume_crs)
    roles, notes = resolve_band_roles(
        scene.band_names, scene.colorinterp, opts.band_roles or None, opts.sensor, path
    )
    for note in notes:
        log.warning("%s", note)
    if family.schema is None:
        raise GeosegError(f"the {family.name} family declares no classes")
    spec = model_spec(model, opts.device, roles, reflectance_scale(scene.dtype, path))
    return scene, spec, family.schema, tile


def require_pixels(model: str, family: Family) -> None:
    """Refuse a family that needs more than the scene's pixels (a second date, prompts)."""
    if family.inputs != "pixels":
        raise GeosegError(
            f"{model}: a {family.name} model needs {family.inputs.replace('_', ' ')} as input; "
            "`geoseg predict` gives it the pixels of one scene only"
        )


def _match_bands(
    path: str, names: Sequence[str], meta: ModelMeta, wanted: Sequence[str] | None
) -> list[int]:
    """0-based scene bands feeding the model's inputs, by selection, name or order."""
    if wanted is not None:
        index = select_bands(path, names, wanted)
    elif {canonical_band_name(b) for b in meta.bands} <= {canonical_band_name(n) for n in names}:
        index = select_bands(path, names, meta.bands)
    elif len(names) == len(meta.bands):
        log.warning(
            "%s: band names %s differ from the model's %s; using the bands in file order",
            path, list(names), list(meta.bands),
        )  # fmt: skip
        index = list(range(len(names)))
    else:
        index = []
    if len(index) != len(meta.bands):
        raise band_count_error(path, names, meta.bands, None if wanted is None else len(index))
    return index


def _checkpoint_setup(
    path: str, model: str, opts: PredictOptions
) -> tuple[Scene, ModelSpec, ClassSchema, TileSpec]:
    meta = read_checkpoint_meta(model)
    if "semantic" not in task_kind(meta.task).predicts:
        raise GeosegError(
            f"{model}: a {meta.task} model; `geoseg predict` runs semantic and change models"
        )
    require_pixels(model, checkpoint_family(meta))
    multiple = window_multiple(meta.arch, meta.options)
    tile = _tile_spec(opts, meta.window, meta.margin, multiple, model)
    names = open_scene(path, None, tile.chunk, opts.assume_crs).band_names
    index = _match_bands(path, names, meta, opts.bands)
    scene = open_scene(path, [str(i + 1) for i in index], tile.chunk, opts.assume_crs)
    scale: float | None = reflectance_scale(scene.dtype, path)
    if not math.isclose(scale or 0.0, meta.normalization.scale, rel_tol=1e-6):
        log.warning(
            "%s: stored as %s (reflectance = value x %g), the model was trained on data scaled "
            "by %g; converting to the model's units", path, scene.dtype, scale,
            meta.normalization.scale,
        )  # fmt: skip
    else:
        scale = None
    warn_if_outside_training(path, index, scale or meta.normalization.scale, model, meta)
    spec = model_spec(model, opts.device, None, scale, opts.torch_threads, opts.precision)
    return scene, spec, meta.schema, tile


def prepare_model_input(
    path: str, model: str, opts: PredictOptions
) -> tuple[Scene, ModelSpec, ClassSchema, TileSpec]:
    """Open ``path`` with the bands ``model`` needs; load the model once to check it.

    Returns:
        The scene, the picklable model description, the model's classes and the grid.
    """
    family = model_family(model)
    if family.weights_free:
        setup = _weights_free_setup(path, model, family, opts)
    else:
        setup = _checkpoint_setup(path, model, opts)
    load_predictor(setup[1])  # fail early on a bad model, before any pixel is read
    return setup


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
    guess = None
    if isinstance(spec.roles, BandRoles):  # a weights-free model reading bands by role
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
