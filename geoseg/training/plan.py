"""The rules of ``geoseg plan``: fingerprints -> training choices, each with its reason.

Every rule is a pure function of :class:`~geoseg.training.fingerprint.DataFingerprint`
and :class:`~geoseg.training.fingerprint.DeviceFingerprint` values (plus a measured
step time), returning :class:`Choice` values whose ``why`` becomes the comment above
the key in the plan file (:mod:`geoseg.training.plan_file`). The measurements live in
:mod:`geoseg.training.plan_measure`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from geoseg.models.registry import window_multiple
from geoseg.training.config import CLIP_PERCENTILES
from geoseg.training.fingerprint import DataFingerprint, DeviceFingerprint
from geoseg.types import ClassSchema

__all__ = [
    "HEAVY_TAIL_RATIO", "MIN_TRAIN_STEPS", "MIN_WINDOW", "RARE_SHARE", "Choice", "choose_batch",
    "choose_class_weights", "choose_normalization", "choose_schedule",
    "choose_window", "large_object_px", "schedule_warning", "window_cap",
]  # fmt: skip

#: Smallest planned window, px: below it a U-Net's bottleneck sees too little.
MIN_WINDOW = 64
#: A band whose 0.1/99.9 percentile lies this many IQRs from its median is heavy-tailed
#: (a normal band: 2.3).
HEAVY_TAIL_RATIO = 6.0
#: A class under this share of the median class's pixels is rare and weighed up.
RARE_SHARE = 0.25
#: Most a rare class is weighed (more makes the loss noisy on its few pixels).
MAX_CLASS_WEIGHT = 10.0
#: Share of the time budget spent in training steps (the rest: data, validation, saving).
STEP_SHARE = 0.8
#: Steps per epoch at most: an epoch ends with a checkpoint and a validation score.
MAX_STEPS_PER_EPOCH = 50
#: Fewest optimiser steps in all worth training: a network started from random weights
#: spends its first tens of steps predicting the commonest class everywhere (one class
#: on the map, the loss of the class prior); ~100 AdamW steps at lr 3e-3 move past it.
MIN_TRAIN_STEPS = 100


#: Architectures whose encoder depth is planned; True: give decoder channels per stage too.
DEPTH_ARCHS = {"unet": True, "unetplusplus": True, "fpn": False}
#: smp's U-Net decoder channels for 5 stages (the last ``depth`` for a shallower encoder).
UNET_DECODER = (256, 128, 64, 32, 16)


@dataclass(frozen=True)
class Choice:
    """One planned value and why it was chosen (a one-line comment in the plan)."""

    value: Any
    why: str


def window_cap(device: DeviceFingerprint) -> int:
    """Largest window the device trains at a useful speed, px."""
    if device.gpu_memory_gb is not None:
        return 512 if device.gpu_memory_gb >= 12 else 256
    return 256 if device.cpu_cores >= 8 else 128


def large_object_px(fp: DataFingerprint) -> tuple[float, str]:
    """Diameter of a large object, px, and which class it is from.

    See :attr:`~geoseg.training.fingerprint.ObjectSizes.large_diameter_px`.

    Classes covering more than half the labelled pixels are background-like (their
    components are bounded by the scene, not by an object's size) and are left out
    unless nothing else is labelled.
    """
    share = fp.class_share
    objects = {c: o for c, o in fp.objects.items() if share.get(c, 0) <= 0.5} or dict(fp.objects)
    if not objects:
        return 0.0, "no objects"
    c, o = max(objects.items(), key=lambda kv: kv[1].large_diameter_px)
    return o.large_diameter_px, f"class {c}"


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def choose_window(
    fp: DataFingerprint, device: DeviceFingerprint, arch: str, options: Mapping[str, Any]
) -> tuple[Choice, Choice, Choice]:
    """Window, margin and builder options (``encoder_depth``).

    The window holds a large object (diameter ``d``, :func:`large_object_px`) twice over, so
    it sees the object and as much context again; at least :data:`MIN_WINDOW`, at most
    :func:`window_cap` and the largest scene. The encoder is as deep as leaves a
    bottleneck of at least 4 px (nnU-Net's rule), 3 to 5 stages; the window is then
    rounded up to the architecture's multiple. The margin is half a large object, so an
    object whose centre is in a window's core lies inside the window.
    """
    d, source = large_object_px(fp)
    cap, largest = window_cap(device), max(max(s) for s in fp.scene_shapes)
    raw = max(MIN_WINDOW, min(2 * d, cap, _round_up(largest, 32)))
    opts, depth_why = dict(options), ""
    if arch.lower() in DEPTH_ARCHS and "encoder_depth" not in opts:
        depth = min(5, max(3, int(math.log2(raw / 4))))
        opts["encoder_depth"] = depth
        if DEPTH_ARCHS[arch.lower()] and depth < 5:  # a U-Net decoder has one block per stage
            opts["decoder_channels"] = list(UNET_DECODER[-depth:])
        depth_why = (f"encoder_depth {depth}: the deepest whose bottleneck (1/{2**depth} of the "
                     "window) is >= 4 px (nnU-Net's rule)")  # fmt: skip
    multiple = window_multiple(arch, opts)
    window = _round_up(raw, multiple)
    reason = (
        f"2 x the large-object diameter {d:.0f} px ({source}) = object + "
        f"context, within {MIN_WINDOW}..{min(cap, _round_up(largest, 32))} px (device, scene), "
        f"rounded up to {arch}'s multiple {multiple}"
    )
    margin = min(window // 4, max(8, math.ceil(d / 2)))
    margin_why = (f"half a large object ({d:.0f} px / 2, at least 8, at most window/4): an "
                  "object centred in a window's core lies inside the window")  # fmt: skip
    return (
        Choice(window, reason),
        Choice(margin, margin_why),
        Choice(
            opts,
            depth_why or f"{arch}: encoder depth as given (planned for {', '.join(DEPTH_ARCHS)})",
        ),
    )


def choose_batch(window: int, device: DeviceFingerprint, bytes_per_px: float) -> Choice:
    """Windows per step that fit in memory (half the GPU, or a quarter of the RAM).

    On a CPU the batch is also kept to 2 windows per core, so a step stays short
    enough for many steps in the budget.
    """
    per_sample = bytes_per_px * window * window
    if device.gpu_memory_gb is not None:
        budget, where, cap = device.gpu_memory_gb * 2**30 * 0.5, "half the GPU's memory", 64
    else:
        budget, where = device.ram_gb * 2**30 * 0.25, "a quarter of the RAM"
        cap = max(2, 2 * device.cpu_cores)
    fits = int(budget // max(per_sample, 1.0))
    batch = max(1, min(fits, cap))
    why = (f"{per_sample / 2**20:.0f} MB of activations per {window} px window; {fits} fit in "
           f"{where}, capped at {cap}")  # fmt: skip
    return Choice(batch, why + (" (2 per CPU core)" if device.gpu_memory_gb is None else ""))


def choose_normalization(fp: DataFingerprint) -> Choice:
    """``percentile`` clipping when any band is heavy-tailed, else per-band ``zscore``."""
    heavy = [b for b in fp.bands if b.tail_ratio > HEAVY_TAIL_RATIO]
    if heavy:
        names = ", ".join(f"{b.name} ({b.tail_ratio:.1f})" for b in heavy)
        lo, hi = CLIP_PERCENTILES
        return Choice("percentile", f"heavy-tailed bands (0.1/99.9 percentile over "
                      f"{HEAVY_TAIL_RATIO:g} IQRs from the median): {names}; clip each band to "
                      f"its {lo:g}-{hi:g} percentiles, then z-score")  # fmt: skip
    worst = max(fp.bands, key=lambda b: b.tail_ratio)
    why = (f"no heavy-tailed band (the most: {worst.name}, {worst.tail_ratio:.1f} IQRs; "
           f"over {HEAVY_TAIL_RATIO:g} would clip)")  # fmt: skip
    return Choice("zscore", why)


def choose_class_weights(fp: DataFingerprint, schema: ClassSchema) -> Choice:
    """Cross-entropy weights ``sqrt(median share / share)`` for rare classes (at most 10).

    A class is rare under :data:`RARE_SHARE` of the median class's share of the labelled
    pixels; the square root (not the full inverse) keeps the loss from chasing a few
    pixels. Classes absent from the sample are not weighed (nothing to weigh).
    """
    share = fp.class_share
    present = sorted(share.get(c.id, 0.0) for c in schema.classes if share.get(c.id, 0.0) > 0)
    if not present:
        return Choice(None, "no class of the schema in the sample")
    median = present[len(present) // 2]
    weights = {
        c.name: round(min(MAX_CLASS_WEIGHT, math.sqrt(median / share[c.id])), 2)
        for c in schema.classes
        if 0 < share.get(c.id, 0.0) < RARE_SHARE * median
    }
    if not weights:
        return Choice(None, f"no class under {RARE_SHARE:g} x the median share "
                      f"{median:.1%}: plain cross-entropy")  # fmt: skip
    parts = ", ".join(f"{n} {share[c.id]:.2%}" for c in schema.classes for n in [c.name]
                      if n in weights)  # fmt: skip
    return Choice(weights, f"rare classes ({parts} of labelled px, median {median:.1%}): "
                  f"sqrt(median / share), at most {MAX_CLASS_WEIGHT:g}")  # fmt: skip


def choose_schedule(step_s: float, budget_s: float,
                    validated: bool = False) -> tuple[Choice, Choice]:  # fmt: skip
    """Epochs and steps per epoch that fit ``budget_s`` at ``step_s`` seconds a step.

    ``validated``: the run has validation data (the checkpoint is the best-scoring
    epoch's, else the last epoch's).
    """
    total = max(1, int(budget_s * STEP_SHARE // max(step_s, 1e-6)))
    steps = min(MAX_STEPS_PER_EPOCH, total)
    epochs = max(1, total // steps)
    why = (f"{step_s:.3g} s per step (timed) -> {total} steps in {STEP_SHARE:.0%} of the "
           f"{budget_s / 60:g} min budget (the rest: data, validation, checkpoints)")  # fmt: skip
    short = schedule_warning(step_s, epochs, steps)
    keeps = ("a validation score; the best-scoring epoch is the checkpoint" if validated else
             "a checkpoint; no validation data (--val-image), so the last epoch's weights are "
             "the checkpoint")  # fmt: skip
    return (
        Choice(epochs, why + (f"; WARNING: {short}" if short else "")),
        Choice(steps, f"at most {MAX_STEPS_PER_EPOCH}: each epoch ends with {keeps}"),
    )


def schedule_warning(step_s: float, epochs: int, steps: int) -> str | None:
    """Why ``epochs`` x ``steps`` is too short to learn, with the budget that is not; or None."""
    if epochs * steps >= MIN_TRAIN_STEPS:
        return None
    need = MIN_TRAIN_STEPS * step_s / STEP_SHARE
    return (
        f"{epochs} epoch(s) x {steps} steps = {epochs * steps} steps, too few to learn "
        f"(from random weights a network predicts the commonest class for its first "
        f"tens of steps; at least {MIN_TRAIN_STEPS} are needed): a --time-budget of "
        f"{math.ceil(need / 60)}m gives {MIN_TRAIN_STEPS} steps at {step_s:.3g} s"
    )
