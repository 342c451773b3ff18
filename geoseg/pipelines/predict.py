"""``predict_scene``: scene + model -> label COG (+ confidence band, + class-probability
COG, + PNG quicklook)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dask.array as da

from geoseg import __version__
from geoseg.errors import AllNodataError, GeosegError, InvalidRasterError
from geoseg.io.band_checks import empty_band_text, empty_bands
from geoseg.io.cog import CogGrid, cog_grid
from geoseg.io.labels import LabelMeta, probabilities_meta
from geoseg.io.outputs import current_run, output_run
from geoseg.io.preview import write_label_preview
from geoseg.io.probabilities import PROBABILITIES_TAG, tag_value
from geoseg.io.raster import Scene
from geoseg.io.stamps import file_stamp, scene_stamps
from geoseg.models.cache import ModelSpec, load_predictor
from geoseg.models.registry import model_family
from geoseg.pipelines.model_input import (  # the options and setup live there; same names here
    PredictOptions,
    model_window,
    prepare_model_input,
    require_pixels,
)
from geoseg.pipelines.plausibility import guessed_band_order, warn_if_dominated
from geoseg.pipelines.predict_parts import OutputPart, PredictParts
from geoseg.tiling.execute import Progress, store_blocks
from geoseg.tiling.infer import predict_blocks
from geoseg.tiling.tta import tta_loader
from geoseg.types import ClassSchema, TileSpec

__all__ = [
    "PredictOptions",
    "PredictResult",
    "check_distinct_outputs",
    "check_geotiff_name",
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
        probabilities: the class-probability COG, if one was asked for.
        normalized: with ``normalize_to``, the radiometric fit in one line (reference,
            invariant share, gain/offset per band name), as the map's tag records it.
    """

    output: Path
    valid_pixels: int
    schema: ClassSchema
    preview: Path | None = None
    probabilities: Path | None = None
    normalized: str | None = None


#: Tag of a map made with test-time augmentation: its ``--tta`` mode (``flips``, ``d4``).
TTA_TAG = "GEOSEG_TTA"

#: Tag prefix of the fit of each later date of a stack (``GEOSEG_NORMALIZE_T2``, ...).
_DATE_FITS = "GEOSEG_NORMALIZE_T"


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
        options: see :class:`PredictOptions`; ``options.probabilities`` also writes
            the class-probability COG (:mod:`geoseg.io.probabilities`).
        progress: ``progress(done, total)`` callback.

    Raises:
        GeosegError: bad input, model or output (nothing is written).
    """
    opts = options or PredictOptions()
    path, out = os.fspath(scene_path), Path(output)
    probs = None if opts.probabilities is None else Path(opts.probabilities)
    extra = [Path(p) for p in (opts.preview, probs) if p is not None]
    check_distinct_outputs(out, probs, opts.preview)
    with output_run(opts.overwrite, [Path(path)]) as run:
        run.lock(out)
        if probs is not None:
            run.lock(probs)
        run.add([out, *extra])
        return _predict(path, model, out, opts, progress)


def check_distinct_outputs(
    out: Path, probabilities: Path | None, preview: str | os.PathLike[str] | None
) -> None:
    """Refuse a raster output not named as a GeoTIFF, or one path given twice.

    Raises:
        GeosegError: ``-o``/``--probabilities`` not ending in .tif/.tiff (a COG is
            written whatever the name, so ``-o x.gpkg`` made a GeoTIFF called .gpkg),
            or the same path twice (nothing is written).
    """
    for other, flag in ((out, "-o"), (preview, "--preview")):
        if probabilities is None:
            break
        if other is not None and os.path.abspath(other) == os.path.abspath(probabilities):
            raise GeosegError(
                f"{probabilities}: given as both --probabilities and {flag}; "
                "name the probability file differently, e.g. lc_probs.tif"
            )
    for raster, flag in ((out, "-o"), (probabilities, "--probabilities")):
        if raster is not None:
            check_geotiff_name(raster, flag)


def check_geotiff_name(raster: str | os.PathLike[str], flag: str) -> None:
    """Refuse a raster output whose name does not end in .tif/.tiff.

    Raises:
        GeosegError: a COG would be written under a vector (or other) extension.
    """
    if Path(raster).suffix.lower() not in (".tif", ".tiff"):
        raise GeosegError(
            f"{raster}: {flag} writes a GeoTIFF (COG); name it .tif (polygons: add "
            "--vector out.gpkg, or run `geoseg vectorize` on the map)"
        )


def _predict(
    path: str, model: str, out: Path, opts: PredictOptions, progress: Progress | None
) -> PredictResult:
    """:func:`predict_scene` once its outputs are registered and locked."""
    scene, spec, schema, tile = prepare_model_input(path, model, opts)
    guess = guessed_band_order(scene, spec.roles, opts.band_roles, opts.sensor)
    load = tta_loader(functools.partial(load_predictor, spec), opts.tta)
    lazy = predict_blocks(
        scene.data.data, scene.valid, load, tile, schema.ids, opts.confidence,
        opts.probabilities is not None,
    )  # fmt: skip
    if opts.mask_clouds is not None:
        from geoseg.pipelines.clouds import apply_cloud_mask

        lazy = apply_cloud_mask(path, lazy, opts.mask_clouds, opts, lazy.chunks[1:])
    outputs = _outputs(scene, schema, model, out, opts)
    fingerprint = _fingerprint(path, scene, spec, tile, opts)
    parts = PredictParts(outputs, fingerprint, opts.resume, _cog_grid(lazy, tile))
    try:
        store_blocks(lazy, parts, opts.scheduler, opts.workers, progress, parts.done)
        valid = _write_cog(parts, lazy, opts.overwrite)
    except KeyboardInterrupt:
        # the caller says how to resume (--resume; a workflow's predict: {resume: true})
        log.info("interrupted: finished chunks are kept in %s", parts.folder)
        raise
    except InvalidRasterError as exc:
        parts.remove()
        if not isinstance(exc, AllNodataError):
            raise
        raise _why_all_nodata(path, scene, opts) or exc from None
    except BaseException:  # io.outputs names a full disk or a refused write
        parts.remove()
        raise
    run = current_run()
    if opts.resume and run is not None:  # a later step may fail: its rerun reuses these
        run.on_success(parts.remove)
    else:
        parts.remove()
    if guess is not None:
        warn_if_dominated(out, path, schema, guess)
    preview = None
    if opts.preview is not None:
        preview = write_label_preview(out, opts.preview)
    probs = outputs[1].path if len(outputs) > 1 else None
    return PredictResult(out, valid, schema, preview, probs, _normalized(scene, opts))


def _why_all_nodata(path: str, scene: Scene, opts: PredictOptions) -> InvalidRasterError | None:
    """Why no pixel of ``scene`` was mapped, when a band or the cloud mask says: a band
    without one finite value (one more pass over the scene, on this error path only)."""
    if scene.data.dtype.kind == "f":
        empty = empty_bands(scene.data.data, [None] * len(scene.band_names))
        if empty.any():
            names = [n for n, e in zip(scene.band_names, empty, strict=True) if e]
            return InvalidRasterError(
                f"{path}: {empty_band_text(names)}, so every pixel of the input is nodata; "
                "re-export the scene with that band, or choose another scene"
            )
    if opts.mask_clouds is not None:
        return InvalidRasterError(
            f"{path}: every pixel is nodata, cloud or cloud shadow by {opts.mask_clouds}; "
            "nothing is left to map on this date, choose a clearer one"
        )
    return None


def _normalized(scene: Scene, opts: PredictOptions) -> str | None:
    """The ``--normalize-to`` fit of ``scene`` in one line (``--normalize-dates``: one line
    per later date), or None without one."""
    if opts.normalize_to is None and opts.normalize_dates is None:
        return None
    from geoseg.change.normalize_to import normalization_text, read_normalization

    named = [("", "GEOSEG_NORMALIZED_TO")]
    if opts.normalize_dates is not None:  # a change model's stack: one fit per later date
        dates = sorted(int(k[len(_DATE_FITS) :]) for k in scene.tags if k.startswith(_DATE_FITS))
        named = [(f"date {t} ", f"{_DATE_FITS}{t}") for t in dates]
    docs = [(prefix, read_normalization(scene.tags, key)) for prefix, key in named]
    return "\n".join(f"{p}{normalization_text(d)}" for p, d in docs if d is not None) or None


def _outputs(
    scene: Scene, schema: ClassSchema, model: str, out: Path, opts: PredictOptions
) -> list[OutputPart]:
    """The label COG and, with ``opts.probabilities``, the probability COG, in band order."""
    bands = 1 + opts.confidence
    meta = _label_meta(scene, schema, model, bands, opts.tta)
    if opts.probabilities is None:
        return [OutputPart(out, meta, 0)]
    probs = Path(opts.probabilities)
    tags = {**meta.tags, PROBABILITIES_TAG: tag_value(out, probs)}
    return [
        OutputPart(out, dataclasses.replace(meta, tags=tags), 0),
        OutputPart(probs, probabilities_meta(meta, out), bands),
    ]


def _fingerprint(
    path: str, scene: Scene, spec: ModelSpec, tile: TileSpec, opts: PredictOptions
) -> dict[str, object]:
    """What makes two runs produce the same chunks (batch size and scheduler do not).

    ``files`` stamps every file read (the scene's VRT sources and sidecars too, the
    checkpoint, the cloud model, the ``--normalize-to`` date) by size, time stamp
    and content digest (:mod:`geoseg.io.stamps`).

    The model's arithmetic counts as it runs (device type and autocast dtype), so a
    GPU run is not resumed on the CPU, while ``auto`` and the precision it means are
    interchangeable.
    """
    files = scene_stamps(path)
    if not model_family(spec.source).weights_free:
        files[os.path.abspath(spec.source)] = file_stamp(spec.source)
    if opts.mask_clouds and os.path.isfile(opts.mask_clouds):
        files[os.path.abspath(opts.mask_clouds)] = file_stamp(opts.mask_clouds)
    if opts.normalize_to:
        files.update(scene_stamps(opts.normalize_to))
    return {
        "input": os.path.abspath(path), "files": dict(sorted(files.items())),
        "bands": list(scene.band_names), "model": spec.source,
        "scale": spec.scale, "roles": repr(spec.roles), "arithmetic": _arithmetic(spec),
        "window": tile.window, "margin": tile.margin, "chunk": tile.chunk, "blend": tile.blend,
        "confidence": opts.confidence, "probabilities": opts.probabilities is not None,
        "geoseg": __version__, "tta": opts.tta, "mask_clouds": opts.mask_clouds,
        "normalize_dates": opts.normalize_dates,
        "normalize_to": opts.normalize_to and os.path.abspath(opts.normalize_to),
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


def _cog_grid(lazy: da.Array, tile: TileSpec) -> CogGrid | None:
    """How chunk tasks tile the output COG; None if no COG tile side divides the chunk.

    (A function of its own so that benchmarks/bench_host.py can force the GDAL path.)
    """
    return cog_grid(lazy.shape, lazy.chunks, tile.chunk)


def _write_cog(parts: PredictParts, lazy: da.Array, overwrite: bool) -> int:
    """Lay the kept chunks out as the output COG(s); the label map's labelled pixels.

    (A function of its own so that tests can fill the disk here.)
    """
    return parts.write(lazy, overwrite)


#: Scene tags that may hold its acquisition date, most specific first (TIFFTAG_DATETIME
#: is often the file's creation time: the last resort).
DATE_TAGS = ("DATE", "ACQUISITION", "ACQUISITION_DATE", "TIFFTAG_DATETIME")


#: The tag of :data:`DATE_TAGS` that is often the file's creation time, not the scene's.
FILE_TIME_TAG = "TIFFTAG_DATETIME"
#: A label map's tag naming where its ``DATE`` came from, when that was only
#: :data:`FILE_TIME_TAG`.
DATE_SOURCE_TAG = "DATE_SOURCE"


def _without_file_time(tags: Mapping[str, str]) -> dict[str, str]:
    """``tags`` less :data:`FILE_TIME_TAG`: only the tags that name an acquisition."""
    return {k: v for k, v in tags.items() if k != FILE_TIME_TAG}


def acquisition_date(tags: Mapping[str, str]) -> str | None:
    """:func:`scene_date` from tags that name an acquisition only (None for a label map
    whose ``DATE`` came from :data:`FILE_TIME_TAG`): dates that may refuse an order."""
    if tags.get(DATE_SOURCE_TAG) == FILE_TIME_TAG:
        return None
    return scene_date(_without_file_time(tags))


def scene_date(tags: Mapping[str, str]) -> str | None:
    """The first of :data:`DATE_TAGS` that parses, as an ISO date ``YYYY-MM-DD``.

    Reads ``2015-07-11``, ``2015-07-11T10:00:08`` (any ISO 8601 date-time),
    ``20150711`` and TIFF's ``2015:07:11 10:00:08``; None when no tag parses (the
    label map then has no DATE tag and change reports say "date unknown").
    """
    for key in DATE_TAGS:
        value = str(tags.get(key, "")).strip()
        for text in (value, value[:10].replace(":", "-")):
            try:
                return dt.datetime.fromisoformat(text).date().isoformat()
            except ValueError:
                continue
    return None


def date_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """A label map's date tags from its scene's ``tags``: ``DATE`` (:func:`scene_date`;
    none without one) and, for a date read from :data:`FILE_TIME_TAG` alone (maybe the
    file's creation time), ``DATE_SOURCE`` saying so: change does not refuse an order
    on it (:mod:`geoseg.pipelines.time_order`)."""
    date = scene_date(tags)
    if date is None:
        return {}
    guessed = scene_date(_without_file_time(tags)) is None
    return {"DATE": date, **({DATE_SOURCE_TAG: FILE_TIME_TAG} if guessed else {})}


def _label_meta(
    scene: Scene, schema: ClassSchema, model: str, bands: int, tta: str = "none"
) -> LabelMeta:
    """The output's classes, georeferencing (the scene's), band descriptions and tags
    (the scene's SENSOR, as DATE its acquisition date: :func:`scene_date`, and with
    test-time augmentation ``GEOSEG_TTA``: its mode)."""
    from geoseg.pipelines.time_order import warn_unread_dates

    warn_unread_dates(scene.path, scene.tags)  # a DATE like 11/07/2015 is not dropped silently
    tags = {
        **date_tags(scene.tags),
        # SENSOR, and the radiometric fits of --normalize-to (geoseg.change.normalize_to)
        # and --normalize-dates (geoseg.change.radiometric)
        **{
            k: v
            for k, v in scene.tags.items()
            if k in ("SENSOR", "GEOSEG_NORMALIZED_TO") or k.startswith(_DATE_FITS)
        },
        "GEOSEG_MODEL": Path(model).name,
        "GEOSEG_VERSION": __version__,
        "GEOSEG_SOURCE": Path(scene.path).name,
        **({TTA_TAG: tta} if tta != "none" else {}),
    }
    return LabelMeta(
        scene.crs, scene.transform, schema, ["class", "confidence"][:bands], tags, scene.path
    )
