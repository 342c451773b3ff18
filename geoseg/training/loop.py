"""The training loop: sample, augment, fit, validate (mIoU, AP50 or PQ), checkpoint.

What each task reads, minimises and scores is set up in :mod:`geoseg.training.tasks`
(data in :mod:`geoseg.training.data`, losses and validation in
:mod:`geoseg.training.objectives`); this module runs the epochs, keeps the best
checkpoint and the resumable state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from geoseg.errors import GeosegError, OutputExistsError
from geoseg.io.checkpoint import save_checkpoint
from geoseg.io.state_dicts import read_state_dict
from geoseg.models.encoder_weights import load_encoder_weights
from geoseg.models.registry import window_multiple
from geoseg.models.runtime import TorchPredictor, resolve_device
from geoseg.training.config import TrainConfig
from geoseg.training.data import check_something_to_learn
from geoseg.training.date_shift import DateShift, dates_to_shift, shift_date2, swap_dates
from geoseg.training.instances import InstanceRaster
from geoseg.training.objectives import Objective
from geoseg.training.sampling import WindowSampler, augment
from geoseg.training.state import restore_state, save_state, state_path, unfinished_run
from geoseg.training.tasks import task_setup
from geoseg.training.timing import StepTimes
from geoseg.types import ModelMeta

__all__ = ["EpochReport", "TrainResult", "fit_model", "prepare_output", "train_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochReport:
    """One epoch.

    Attributes:
        epoch, epochs: this epoch (1-based) and the total.
        loss: mean training loss.
        val_miou: validation score (None without validation rasters): mIoU, AP50
            for an instance model or PQ for a panoptic one (see :attr:`TrainResult.metric`).
        windows: training windows seen.
        data_s: seconds spent sampling and augmenting windows.
        step_s: seconds spent in forward, backward and optimizer steps.
    """

    epoch: int
    epochs: int
    loss: float
    val_miou: float | None
    windows: int = 0
    data_s: float = 0.0
    step_s: float = 0.0


@dataclass(frozen=True)
class TrainResult:
    """The written checkpoint, its best validation score and the per-epoch history.

    ``metric`` names the score: ``"val_miou"``, ``"val_ap50"`` for instance models or
    ``"val_pq"`` for panoptic ones. ``calibration``: the temperature fitted on the
    validation rasters (:class:`~geoseg.training.calibration.CalibrationFit`), None
    when none was (no validation rasters, not a per-pixel class model, too few pixels).
    """

    output: Path
    best_miou: float | None
    history: list[EpochReport] = field(default_factory=list)
    metric: str = "val_miou"
    calibration: Any = None


def prepare_output(cfg: TrainConfig) -> Path:
    """The checked ``cfg.output`` (folder exists, not there unless overwritten, window fits)."""
    out = Path(cfg.output)
    if not out.parent.is_dir():
        raise GeosegError(
            f"{out}: the folder {out.parent} does not exist; create it first "
            f"(mkdir -p {out.parent})"
        )
    if out.exists() and not (cfg.overwrite or cfg.resume):
        raise OutputExistsError(unfinished_run(out) or f"{out}: exists; pass --overwrite to "
                                "replace it")  # fmt: skip
    if cfg.window % window_multiple(cfg.arch, cfg.options):
        raise GeosegError(
            f"--window {cfg.window} must be a multiple of "
            f"{window_multiple(cfg.arch, cfg.options)} for {cfg.arch}"
        )
    return out


def train_model(
    cfg: TrainConfig,
    progress: Callable[[EpochReport], None] | None = None,
    timing: StepTimes | None = None,
) -> TrainResult:
    """Train a semantic, change, instance or panoptic model and write its best checkpoint.

    ``task="instance"`` trains the bottom-up model on an smp ``arch``, or Mask R-CNN
    with ``arch="maskrcnn"`` (``encoder``: its ResNet backbone); ``task="panoptic"``
    a Panoptic-DeepLab on the smp ``arch`` (stored as ``options["body"]``).
    ``timing`` (off by default) collects where each step's time goes
    (:class:`~geoseg.training.timing.StepTimes`, for the benchmarks).

    Raises:
        GeosegError: bad rasters, class file, options or output.
    """
    out = prepare_output(cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    train, targets, meta, objective = task_setup(cfg)(cfg, device)
    check_something_to_learn(train, cfg.labels, cfg.classes)  # before any output is written
    ids = [r.ids for r in train if isinstance(r, InstanceRaster)] or None
    sampler = WindowSampler(
        [r.image for r in train], [r.valid for r in train], targets, cfg.window, rng,
        cfg.min_labelled, ids,
    )  # fmt: skip
    result = fit_model(cfg, meta, objective, sampler, device, rng, out, progress, timing)[1]
    if objective.calibrate is None:
        return result
    # after the epochs: the best checkpoint's probabilities, fitted on validation pixels
    return dataclasses.replace(result, calibration=objective.calibrate(out))


def fit_model(
    cfg: TrainConfig, meta: ModelMeta, objective: Objective, sampler: WindowSampler,
    device: torch.device, rng: np.random.Generator, out: Path,
    progress: Callable[[EpochReport], None] | None = None, timing: StepTimes | None = None,
) -> tuple[nn.Module, TrainResult]:  # fmt: skip
    """Build ``objective``'s model, fit it on ``sampler``'s windows and write ``out``.

    Returns the trained module (its last epoch's weights) and the run's result;
    ``train_model`` and each fold of :func:`geoseg.training.crossval.train_folds`
    run through here.
    """
    model = objective.build()
    meta = _start_encoder(cfg, model, meta)
    model.to(device).train()
    per_date = dates_to_shift(cfg.task, cfg.date_augment or cfg.swap_dates, meta.bands)
    added: dict[str, Any] = {"swap_dates": True} if cfg.swap_dates else {}
    if cfg.date_augment:
        added["date_augment"] = dataclasses.asdict(DateShift())
    meta = dataclasses.replace(meta, provenance={**meta.provenance, **added})
    with timing.watch(model) if timing else contextlib.nullcontext():
        result = _fit(
            cfg, meta, model, sampler, objective, device, rng, out, progress, per_date, timing
        )
    return model, result


def _start_encoder(cfg: TrainConfig, model: nn.Module, meta: ModelMeta) -> ModelMeta:
    """Load ``cfg.encoder_weights`` into the model's encoder; the metadata records the file."""
    if not cfg.encoder_weights:
        return meta
    # a Siamese model's shared encoder reads one date: its bands are one date's names
    bands = getattr(model, "encoder_bands", meta.bands)
    source = load_encoder_weights(
        model, read_state_dict(cfg.encoder_weights), cfg.encoder, bands, cfg.encoder_bands
    )
    log.info("encoder started from %s (%s)", cfg.encoder_weights, source["first_conv"])
    provenance = {**meta.provenance, "encoder_weights": source}
    return dataclasses.replace(meta, provenance=provenance)


def _fit(
    cfg: TrainConfig, meta: ModelMeta, model: nn.Module, sampler: WindowSampler,
    objective: Objective, device: torch.device, rng: np.random.Generator, out: Path,
    progress: Callable[[EpochReport], None] | None, per_date: int | None = None,
    timing: StepTimes | None = None,
) -> TrainResult:  # fmt: skip
    """The epochs; ``per_date``: bands per date, to swap the dates of each window
    (``cfg.swap_dates``, :func:`swap_dates`) and shift date 2 (:func:`shift_date2`)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    averaged = moving_average(model, cfg.ema)
    start, best, history = _resume(cfg, out, model, opt, rng, sched, averaged)
    kept = model if averaged is None else averaged.module  # what is scored and saved
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    norm = TorchPredictor(nn.Identity(), meta, torch.device("cpu"))
    for epoch in range(start, cfg.epochs):
        losses, data_s, step_s = [], 0.0, 0.0
        for _ in range(cfg.steps_per_epoch):
            t0 = time.perf_counter()
            batch = augment(sampler.sample(cfg.batch_size), rng)
            if per_date is not None and cfg.swap_dates:
                batch = swap_dates(batch, rng, per_date)
            if per_date is not None and cfg.date_augment:
                batch = shift_date2(batch, rng, per_date)
            x = torch.from_numpy(norm.normalize(batch.image, batch.valid)).to(device)
            t1 = time.perf_counter()
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                loss = objective.loss(model, x, batch)
            t2 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if averaged is not None:
                averaged.update_parameters(model)
            losses.append(float(loss.detach()))  # waits for the device: the step is done
            t3 = time.perf_counter()
            data_s, step_s = data_s + t1 - t0, step_s + t3 - t1
            if timing is not None:
                timing.record(t0, t1, t2, t3)
        miou = objective.score(kept) if objective.score else None
        report = EpochReport(
            epoch + 1, cfg.epochs, float(np.mean(losses)), miou,
            cfg.steps_per_epoch * cfg.batch_size, data_s, step_s,
        )  # fmt: skip
        history.append(report)
        if miou is None or best is None or miou >= best:  # ties: the later, longer-trained
            best = miou if miou is not None else best
            _save_best(out, kept, meta, report, best, objective.metric)
        save_state(state_path(out), model, opt, rng, epoch + 1, _extra(cfg, best, history),
                   averaged)  # fmt: skip
        if progress:
            progress(report)
    state_path(out).unlink(missing_ok=True)
    return TrainResult(out, best, history, objective.metric)


def _extra(cfg: TrainConfig, best: float | None, history: Sequence[EpochReport]) -> dict[str, Any]:
    return {"best": best, "history": [list(dataclasses.astuple(h)) for h in history],
            "settings": resume_settings(cfg)}  # fmt: skip


#: Options a resumed run may change: where it runs and what it is told to do now.
_FREE_ON_RESUME = frozenset({"resume", "overwrite", "device", "output", "provenance"})


def resume_settings(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg``'s options that shape the weights (all but :data:`_FREE_ON_RESUME`), as JSON
    values: an unfinished run records them and ``--resume`` must give the same."""
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _FREE_ON_RESUME}
    for key in ("images", "labels", "val_images", "val_labels"):  # the files, not the spelling
        values[key] = [os.path.abspath(p) for p in values[key]]
    return dict(json.loads(json.dumps(values, default=str)))


def check_resume_settings(path: Path, saved: dict[str, Any] | None, cfg: TrainConfig) -> None:
    """Refuse a ``--resume`` whose options differ from the unfinished run's.

    The state keeps the optimizer's learning rate, the schedule's length and the
    sampler's window, so a changed option would be ignored or mixed in while the
    checkpoint recorded the new value. States written before the settings were
    recorded (``saved`` None) are not checked.

    Raises:
        GeosegError: names the state file and every option that differs.
    """
    if saved is None:
        return
    now = resume_settings(cfg)
    changed = [
        f"{k} {saved.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)
    ]  # fmt: skip
    if changed:
        raise GeosegError(
            f"{path}: the unfinished run used other options ({'; '.join(changed)}); resume "
            "it with the options it was started with, or start over without --resume "
            "(--overwrite)"
        )


def moving_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """The exponential moving average of ``model``'s weights and buffers (BatchNorm
    statistics) with ``decay`` per step (``TrainConfig.ema``); None when 0 (off)."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _resume(
    cfg: TrainConfig, out: Path, model: nn.Module, opt: torch.optim.Optimizer,
    rng: np.random.Generator, sched: torch.optim.lr_scheduler.LRScheduler,
    averaged: AveragedModel | None = None,
) -> tuple[int, float | None, list[EpochReport]]:  # fmt: skip
    """Epoch to start from, best mIoU so far and history; restores state on --resume."""
    path = state_path(out)
    if not cfg.resume:
        return 0, None, []
    if not path.exists():
        raise GeosegError(f"{path}: no unfinished run to resume; start without --resume")
    # the options first: a state of another architecture would fail on its weights
    state = restore_state(
        path, model, opt, rng, averaged,
        lambda saved: check_resume_settings(path, saved.get("settings"), cfg),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping the schedule ahead without training
        for _ in range(state["epoch"] * cfg.steps_per_epoch):
            sched.step()
    log.info("resuming %s after epoch %d", out, state["epoch"])
    history = [EpochReport(*h) for h in state["history"]]
    return int(state["epoch"]), state["best"], history


def _save_best(
    out: Path, model: nn.Module, meta: ModelMeta, report: EpochReport, best: float | None,
    metric: str,
) -> None:  # fmt: skip
    metrics: dict[str, Any] = {"train_loss": report.loss, "epoch": report.epoch}
    if best is not None:
        metrics[metric] = best
    stamped = dataclasses.replace(meta, metrics=metrics)
    save_checkpoint(out, model.state_dict(), stamped, overwrite=True)
