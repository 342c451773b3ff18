"""Mask2Former trained by geoseg: a ``transformers`` model built from a config, random weights.

``geoseg train --arch mask2former`` (``--task semantic``, ``instance`` or
``panoptic``) builds ``Mask2FormerForUniversalSegmentation`` from a
``Mask2FormerConfig`` (nothing is downloaded: ``transformers`` builds a backbone from
its config with random weights) whose backbone reads the scene's bands and whose
``num_labels`` is the class schema's size. The config is stored in the checkpoint
(``ModelMeta.options["hf_config"]``) so a later ``transformers`` with other defaults
rebuilds the same network.

At prediction the model runs through the imported models' runtime: semantic maps
through :class:`~geoseg.models.hf.HFPredictor` (per-class scores ``sum_q p_q(k)
sigmoid(m_q)``), objects through :class:`~geoseg.models.hf_masks.HFMaskPredictor`
(transformers' instance / panoptic post-processing per window, then geoseg's seam
merge). The training loss is in :mod:`geoseg.training.mask2former`.

``ModelMeta.options`` may set the backbone (``backbone_config``: a ``transformers``
backbone config dict, replacing the ``--encoder`` preset), any of :data:`DECODER_KEYS`
and the post-processing thresholds of :data:`~geoseg.models.hf_masks.POSTPROCESS`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from geoseg.errors import CheckpointError, GeosegError, UnknownModelError
from geoseg.models.hf import (
    HFPredictor,
    hf_config,
    load_hf_predictor,
    transformers_module,
    with_channels,
    wrap_hf,
)
from geoseg.models.hf_masks import POSTPROCESS, HFMaskPredictor, load_hf_mask_predictor
from geoseg.types import ModelMeta

__all__ = [
    "ARCH",
    "BACKBONES",
    "DECODER_KEYS",
    "load_mask2former_predictor",
    "mask2former_config",
    "mask2former_model",
]

#: ``ModelMeta.arch`` of the checkpoints ``geoseg train --arch mask2former`` writes.
ARCH = "mask2former"

_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _resnet(depths: list[int], sizes: list[int], layer: str) -> dict[str, Any]:
    return {"model_type": "resnet", "embedding_size": 64, "hidden_sizes": sizes,
            "depths": depths, "layer_type": layer, "out_features": _STAGES}  # fmt: skip


def _swin(embed: int, depths: list[int], heads: list[int], window: int) -> dict[str, Any]:
    return {"model_type": "swin", "embed_dim": embed, "depths": depths, "num_heads": heads,
            "window_size": window, "drop_path_rate": 0.3, "out_features": _STAGES}  # fmt: skip


#: ``--encoder`` -> the backbone config (the Mask2Former paper's R50/R101 and Swin-T/S/B;
#: ResNet-18/34 as lighter ones). Every stage feeds the pixel decoder: output stride 32.
BACKBONES: Mapping[str, dict[str, Any]] = {
    "resnet18": _resnet([2, 2, 2, 2], [64, 128, 256, 512], "basic"),
    "resnet34": _resnet([3, 4, 6, 3], [64, 128, 256, 512], "basic"),
    "resnet50": _resnet([3, 4, 6, 3], [256, 512, 1024, 2048], "bottleneck"),
    "resnet101": _resnet([3, 4, 23, 3], [256, 512, 1024, 2048], "bottleneck"),
    "swin-tiny": _swin(96, [2, 2, 6, 2], [3, 6, 12, 24], 7),
    "swin-small": _swin(96, [2, 2, 18, 2], [3, 6, 12, 24], 7),
    "swin-base": _swin(128, [2, 2, 18, 2], [4, 8, 16, 32], 12),
}

#: The ``Mask2FormerConfig`` fields ``ModelMeta.options`` may set (transformers' defaults,
#: the paper's, otherwise): pixel decoder, transformer decoder and loss weights.
DECODER_KEYS = (
    "feature_size", "mask_feature_size", "hidden_dim", "encoder_feedforward_dim",
    "encoder_layers", "decoder_layers", "num_attention_heads", "dim_feedforward", "dropout",
    "num_queries", "no_object_weight", "class_weight", "mask_weight", "dice_weight",
    "train_num_points", "oversample_ratio", "importance_sample_ratio",
)  # fmt: skip

_KNOWN = ("backbone_config", "hf_config", *DECODER_KEYS, *POSTPROCESS)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' "backbone resnet ... may not be compatible" note: geoseg builds
    the pixel decoder from the backbone's stage channels, which works for any backbone."""
    log = logging.getLogger("transformers.models.mask2former.configuration_mask2former")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def mask2former_config(meta: ModelMeta) -> dict[str, Any]:
    """The ``config.json`` dict of ``meta``'s Mask2Former (stored one, or built from it).

    Built: ``meta.encoder``'s backbone (or ``options["backbone_config"]``) reading
    ``len(meta.bands)`` channels, ``options``' :data:`DECODER_KEYS`, and the schema's
    class names as ``id2label`` (``num_labels`` = classes).

    Raises:
        GeosegError: unknown options; UnknownModelError: unknown encoder;
        CheckpointError: a stored config that does not fit the bands or classes.
    """
    unknown = sorted(set(meta.options) - set(_KNOWN))
    if unknown:
        raise GeosegError(f"unknown Mask2Former options {unknown}; known: {', '.join(_KNOWN)}")
    stored = meta.options.get("hf_config")
    config = _check_stored(stored, meta) if stored is not None else _built(meta)
    return config


def _built(meta: ModelMeta) -> dict[str, Any]:
    backbone = meta.options.get("backbone_config")
    if backbone is None:
        key = (meta.encoder or "resnet18").lower()
        if key not in BACKBONES:
            raise UnknownModelError(
                f"unknown Mask2Former encoder {meta.encoder!r}; choose one of "
                f"{', '.join(BACKBONES)} (or options.backbone_config)"
            )
        backbone = BACKBONES[key]
    elif not isinstance(backbone, Mapping) or "model_type" not in backbone:
        raise GeosegError(
            "options.backbone_config must be a transformers backbone config with a "
            "model_type, e.g. {model_type: swin, embed_dim: 32, ...}"
        )
    names = list(meta.schema.names)
    config = {
        "model_type": "mask2former", "backbone_config": dict(backbone),
        **{k: meta.options[k] for k in DECODER_KEYS if k in meta.options},
        "id2label": {str(k): n for k, n in enumerate(names)},
        "label2id": {n: k for k, n in enumerate(names)},
    }  # fmt: skip
    return with_channels(config, len(meta.bands))


def _check_stored(config: Any, meta: ModelMeta) -> dict[str, Any]:
    if not isinstance(config, Mapping) or config.get("model_type") != "mask2former":
        raise CheckpointError(
            "a mask2former checkpoint without a Mask2Former config (options.hf_config); "
            "the file was edited or written by another program"
        )
    labels = config.get("id2label", {})
    channels = config.get("backbone_config", {}).get("num_channels")
    if len(labels) != len(meta.schema) or channels != len(meta.bands):
        raise CheckpointError(
            f"the checkpoint's Mask2Former config has {len(labels)} classes and "
            f"{channels} input channels, its metadata {len(meta.schema)} classes and "
            f"{len(meta.bands)} bands; the file was edited or written by another program"
        )
    return dict(config)


def mask2former_model(meta: ModelMeta) -> nn.Module:
    """The untrained Mask2Former of ``meta``, wrapped for its task (see
    :func:`~geoseg.models.hf.wrap_hf`): ``(N, C, H, W)`` -> per-class log scores
    (semantic) or ``(probs (N, Q, K + 1), mask logits (N, Q, H, W))`` (objects).

    Raises:
        CheckpointError: another kind of checkpoint, or ``transformers`` is missing.
    """
    if meta.arch != ARCH:
        raise CheckpointError(
            f"a {meta.arch!r} checkpoint, not a Mask2Former one; train one with "
            f"`geoseg train --arch {ARCH}`"
        )
    config = mask2former_config(meta)
    cls = transformers_module().Mask2FormerForUniversalSegmentation
    with _quiet():
        model = cls(hf_config(config))
    return wrap_hf(model, config, meta.task)


def load_mask2former_predictor(
    path: str | os.PathLike[str], device: str = "auto", scale: float | None = None,
    threads: int | None = None, precision: str = "auto", objects: bool = False,
) -> HFPredictor | HFMaskPredictor:  # fmt: skip
    """The predictor of a trained Mask2Former checkpoint: the imported models' runtime
    (``objects``: an instance / panoptic checkpoint; arguments as
    :func:`~geoseg.models.runtime.load_torch_predictor`)."""
    if objects:
        return load_hf_mask_predictor(path, device, scale, threads, precision, mask2former_model)
    return load_hf_predictor(os.fspath(path), device, scale, threads, precision, mask2former_model)
