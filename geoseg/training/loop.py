"""The training loop: sample, augment, fit, validate (mIoU, AP50 or PQ), checkpoint."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg import __version__
from geoseg.errors import BandMismatchError, GeosegError, OutputExistsError
from geoseg.evaluation.metrics import metrics_from_confusion
from geoseg.io.checkpoint import save_checkpoint
from geoseg.io.training_data import LabelledRaster, read_labelled_raster
from geoseg.models.bands import reflectance_scale
from geoseg.models.instance import BottomUpInstancePredictor
from geoseg.models.maskrcnn import MASKRCNN_ARCH, MaskRCNNPredictor, build_maskrcnn, thing_ids
from geoseg.models.panoptic import PANOPTIC_ARCH, PanopticPredictor, build_panoptic_model
from geoseg.models.registry import build_model, window_multiple
from geoseg.models.semantic import TorchPredictor, resolve_device
from geoseg.tiling.confusion import remap_values, tiled_confusion
from geoseg.training.config import TrainConfig
from geoseg.training.instances import (
    InstanceRaster,
    boundary_pos_weight,
    boundary_target,
    encode_targets,
    instance_loss,
    instance_scorer,
    read_instance_raster,
)
from geoseg.training.panoptic import maskrcnn_step_loss, panoptic_step_loss
from geoseg.training.sampling import Batch, WindowSampler, augment
from geoseg.training.state import restore_state, save_state, state_path
from geoseg.types import NODATA_LABEL, ClassSchema, ModelMeta, Normalization, TileSpec

__all__ = ["EpochReport", "TrainResult", "train_model"]

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
    ``"val_pq"`` for panoptic ones.
    """

    output: Path
    best_miou: float | None
    history: list[EpochReport] = field(default_factory=list)
    metric: str = "val_miou"


@dataclass(frozen=True)
class _Objective:
    """What a run minimises and how it scores the validation rasters.

    Attributes:
        loss: the model (train mode), the ``(B, C, W, W) float32`` normalized windows
            on its device and their :class:`Batch` (targets, ids) -> scalar loss.
        score: the model -> validation score (higher is better); None = no validation.
        metric: checkpoint metrics key of the score.
        build: the untrained model (called after seeding torch).
    """

    loss: Callable[[nn.Module, torch.Tensor, Batch], torch.Tensor]
    score: Callable[[nn.Module], float] | None
    metric: str
    build: Callable[[], nn.Module]


def _pixel_loss(
    model: nn.Module, x: torch.Tensor, batch: Batch,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:  # fmt: skip
    """``loss(model(x), target)`` for models with one ``(B, K', W, W)`` output."""
    return loss(model(x), torch.from_numpy(batch.target).to(x.device))


def _targets(r: LabelledRaster, schema: ClassSchema) -> np.ndarray:
    """Label values -> class index 0..K-1, 255 where unlabelled or not in the schema."""
    index = remap_values(r.labels, {cid: k for k, cid in enumerate(schema.ids)})
    return np.where(r.valid, index, NODATA_LABEL).astype(np.uint8)


def _normalization(rasters: Sequence[LabelledRaster], scale: float) -> Normalization:
    """Per-band mean and std of the scaled valid pixels of all training rasters."""
    c = rasters[0].image.shape[0]
    total, sq, n = np.zeros(c), np.zeros(c), 0
    for r in rasters:
        x = r.image[:, r.valid].astype(np.float64) * scale
        total += x.sum(axis=1)
        sq += (x**2).sum(axis=1)
        n += x.shape[1]
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean**2, 0.0))
    return Normalization(
        tuple(float(v) for v in mean), tuple(float(max(v, 1e-6)) for v in std), scale
    )


def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft multi-class Dice loss over labelled pixels (255 ignored)."""
    k = logits.shape[1]
    keep = (target != NODATA_LABEL).unsqueeze(1)
    prob = torch.softmax(logits.float(), dim=1) * keep
    onehot = F.one_hot(target.clamp(max=k - 1), k).permute(0, 3, 1, 2) * keep
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1.0 - dice[present].mean() if present.any() else logits.sum() * 0.0


def _semantic_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Cross-entropy + ``dice_weight`` x Dice, 255 ignored."""
    loss = F.cross_entropy(logits.float(), target, ignore_index=NODATA_LABEL)
    return loss + dice_weight * _dice_loss(logits, target)


class _InMemoryLoader:
    """Hands the training model to the tiled-inference kernel (no file, no pickling)."""

    def __init__(self, predictor: TorchPredictor) -> None:
        self.predictor = predictor
        self.token = uuid.uuid4().hex

    def __call__(self) -> TorchPredictor:
        return self.predictor

    def __dask_tokenize__(self) -> str:
        return self.token


def _validate(
    module: nn.Module, meta: ModelMeta, device: torch.device, val: Sequence[LabelledRaster]
) -> float:
    """mIoU over all validation rasters, scored through the tiled-inference path."""
    predictor = TorchPredictor(module, meta, device)
    tile = TileSpec(window=meta.window, margin=meta.margin, chunk_windows=4, batch_size=8)
    conf = np.zeros((len(meta.schema),) * 2, np.int64)
    for r in val:
        chunks = (r.image.shape[0], tile.chunk, tile.chunk)
        conf += tiled_confusion(
            da.from_array(r.image, chunks=chunks), da.from_array(r.valid, chunks=chunks[1:]),
            da.from_array(r.labels, chunks=chunks[1:]), _InMemoryLoader(predictor), tile,
            meta.schema.ids, meta.schema.ids, scheduler="sync",
        )  # fmt: skip
    module.train()
    return metrics_from_confusion(conf, meta.schema.names).miou


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for part in iter(lambda: f.read(1 << 20), b""):
            h.update(part)
    return h.hexdigest()[:16]


def _meta(cfg: TrainConfig, rasters: Sequence[LabelledRaster], norm: Normalization) -> ModelMeta:
    provenance = {
        "train": [{"image": r.path, "sha256": _sha256(r.path)} for r in rasters],
        "labels": list(cfg.labels),
        "val": list(cfg.val_images),
        "epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed,
        "geoseg": __version__, "torch": torch.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **dict(cfg.provenance),
    }  # fmt: skip
    return ModelMeta(
        task=cfg.task, arch=cfg.arch, encoder=cfg.encoder, bands=rasters[0].band_names,
        normalization=norm, schema=cfg.classes, window=cfg.window, margin=cfg.margin,
        gsd_m=rasters[0].gsd_m, provenance=provenance, options=dict(cfg.options),
    )  # fmt: skip


def _load_rasters(
    images: Sequence[str],
    labels: Sequence[str],
    cfg: TrainConfig,
    read: Callable[[str, str, Sequence[str] | None], LabelledRaster] = read_labelled_raster,
) -> list[LabelledRaster]:
    rasters = [read(i, lab, cfg.bands) for i, lab in zip(images, labels, strict=True)]
    for r in rasters[1:]:
        if r.image.shape[0] != rasters[0].image.shape[0]:
            raise BandMismatchError(
                f"{r.path}: {r.image.shape[0]} bands, {rasters[0].path} has "
                f"{rasters[0].image.shape[0]}; select the same bands with --bands"
            )
    return rasters


def _prepare_output(cfg: TrainConfig) -> Path:
    out = Path(cfg.output)
    if not out.parent.is_dir():
        raise GeosegError(f"{out}: the folder {out.parent} does not exist; create it first")
    if out.exists() and not (cfg.overwrite or cfg.resume):
        raise OutputExistsError(f"{out}: exists; pass --overwrite to replace it")
    if cfg.window % window_multiple(cfg.arch, cfg.options):
        raise GeosegError(
            f"--window {cfg.window} must be a multiple of "
            f"{window_multiple(cfg.arch, cfg.options)} for {cfg.arch}"
        )
    return out


def train_model(
    cfg: TrainConfig, progress: Callable[[EpochReport], None] | None = None
) -> TrainResult:
    """Train a semantic, change, instance or panoptic model and write its best checkpoint.

    ``task="instance"`` trains the bottom-up model on an smp ``arch``, or Mask R-CNN
    with ``arch="maskrcnn"`` (``encoder``: its ResNet backbone); ``task="panoptic"``
    a Panoptic-DeepLab on the smp ``arch`` (stored as ``options["body"]``).

    Raises:
        GeosegError: bad rasters, class file, options or output.
    """
    out = _prepare_output(cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    train, targets, meta, objective = _setup(cfg)(cfg, device)
    ids = [r.ids for r in train if isinstance(r, InstanceRaster)] or None
    sampler = WindowSampler(
        [r.image for r in train], [r.valid for r in train], targets, cfg.window, rng,
        cfg.min_labelled, ids,
    )  # fmt: skip
    model = objective.build()
    model.to(device).train()
    return _fit(cfg, meta, model, sampler, objective, device, rng, out, progress)


_Setup = tuple[list[LabelledRaster], list[np.ndarray], ModelMeta, _Objective]


def _setup(cfg: TrainConfig) -> Callable[[TrainConfig, torch.device], _Setup]:
    """The setup of ``cfg.task`` (and, for instances, bottom-up or Mask R-CNN)."""
    if cfg.task == "panoptic":
        return _panoptic_setup
    if cfg.task == "instance":
        return _maskrcnn_setup if cfg.arch == MASKRCNN_ARCH else _instance_setup
    return _semantic_setup


def _semantic_setup(cfg: TrainConfig, device: torch.device) -> _Setup:
    """Rasters, class-index targets, metadata and CE + Dice / mIoU objective."""
    train = _load_rasters(cfg.images, cfg.labels, cfg)
    val = _load_rasters(cfg.val_images, cfg.val_labels, cfg) if cfg.val_images else []
    meta = _meta(cfg, train, _normalization(train, reflectance_scale(train[0].dtype)))
    for r in val:
        r.labels[:] = remap_values(r.labels, {c: c for c in meta.schema.ids})
    score = partial(_validate, meta=meta, device=device, val=val) if val else None
    loss = partial(_pixel_loss, loss=partial(_semantic_loss, dice_weight=cfg.dice_weight))
    targets = [_targets(r, cfg.classes) for r in train]
    build = partial(build_model, cfg.arch, cfg.encoder, len(meta.bands), len(cfg.classes),
                    **cfg.options)  # fmt: skip
    return train, targets, meta, _Objective(loss, score, "val_miou", build)


def _read_instances(
    cfg: TrainConfig, **meta_changes: Any
) -> tuple[list[LabelledRaster], list[LabelledRaster], ModelMeta]:
    """Training and validation :class:`InstanceRaster` objects and the checkpoint metadata."""
    read = partial(read_instance_raster, schema=cfg.classes, class_field=cfg.class_field)
    train = _load_rasters(cfg.images, cfg.labels, cfg, read)
    val = _load_rasters(cfg.val_images, cfg.val_labels, cfg, read) if cfg.val_images else []
    meta = _meta(cfg, train, _normalization(train, reflectance_scale(train[0].dtype)))
    return train, val, dataclasses.replace(meta, **meta_changes)


def _instance_setup(cfg: TrainConfig, device: torch.device) -> _Setup:
    """Rasters, class + boundary targets, metadata and the instance loss / AP50 objective."""
    train, val, meta = _read_instances(cfg)
    k = len(cfg.classes)
    targets = [
        encode_targets(_targets(r, cfg.classes), boundary_target(r.ids), k)
        for r in train
        if isinstance(r, InstanceRaster)
    ]
    dice = partial(_weighted_dice, weight=cfg.dice_weight) if cfg.dice_weight else None
    pixel = partial(instance_loss, k=k, pos_weight=boundary_pos_weight(targets, k), dice=dice)
    score = instance_scorer(BottomUpInstancePredictor, "ap50", meta, device, val)
    build = partial(build_model, cfg.arch, cfg.encoder, len(meta.bands), k + 1, **cfg.options)
    loss = partial(_pixel_loss, loss=pixel)
    return train, targets, meta, _Objective(loss, score, "val_ap50", build)


def _panoptic_setup(cfg: TrainConfig, device: torch.device) -> _Setup:
    """Rasters, class-index targets (ids ride along), metadata, Panoptic-DeepLab loss / PQ."""
    options = {"body": cfg.arch, **cfg.options}
    train, val, meta = _read_instances(cfg, arch=PANOPTIC_ARCH, options=options)
    things = [k for k, c in enumerate(cfg.classes.classes) if c.is_thing]
    targets = [_targets(r, cfg.classes) for r in train]
    loss = partial(panoptic_step_loss, things=things)
    score = instance_scorer(PanopticPredictor, "pq", meta, device, val)
    build = partial(build_panoptic_model, cfg.arch, cfg.encoder, len(meta.bands),
                    len(cfg.classes), **cfg.options)  # fmt: skip
    return train, targets, meta, _Objective(loss, score, "val_pq", build)


def _maskrcnn_setup(cfg: TrainConfig, device: torch.device) -> _Setup:
    """Rasters, class-index targets (ids ride along), metadata, Mask R-CNN losses / AP50."""
    if "window" in cfg.options:
        raise GeosegError("Mask R-CNN takes its input size from --window, not options.window")
    train, val, meta = _read_instances(cfg)
    targets = [_targets(r, cfg.classes) for r in train]
    loss = partial(maskrcnn_step_loss, schema=cfg.classes)
    score = instance_scorer(MaskRCNNPredictor, "ap50", meta, device, val)
    build = partial(build_maskrcnn, len(meta.bands), len(thing_ids(cfg.classes)), cfg.encoder,
                    cfg.window, **cfg.options)  # fmt: skip
    return train, targets, meta, _Objective(loss, score, "val_ap50", build)


def _weighted_dice(logits: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    return weight * _dice_loss(logits, target)


def _fit(
    cfg: TrainConfig, meta: ModelMeta, model: nn.Module, sampler: WindowSampler,
    objective: _Objective, device: torch.device, rng: np.random.Generator, out: Path,
    progress: Callable[[EpochReport], None] | None,
) -> TrainResult:  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    start, best, history = _resume(cfg, out, model, opt, rng, sched)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    norm = TorchPredictor(nn.Identity(), meta, torch.device("cpu"))
    for epoch in range(start, cfg.epochs):
        losses, data_s, step_s = [], 0.0, 0.0
        for _ in range(cfg.steps_per_epoch):
            t0 = time.perf_counter()
            batch = augment(sampler.sample(cfg.batch_size), rng)
            x = torch.from_numpy(norm.normalize(batch.image, batch.valid)).to(device)
            t1 = time.perf_counter()
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                loss = objective.loss(model, x, batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(float(loss.detach()))  # waits for the device: the step is done
            data_s, step_s = data_s + t1 - t0, step_s + time.perf_counter() - t1
        miou = objective.score(model) if objective.score else None
        report = EpochReport(
            epoch + 1, cfg.epochs, float(np.mean(losses)), miou,
            cfg.steps_per_epoch * cfg.batch_size, data_s, step_s,
        )  # fmt: skip
        history.append(report)
        if miou is None or best is None or miou >= best:  # ties: the later, longer-trained
            best = miou if miou is not None else best
            _save_best(out, model, meta, report, best, objective.metric)
        save_state(state_path(out), model, opt, rng, epoch + 1, _extra(best, history))
        if progress:
            progress(report)
    state_path(out).unlink(missing_ok=True)
    return TrainResult(out, best, history, objective.metric)


def _extra(best: float | None, history: Sequence[EpochReport]) -> dict[str, Any]:
    return {"best": best, "history": [list(dataclasses.astuple(h)) for h in history]}


def _resume(
    cfg: TrainConfig, out: Path, model: nn.Module, opt: torch.optim.Optimizer,
    rng: np.random.Generator, sched: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, float | None, list[EpochReport]]:  # fmt: skip
    """Epoch to start from, best mIoU so far and history; restores state on --resume."""
    path = state_path(out)
    if not cfg.resume:
        return 0, None, []
    if not path.exists():
        raise GeosegError(f"{path}: no unfinished run to resume; start without --resume")
    state = restore_state(path, model, opt, rng)
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
