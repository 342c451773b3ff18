"""Cross-validation ensembles: the mean of K per-pixel class models' probabilities.

``geoseg train --folds K`` (:mod:`geoseg.training.crossval`) trains one member per
fold and writes them into one checkpoint: ``ModelMeta.arch`` is ``"ensemble"``, the
members' own architecture and options sit in ``options`` (``member_arch``,
``member_options``, ``members``), and member ``i``'s weights are stored under the
prefix ``members.i.``. Every member shares the checkpoint's bands, normalization,
classes and window, so one normalized batch feeds them all.

A window batch runs through the members one after another, adding each one's
softmax into one ``(N, K, H, W)`` float32 sum, so inference holds one member's
activations at a time whatever the number of members. The probabilities are that
sum divided by the number of members; the map is their argmax.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from geoseg.errors import CheckpointError
from geoseg.models.family import Family
from geoseg.models.runtime import TorchPredictor, load_module, resolve_device
from geoseg.models.temperature import TINY, temper_probabilities
from geoseg.types import ModelMeta

if TYPE_CHECKING:
    from geoseg.models.cache import ModelSpec

__all__ = [
    "ENSEMBLE",
    "EnsembleModule",
    "EnsemblePredictor",
    "ensemble_meta",
    "ensemble_model",
    "ensemble_state",
    "load_ensemble",
    "member_meta",
    "per_pixel",
]

#: ``ModelMeta.arch`` of an ensemble checkpoint.
ENSEMBLE = "ensemble"


class EnsembleModule(nn.Module):
    """Members run in turn on one batch; the output is their mean class probabilities.

    ``(N, C, H, W)`` normalized float32 -> ``(N, K, H, W)`` float32 probabilities
    (not logits): ``(softmax(m_0(x)) + ... + softmax(m_{n-1}(x))) / n``, summed in
    member order.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for member in self.members:
            p = torch.softmax(member(x).float(), dim=1)
            total = p if total is None else total + p
        assert total is not None  # an ensemble has at least two members (member_meta)
        return total / len(self.members)


def member_meta(meta: ModelMeta) -> tuple[ModelMeta, int]:
    """The metadata of one member of ensemble ``meta``, and the number of members.

    Raises:
        CheckpointError: the ensemble's options do not name its members.
    """
    opts = dict(meta.options)
    n, arch = opts.get("members"), opts.get("member_arch")
    if not isinstance(n, int) or n < 2 or not isinstance(arch, str) or arch == ENSEMBLE:
        raise CheckpointError(
            f"an ensemble checkpoint needs options members (>= 2) and member_arch (not "
            f"{ENSEMBLE}), got {opts}; write it with `geoseg train --folds K`"
        )
    member_options = opts.get("member_options") or {}
    return dataclasses.replace(meta, arch=arch, options=dict(member_options)), n


def ensemble_model(meta: ModelMeta) -> nn.Module:
    """The untrained :class:`EnsembleModule` an ensemble checkpoint describes."""
    from geoseg.models.registry import checkpoint_family

    one, n = member_meta(meta)
    family = checkpoint_family(one)
    if not per_pixel(family) or family.build is None:
        raise CheckpointError(
            f"ensemble members must be per-pixel class models (smp, fcn, early-fusion or "
            f"Siamese change), not {one.task}/{one.arch} of the {family.name} family"
        )
    return EnsembleModule([family.build(one) for _ in range(n)])


def per_pixel(family: Family) -> bool:
    """Whether ``family``'s checkpoints are per-pixel logit models run by a plain
    :class:`TorchPredictor` (what an ensemble averages)."""
    from geoseg.models.families.smp import load_pixel_predictor

    return family.load is load_pixel_predictor


def ensemble_meta(member: ModelMeta, n: int, metrics: Mapping[str, Any]) -> ModelMeta:
    """The metadata of an ensemble of ``n`` members with metadata ``member``."""
    options = {"members": n, "member_arch": member.arch, "member_options": dict(member.options)}
    return dataclasses.replace(member, arch=ENSEMBLE, options=options, metrics=dict(metrics))


def ensemble_state(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The members' state dicts as one, member ``i``'s keys prefixed ``members.i.``."""
    return {f"members.{i}.{k}": v for i, state in enumerate(states) for k, v in state.items()}


class EnsemblePredictor(TorchPredictor):
    """A :class:`TorchPredictor` whose module already gives probabilities (no softmax).

    A calibrated ensemble's temperature tempers the mean probabilities
    (:func:`~geoseg.models.temperature.temper_probabilities`); uncalibrated, ``T = 1``.
    """

    def probabilities(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        return temper_probabilities(self.call(x).float(), self.meta.temperature)

    def log_probabilities(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``log`` of :meth:`predict` (the mean probabilities have no logits to take)."""
        return np.log(np.maximum(self.predict(batch, valid), TINY))


def load_ensemble(spec: ModelSpec, meta: ModelMeta | None) -> EnsemblePredictor:
    """The predictor of an ensemble checkpoint (weights checked strictly, digest included)."""
    module, loaded = load_module(spec.source, ensemble_model, spec.scale)
    device = resolve_device(spec.device)
    return EnsemblePredictor(module, loaded, device, spec.threads, spec.precision)
