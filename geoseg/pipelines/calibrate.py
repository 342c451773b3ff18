"""``geoseg calibrate``: fit a checkpoint's softmax temperature on held-out labelled pixels.

Temperature scaling (Guo et al. 2017; the fit is :mod:`geoseg.training.calibration`)
of a per-pixel class model that exists already: the model predicts the image with
predict's own window grid, the labelled pixels' log-probabilities give ``T`` by
maximum likelihood, and a NEW checkpoint is written with the same weights and ``T``
in its metadata (the input is never replaced). ``predict`` then divides the logits
by ``T``: the label map is unchanged, the probabilities (``--probabilities``, the
``change --rule posterior`` input) are calibrated.

The labelled pixels must be held out from the model's training, and must not be the
scenes or truth a result is later measured on: calibrating on the test data makes
the test say nothing.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import dask.array as da

from geoseg.errors import CheckpointError, GeosegError, OutputExistsError
from geoseg.io.checkpoint import load_checkpoint, save_checkpoint
from geoseg.io.label_classes import label_ids_by_name, mapping_note
from geoseg.io.outputs import check_output_path, output_run
from geoseg.io.raster import Scene
from geoseg.io.training_data import LABEL_NODATA
from geoseg.models.cache import load_predictor
from geoseg.models.ensemble import per_pixel
from geoseg.models.onnx_runtime import OnnxPredictor
from geoseg.models.registry import checkpoint_family, families, model_family, task_kind
from geoseg.models.runtime import TorchPredictor
from geoseg.pipelines.evaluate import CHANGE_MASK_MAP, reference_on_grid
from geoseg.pipelines.model_input import PredictOptions, prepare_model_input
from geoseg.tiling.confusion import remap_values
from geoseg.tiling.log_probabilities import labelled_log_probabilities
from geoseg.training.calibration import (
    CalibrationFit,
    calibrated_meta,
    check_label_classes,
    check_non_finite,
    fit_calibration,
    warn_unknown_ids,
)
from geoseg.types import NODATA_LABEL, ClassSchema, ModelMeta

__all__ = ["MAX_FIT_PIXELS", "CalibrateResult", "calibrate_model"]

log = logging.getLogger(__name__)

#: Labelled pixels a fit reads at most (a position-hashed share of them beyond that):
#: one scalar is pinned long before, and K float32 per pixel stay in memory.
MAX_FIT_PIXELS = 1_000_000


@dataclass(frozen=True)
class CalibrateResult:
    """The written checkpoint and the fit.

    Attributes:
        output: the new checkpoint.
        fit: the fit on the labelled pixels (ECE and NLL before and after).
        temperature: ``T`` stored in ``output`` (the input's times the fit's).
        previous: the input's ``T`` (1 unless it was calibrated before).
    """

    output: Path
    fit: CalibrationFit
    temperature: float
    previous: float


def _check_output(out: Path) -> None:
    """Refuse an output that is not a new ``.safetensors`` file in an existing folder."""
    if out.suffix.lower() != ".safetensors":
        raise GeosegError(
            f"{out}: a geoseg checkpoint is a .safetensors file; name the output "
            f"{out.with_suffix('.safetensors').name}"
        )
    if out.exists():
        raise OutputExistsError(
            f"{out}: exists; calibrate writes a new checkpoint and never replaces a file: "
            "choose another -o name"
        )
    check_output_path(out, False)


def _check_model(model: str) -> ModelMeta:
    """The checkpoint's metadata, refused unless it is a per-pixel class model."""
    family = model_family(model)
    if family.weights_free:
        raise GeosegError(
            f"{model}: the weights-free {family.name} model has no checkpoint to calibrate; "
            "pass a .safetensors model"
        )
    meta = load_checkpoint(model)[1]  # the weights' digest is checked before any work
    if task_kind(meta.task).objects or checkpoint_family(meta).inputs == "prompts":
        article = "an" if meta.task[:1] in "aeiou" else "a"
        raise CheckpointError(
            f"{model}: {article} {meta.task} checkpoint ({meta.arch}); temperature scaling "
            "calibrates per-pixel class probabilities: pass a semantic or change model"
        )
    return meta


def _no_temperature(model: str, meta: ModelMeta) -> CheckpointError:
    """The refusal of a class model whose predictor is neither torch's nor ONNX's, the
    two that divide per-pixel scores by the stored temperature before the softmax."""
    logits = ", ".join(f.name for f in families() if per_pixel(f))
    return CheckpointError(
        f"{model}: a {meta.task} {meta.arch} checkpoint of the {checkpoint_family(meta).name} "
        "family, whose predictor applies no temperature, so it cannot be calibrated; "
        f"calibrate takes models with per-pixel scores: the {logits} families, `train "
        "--folds` ensembles, imported transformers models (SegFormer, UperNet, Mask2Former "
        "semantic) and ONNX models"
    )


def calibrate_model(
    model: str,
    image: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: PredictOptions | None = None,
    max_pixels: int = MAX_FIT_PIXELS,
) -> CalibrateResult:
    """Fit ``model``'s temperature on ``labels`` over ``image`` and write ``output``.

    Args:
        model: a per-pixel class checkpoint (semantic or change).
        image: the scene the labels describe (bands as for ``predict``).
        labels: a label raster of the model's class ids (aligned onto the image's
            grid if needed); other values, and nodata, are not read. A change model
            of ids 0/1 reads a change mask as ``evaluate`` does (0, 1 or 255 = change).
        output: the new checkpoint (``.safetensors``; must not exist).
        options: band and tiling options, as for ``predict``.
        max_pixels: labelled pixels read at most.

    Raises:
        GeosegError: an existing or misnamed output, a model that is not a per-pixel
            class checkpoint, labels with too few pixels of the model's classes or
            that pin no temperature (the fit ran to a bound), or an image with no
            data under the labels (each message names the file at fault).
    """
    opts = options or PredictOptions()
    out = Path(output)
    _check_output(out)
    stored = _check_model(model)
    # locked like predict's outputs: a second run to the same -o is refused, and a
    # failure or Ctrl-C rolls back whatever this run published
    with output_run(False, [Path(model), Path(image), Path(labels)]) as run:
        run.lock(out)
        run.add([out])
        fit = _fit(model, os.fspath(image), os.fspath(labels), stored, opts, max_pixels)
        source = {"fitted_on": "geoseg calibrate", "image": os.fspath(image),
                  "labels": os.fspath(labels)}  # fmt: skip
        meta = calibrated_meta(stored, fit, **source)
        save_checkpoint(out, load_checkpoint(model)[0], meta, overwrite=False)
    return CalibrateResult(out, fit, meta.temperature, stored.temperature)


def _fit(
    model: str, image: str, labels: str, stored: ModelMeta, opts: PredictOptions,
    max_pixels: int,
) -> CalibrationFit:  # fmt: skip
    """The temperature fit on the labelled pixels of ``image`` (see :func:`calibrate_model`)."""
    scene, spec, schema, tile = prepare_model_input(image, model, opts)
    if not isinstance(load_predictor(spec), TorchPredictor | OnnxPredictor):
        raise _no_temperature(model, stored)
    index = _label_index(labels, scene, stored, opts.assume_crs)
    pixels = labelled_log_probabilities(
        scene.data.data, scene.valid, index, functools.partial(load_predictor, spec), tile,
        len(schema), max_pixels, opts.scheduler, opts.workers,
    )  # fmt: skip
    check_non_finite(pixels, model)
    if len(pixels.target) == 0:
        raise _nothing_to_fit(model, image, labels, scene, index, schema)
    check_label_classes(pixels.scores, pixels.target, stored.schema.ids, labels)
    try:
        return fit_calibration(pixels.scores, pixels.target)
    except GeosegError as exc:  # too few pixels, or pixels that pin no T: the labels' doing
        raise GeosegError(f"{labels}: {exc}") from exc


def _binary_change(meta: ModelMeta) -> bool:
    """A change model of no change (0) and change (1): its labels are change masks."""
    return meta.task == "change" and sorted(meta.schema.ids) == [0, 1]


def _label_index(labels: str, scene: Scene, meta: ModelMeta, assume_crs: str | None) -> da.Array:
    """``(H, W) int32`` class index ``0..K-1`` of ``labels`` on the scene grid, 255 where
    unlabelled. A binary change model's labels are read as ``evaluate`` reads change
    masks (0 = no change, 1 or 255 = change): a 0/255 mask's change pixels count. Labels
    that name their classes under other ids than the model's are read by name
    (:func:`~geoseg.io.label_classes.label_ids_by_name`)."""
    index_of = {c: k for k, c in enumerate(meta.schema.ids)}
    if _binary_change(meta):
        ref = reference_on_grid(labels, scene, "change", assume_crs)
        lut = {v: index_of[c] for v, c in CHANGE_MASK_MAP.items()}
    else:
        ref, lut = reference_on_grid(labels, scene, assume_crs=assume_crs), index_of
        named = label_ids_by_name(labels, meta.schema, "the model")
        if named is not None:
            log.warning("%s", mapping_note(labels, named, meta.schema, "the model"))
            lut = {v: index_of[c] for v, c in named.items()}
    index = da.map_blocks(remap_values, ref, lut, dtype="int32")
    # 255 is "unlabelled" by convention, unless it is a change mask's change value
    unlabelled = (ref == LABEL_NODATA) | ((ref == NODATA_LABEL) & (NODATA_LABEL not in lut))
    warn_unknown_ids(labels, ref, ~unlabelled & (index == NODATA_LABEL), ~unlabelled,
                     meta.schema.ids)  # fmt: skip
    return index


def _nothing_to_fit(
    model: str, image: str, labels: str, scene: Scene, index: da.Array, schema: ClassSchema
) -> GeosegError:
    """The error of a fit without a pixel, naming the file at fault: labels without a
    class pixel, an image without data under them, or a model without a finite score."""
    labelled = (index >= 0) & (index < len(schema))
    counts = da.compute(labelled.sum(), (labelled & scene.valid).sum(), scheduler="sync")
    if int(counts[0]) == 0:
        return GeosegError(
            f"{labels}: no pixel holds one of the model's class ids "
            f"({', '.join(map(str, schema.ids))}); give labels in the model's classes"
        )
    if int(counts[1]) == 0:
        return GeosegError(
            f"{image}: nodata under all {int(counts[0]):,} labelled px of {labels}; give the "
            "scene the labels were drawn on"
        )
    return CheckpointError(
        f"{model}: gave no finite probability at the {int(counts[1]):,} labelled px with "
        "data (NaN or inf: damaged weights, or scores past float16 on a GPU); check the model "
        "with `geoseg predict` on the image"
    )
