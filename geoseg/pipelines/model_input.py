"""What a model needs to run on a scene: the options, the model's window grid, the bands.

:func:`prepare_model_input` opens the scene with the bands a model reads (by role
for a weights-free model, by name or order for a checkpoint), settles the window,
margin and chunk, and loads the model once to check it. ``predict``, ``evaluate``
and instance prediction share it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.errors import BandMismatchError, GeosegError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.io.raster import Scene, open_scene, select_bands
from geoseg.models.bands import (
    band_match_keys,
    input_scale,
    named_by_colour,
    reflectance_scale,
)
from geoseg.models.cache import ModelSpec, default_batch_size, load_predictor, model_spec
from geoseg.models.family import Family
from geoseg.models.registry import checkpoint_family, model_family, task_kind, window_multiple
from geoseg.pipelines.band_hints import band_count_error
from geoseg.pipelines.plausibility import warn_if_declared_scaling, warn_if_outside_training
from geoseg.resolution import check_gsd_of
from geoseg.tiling.tta import check_tta
from geoseg.types import ClassSchema, ModelMeta, TileSpec, a_model_of, require_at_least

__all__ = [
    "PredictOptions",
    "match_bands",
    "model_window",
    "prepare_model_input",
    "refuse_tta",
    "require_pixels",
    "scene_scale",
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
        probabilities: also write the class-probability COG here (one ``round(254 p)``
            band per class, 255 = nodata; format in :mod:`geoseg.io.probabilities`).
        normalize_dates: ``"irmad"``: a change model's later dates are mapped onto
            date 1 first (see :mod:`geoseg.change.radiometric`).
        normalize_to: another date of the same place on the same grid (usually the
            earliest; a later one is warned about): a single-date checkpoint's scene is
            mapped onto its radiometry first (IR-MAD, :mod:`geoseg.change.normalize_to`);
            for post-classification change.
        ignore_gsd: run a checkpoint on a scene whose pixel size is more than 4x off
            the model's (:mod:`geoseg.resolution`; it still warns).
        tta: test-time augmentation of per-pixel class models: ``"none"``, ``"flips"``
            (4 flips) or ``"d4"`` (8 rotations/flips); the class probabilities are
            averaged over them (:mod:`geoseg.tiling.tta`).
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
    probabilities: Path | None = None
    normalize_dates: str | None = None
    normalize_to: str | None = None
    ignore_gsd: bool = False
    tta: str = "none"

    def __post_init__(self) -> None:
        check_tta(self.tta)
        require_at_least(
            "PredictOptions", window=(self.window, 1), margin=(self.margin, 0),
            chunk=(self.chunk, 1), batch_size=(self.batch_size, 1), workers=(self.workers, 1),
            torch_threads=(self.torch_threads, 1),
        )  # fmt: skip


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
    if opts.normalize_dates is not None:
        raise GeosegError(f"{model}: --normalize-dates applies to change checkpoints (t1_*, t2_*)")
    if opts.normalize_to is not None:
        raise GeosegError(f"{model}: --normalize-to applies to checkpoint models")
    from geoseg.models.bands import resolve_band_roles

    # A weights-free model is pixel-wise: no margin is needed for exact tiling.
    tile = _tile_spec(opts, 512, 0, family.window_multiple(model, {}), model)
    scene = open_scene(path, None, tile.chunk, opts.assume_crs)
    roles, notes = resolve_band_roles(
        scene.band_names, scene.colorinterp, opts.band_roles or None, opts.sensor, path
    )
    for note in notes:
        log.warning("%s", note)
    warn_if_declared_scaling(path, range(len(scene.band_names)))
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


def refuse_tta(model: str | None, task: str, tta: str) -> None:
    """Refuse ``--tta`` for a model that finds objects (instance, panoptic, SAM prompts).

    Raises:
        GeosegError: ``tta`` is not ``"none"`` and ``task`` is not a per-pixel class task.
    """
    if tta != "none" and task not in ("semantic", "change"):
        raise GeosegError(
            f"{model or 'the prediction'}: --tta {tta} averages per-pixel class probabilities "
            f"over flipped and rotated windows; --task {task} gives objects (ids, masks), "
            "which cannot be averaged that way; leave --tta out"
        )


def scene_scale(path: str, dtype: Any, meta: ModelMeta) -> float | None:
    """The scale to feed ``path`` (stored as ``dtype``) with, by
    :func:`geoseg.models.bands.input_scale`, with a warning when it is not the model's;
    None: the model's own."""
    imported = "imported_from" in meta.provenance
    scale = input_scale(dtype, meta.normalization.scale, imported, path)
    if scale is not None:
        log.warning(
            "%s: stored as %s (reflectance = value x %g), the model was made for data scaled "
            "by %g; converting to the model's units", path, dtype, scale,
            meta.normalization.scale,
        )  # fmt: skip
    return scale


def _partly_named(
    path: str, names: Sequence[str], bands: Sequence[str], file_keys: list[str],
    model_keys: list[str],
) -> BandMismatchError:  # fmt: skip
    """The refusal for a scene holding some of the model's bands by name, not all: file
    order would feed other bands into the named inputs too."""
    missing = [b for b, k in zip(bands, model_keys, strict=True) if k not in file_keys]
    pick = ",".join(
        str(file_keys.index(k) + 1) if k in file_keys else f"<{b}>"
        for b, k in zip(bands, model_keys, strict=True)
    )
    return BandMismatchError(
        f"{path}: the model reads {list(bands)}; this file's bands {list(names)} name some of "
        f"them but not {missing}, so neither names nor file order can feed it; pick the "
        f"model's bands in its order with --bands (here {pick}, with the band number of "
        "each <name>), or give a scene with those bands"
    )


def match_bands(
    path: str, names: Sequence[str], meta: ModelMeta, wanted: Sequence[str] | None
) -> list[int]:
    """0-based scene bands feeding the model's inputs, by selection, name or order."""
    file_keys, model_keys = band_match_keys(names, meta.bands)
    if wanted is not None:
        index = select_bands(path, names, wanted)
    elif set(model_keys) <= set(file_keys):
        index = [file_keys.index(k) for k in model_keys]
    elif len(names) == len(meta.bands) and not set(model_keys) & set(file_keys):
        # names that say nothing of the model's bands (1, 2, 3; another naming): file order
        if len(names) > 1:
            log.warning(
                "%s: band names %s differ from the model's %s; using the bands in file order",
                path, list(names), list(meta.bands),
            )  # fmt: skip
        index = list(range(len(names)))
    elif set(model_keys) & set(file_keys) and len(names) >= len(meta.bands):
        raise _partly_named(path, names, meta.bands, file_keys, model_keys)
    else:
        index = []
    if len(index) != len(meta.bands):
        raise band_count_error(path, names, meta.bands, None if wanted is None else len(index))
    return index


def _checkpoint_setup(
    path: str, model: str, opts: PredictOptions
) -> tuple[Scene, ModelSpec, ClassSchema, TileSpec]:
    meta = read_checkpoint_meta(model)
    kind = task_kind(meta.task)
    if kind.command != "geoseg predict":  # SAM: objects, no per-pixel map to make or score
        raise GeosegError(
            f"{model}: {a_model_of(meta.task)}, which makes no per-pixel map; run it with "
            f"`{kind.command}`"
        )
    if "semantic" not in kind.predicts:
        raise GeosegError(
            f"{model}: {a_model_of(meta.task)}; `geoseg predict` runs semantic and change models"
        )
    require_pixels(model, checkpoint_family(meta))
    multiple = window_multiple(meta.arch, meta.options)
    tile = _tile_spec(opts, meta.window, meta.margin, multiple, model)
    whole = open_scene(path, None, tile.chunk, opts.assume_crs)
    check_gsd_of(whole, path, model, meta.gsd_m, opts.ignore_gsd)
    names = named_by_colour(whole.band_names, whole.colorinterp)
    index = match_bands(path, names, meta, opts.bands)
    scene = open_scene(path, [str(i + 1) for i in index], tile.chunk, opts.assume_crs)
    scale = scene_scale(path, scene.dtype, meta)
    if opts.normalize_dates is not None:  # float32 now; the scale is the file's dtype's
        # here, not at the top: the geoseg.change package loads geopandas and shapely
        from geoseg.change.radiometric import normalize_scene

        scene = normalize_scene(scene, meta.bands, opts.normalize_dates)[0]
    if opts.normalize_to is not None:
        scene = _normalized_to(scene, path, model, meta, opts, tile.chunk)
    warn_if_outside_training(path, index, scale or meta.normalization.scale, model, meta,
                             opts.bands is not None)  # fmt: skip
    spec = model_spec(model, opts.device, None, scale, opts.torch_threads, opts.precision)
    return scene, spec, meta.schema, tile


def _normalized_to(
    scene: Scene, path: str, model: str, meta: ModelMeta, opts: PredictOptions, chunk: int
) -> Scene:
    """``scene`` mapped onto the radiometry of ``opts.normalize_to`` (same bands, by the
    same selection rule), for a single-date model."""
    from geoseg.change.normalize_to import check_same_grid, normalize_to_reference

    ref = str(opts.normalize_to)
    if meta.task == "change":
        raise GeosegError(
            f"{model}: a change model reads both dates from one stack; use --normalize-dates "
            "instead of --normalize-to"
        )
    if os.path.abspath(ref) == os.path.abspath(path):
        raise GeosegError(
            f"{path}: --normalize-to names the scene itself; give another date of the same "
            "place (usually the earliest)"
        )
    whole = open_scene(ref, None, chunk, opts.assume_crs)
    check_same_grid(scene, whole)  # first: another grid is the likelier cause of what follows
    index = match_bands(ref, named_by_colour(whole.band_names, whole.colorinterp), meta, opts.bands)
    reference = open_scene(ref, [str(i + 1) for i in index], chunk, opts.assume_crs)
    if reference.dtype != scene.dtype:  # the scale to reflectance comes from the scene's dtype
        raise GeosegError(
            f"{ref}: {reference.dtype} bands, {path} has {scene.dtype}; the type says how values "
            f"map to reflectance, so store both dates alike (`gdal_translate -ot {scene.dtype}`"
            " with -scale to the same units)"
        )
    _warn_if_later(path, ref, scene.tags, reference.tags)
    return normalize_to_reference(scene, reference)[0]


def _warn_if_later(
    path: str, ref: str, scene_tags: Mapping[str, str], ref_tags: Mapping[str, str]
) -> None:
    """Warn when the ``--normalize-to`` reference was acquired after the scene.

    Not wrong in itself (the maps then share the later date's radiometry), but the
    dates of one change report must share one reference, and the usual one is the
    earliest date, which is predicted as it is.
    """
    from geoseg.pipelines.time_order import tagged_date

    mine, theirs = tagged_date(scene_tags), tagged_date(ref_tags)
    if mine is None or theirs is None or theirs <= mine:
        return
    log.warning(
        "%s (acquired %s): --normalize-to %s is a later date (acquired %s); the map is made "
        "in that date's radiometry: normalise every date of one change report to the same "
        "reference (usually the earliest date, predicted as it is)",
        path, mine.isoformat(), ref, theirs.isoformat(),
    )  # fmt: skip


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
