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
import os
from dataclasses import dataclass
from pathlib import Path

import dask.array as da

from geoseg.errors import CheckpointError, GeosegError, OutputExistsError
from geoseg.io.checkpoint import load_checkpoint, save_checkpoint
from geoseg.io.outputs import check_output_path
from geoseg.models.cache import load_predictor
from geoseg.models.onnx_runtime import OnnxPredictor
from geoseg.models.registry import checkpoint_family, model_family, task_kind
from geoseg.models.runtime import TorchPredictor
from geoseg.pipelines.evaluate import reference_on_grid
from geoseg.pipelines.model_input import PredictOptions, prepare_model_input
from geoseg.tiling.confusion import remap_values
from geoseg.tiling.log_probabilities import labelled_log_probabilities
from geoseg.training.calibration import CalibrationFit, calibrated_meta, fit_calibration
from geoseg.types import ModelMeta

__all__ = ["MAX_FIT_PIXELS", "CalibrateResult", "calibrate_model"]

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
        raise CheckpointError(
            f"{model}: a {meta.task} checkpoint ({meta.arch}); temperature scaling calibrates "
            "per-pixel class probabilities: pass a semantic or change model"
        )
    return meta


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
            grid if needed); other values, and nodata, are not read.
        output: the new checkpoint (``.safetensors``; must not exist).
        options: band and tiling options, as for ``predict``.
        max_pixels: labelled pixels read at most.

    Raises:
        GeosegError: an existing or misnamed output, a model that is not a per-pixel
            class checkpoint, or labels with too few pixels of the model's classes.
    """
    opts = options or PredictOptions()
    out = Path(output)
    _check_output(out)
    stored = _check_model(model)
    scene, spec, schema, tile = prepare_model_input(os.fspath(image), model, opts)
    if not isinstance(load_predictor(spec), TorchPredictor | OnnxPredictor):
        raise CheckpointError(f"{model}: its predictor does not apply a temperature")
    ref = reference_on_grid(os.fspath(labels), scene)
    lut = {c: k for k, c in enumerate(schema.ids)}
    index = da.map_blocks(remap_values, ref, lut, dtype="int32")
    scores, target = labelled_log_probabilities(
        scene.data.data, scene.valid, index, functools.partial(load_predictor, spec), tile,
        len(schema), max_pixels, opts.scheduler, opts.workers,
    )  # fmt: skip
    if len(target) == 0:
        raise GeosegError(
            f"{labels}: no valid pixel holds one of the model's class ids "
            f"({', '.join(map(str, schema.ids))}); give labels in the model's classes"
        )
    fit = fit_calibration(scores, target)
    source = {"fitted_on": "geoseg calibrate", "image": os.fspath(image),
              "labels": os.fspath(labels)}  # fmt: skip
    tensors = load_checkpoint(model)[0]
    meta = calibrated_meta(stored, fit, **source)
    save_checkpoint(out, tensors, meta, overwrite=False)
    return CalibrateResult(out, fit, meta.temperature, stored.temperature)
