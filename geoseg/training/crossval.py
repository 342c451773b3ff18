"""``geoseg train --folds K``: nnU-Net's cross-validation, written as one ensemble.

The training rasters are split into K spatially separate folds
(:mod:`geoseg.training.folds`). Member ``i`` trains for the whole schedule on the
other folds' blocks (less the buffer along each cut) and is scored once, with its
last epoch's weights, on fold ``i``'s held-out blocks; its held-out blocks never
choose an epoch, so its score is not biased upwards. The task's score (mIoU for
semantic and change models) of each fold, their mean and sample standard deviation
go into a JSON file beside the checkpoint (``NAME.folds.json``) and into the
checkpoint's metrics; the checkpoint is an ensemble (:mod:`geoseg.models.ensemble`)
whose prediction is the argmax of the members' mean probabilities.

All members share one band normalization, computed over all training rasters
before the split (as nnU-Net fingerprints the whole training set): the ensemble
feeds one normalized batch to every member.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.errors import ConfigError
from geoseg.io.atomic import atomic_output
from geoseg.io.checkpoint import save_checkpoint
from geoseg.io.outputs import check_output_path
from geoseg.io.training_data import LabelledRaster
from geoseg.models.ensemble import ensemble_meta, ensemble_state, per_pixel
from geoseg.models.registry import task_kind, training_family
from geoseg.models.runtime import resolve_device
from geoseg.tiling.confusion import remap_values
from geoseg.training.config import TrainConfig
from geoseg.training.data import check_something_to_learn
from geoseg.training.folds import Fold, crop, crop_raster, fold_blocks
from geoseg.training.loop import EpochReport, fit_model, prepare_output
from geoseg.training.objectives import Objective, validate_miou
from geoseg.training.sampling import WindowSampler
from geoseg.training.tasks import task_setup
from geoseg.types import ModelMeta

__all__ = ["CrossValResult", "FoldScore", "scores_path", "train_folds"]


@dataclass(frozen=True)
class FoldScore:
    """One member: its fold (1-based), held-out score (None: nothing labelled there),
    the blocks it was scored on (JSON, see :meth:`Block.to_json`) and pixel counts."""

    fold: int
    score: float | None
    held: list[dict[str, object]]
    held_px: int
    train_px: int


@dataclass(frozen=True)
class CrossValResult:
    """The ensemble checkpoint, the scores file and the per-fold scores (``metric``);
    ``calibration``: the ensemble's temperature fitted on the validation rasters
    (:class:`~geoseg.training.calibration.CalibrationFit`), None without them."""

    output: Path
    scores: Path
    metric: str
    folds: list[FoldScore]
    mean: float | None
    sd: float | None
    calibration: Any = None


def scores_path(output: str | Path) -> Path:
    """The per-fold scores file of a ``--folds`` checkpoint: ``NAME.folds.json`` beside it."""
    out = Path(output)
    return out.with_name(f"{out.stem}.folds.json")


def train_folds(
    cfg: TrainConfig,
    progress: Callable[[EpochReport], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> CrossValResult:
    """Train ``cfg.folds`` members, score each on its held-out blocks, write the ensemble.

    Args:
        cfg: the run (``cfg.folds`` set; see :class:`TrainConfig`).
        progress: called after each member's epochs.
        echo: called with a line as each fold starts and is scored.

    Validation rasters (``cfg.val_images``), if given, neither choose an epoch nor
    score a fold: they fit the ensemble's softmax temperature (of its mean
    probabilities), stored in the checkpoint as ``geoseg train`` stores a model's.

    Raises:
        ConfigError: a task or architecture an ensemble cannot average, or more folds
            than the rasters can be cut into.
    """
    if cfg.folds is None:
        raise ConfigError("train_folds needs cfg.folds (the number of folds)")
    family = training_family(cfg.task, cfg.arch)
    if not per_pixel(family):
        raise ConfigError(
            f"--folds averages per-pixel class probabilities; the {family.name} family "
            f"(--arch {cfg.arch}) is not a per-pixel class model: pick an smp, fcn, early "
            "or Siamese --arch, or leave --folds out"
        )
    out = prepare_output(cfg)
    check_output_path(scores_path(out), cfg.overwrite)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rasters, targets, meta, objective = task_setup(cfg)(cfg, device)
    check_something_to_learn(rasters, cfg.labels, cfg.classes)
    names = [r.path for r in rasters]
    folds = fold_blocks([r.valid.shape for r in rasters], cfg.folds, cfg.window, cfg.margin,
                        names)  # fmt: skip
    say = echo or (lambda line: None)
    states, scores = [], []
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        for i, fold in enumerate(folds):
            held_px, train_px = (sum(b.pixels for b in bs) for bs in (fold.held, fold.train))
            say(f"fold {i + 1}/{len(folds)}: training on {train_px:,} px, "
                f"holding out {held_px:,} px")  # fmt: skip
            state, score = _train_fold(
                cfg, i, fold, rasters, targets, meta, objective, device, Path(tmp), progress
            )
            states.append(state)
            scores.append(FoldScore(i + 1, score, [b.to_json(names) for b in fold.held],
                                    held_px, train_px))  # fmt: skip
            say(f"fold {i + 1}/{len(folds)}: held-out {_metric(cfg)} {_text(score)}")
    result = _write(cfg, out, meta, states, scores)
    if objective.calibrate is None:
        return result
    # the validation rasters choose no epoch and score no fold: they fit the ensemble's T
    return dataclasses.replace(result, calibration=objective.calibrate(out))


def _metric(cfg: TrainConfig) -> str:
    return task_kind(cfg.task).metric


def _text(score: float | None) -> str:
    return "n/a (no labelled pixel held out)" if score is None else f"{score:.4f}"


def _train_fold(
    cfg: TrainConfig, i: int, fold: Fold, rasters: Sequence[LabelledRaster],
    targets: Sequence[np.ndarray], meta: ModelMeta, objective: Objective,
    device: torch.device, tmp: Path, progress: Callable[[EpochReport], None] | None,
) -> tuple[dict[str, torch.Tensor], float | None]:  # fmt: skip
    """Member ``i``: fit on ``fold.train``, score on ``fold.held``; its weights (CPU), score."""
    torch.manual_seed(cfg.seed + i)  # members start from different weights
    rng = np.random.default_rng(cfg.seed + i)
    parts = [(rasters[b.raster], targets[b.raster], b) for b in fold.train]
    sampler = WindowSampler(
        [crop(r.image, b) for r, _, b in parts], [crop(r.valid, b) for r, _, b in parts],
        [crop(t, b) for _, t, b in parts], cfg.window, rng, cfg.min_labelled,
    )  # fmt: skip
    member = dataclasses.replace(objective, score=None)  # held-out blocks choose no epoch
    model, _ = fit_model(cfg, meta, member, sampler, device, rng, tmp / f"fold{i + 1}.safetensors",
                         progress)  # fmt: skip
    held = []
    for b in fold.held:
        r = crop_raster(rasters[b.raster], b)
        labels = remap_values(r.labels, {c: c for c in meta.schema.ids})
        held.append(dataclasses.replace(r, labels=labels.astype(np.int64)))
    score = validate_miou(model, meta, device, held)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return state, (score if math.isfinite(score) else None)


def _write(
    cfg: TrainConfig, out: Path, meta: ModelMeta, states: Sequence[Mapping[str, torch.Tensor]],
    scores: list[FoldScore],
) -> CrossValResult:  # fmt: skip
    """The scores JSON, then the ensemble checkpoint (both atomic; rolled back together
    inside an :func:`~geoseg.io.outputs.output_run`)."""
    found = [s.score for s in scores if s.score is not None]
    mean = float(np.mean(found)) if found else None
    sd = float(np.std(found, ddof=1)) if len(found) > 1 else None
    metric = _metric(cfg)
    doc: dict[str, Any] = {
        "metric": metric, "mean": mean, "sd": sd, "folds": [dataclasses.asdict(s) for s in scores],
        "rule": "see README 'Cross-validation and ensembles (--folds)'; sd has n - 1",
        "buffer_px": cfg.margin, "window": cfg.window, "checkpoint": out.name,
    }  # fmt: skip
    path = scores_path(out)
    with atomic_output(path, cfg.overwrite) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    metrics = {f"cv_{metric}": mean, f"cv_{metric}_sd": sd, "folds": len(scores),
               f"fold_{metric}": [s.score for s in scores], "epoch": cfg.epochs}  # fmt: skip
    whole = ensemble_meta(meta, len(states), metrics)
    save_checkpoint(out, ensemble_state(states), whole, overwrite=cfg.overwrite)
    return CrossValResult(out, path, metric, scores, mean, sd)
