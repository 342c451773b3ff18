"""The Hugging Face ``transformers`` runtime: segmentation models rebuilt from their config.

An imported model's checkpoint carries the model's ``config.json`` (as
``ModelMeta.options["hf_config"]``) and its weights as ordinary tensors, so the
file's checks (strict keys and shapes, no pickles) cover them like any geoseg
checkpoint. :func:`build_hf` picks the ``transformers`` classes from the config's
``model_type`` (no ``AutoConfig``, no hub: nothing is ever downloaded) and wraps
the model so that it maps ``(N, C, H, W)`` windows to per-class scores at the
window's size, the interface of :class:`~geoseg.models.runtime.TorchPredictor`.

``transformers`` is imported only when a model is built.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from geoseg.errors import CheckpointError, UnknownModelError
from geoseg.models.family import TASKS
from geoseg.models.runtime import (  # adapt_first_conv: importers reach it from here
    TorchPredictor,
    adapt_first_conv,
    load_module,
    resolve_device,
)
from geoseg.types import ModelMeta

__all__ = [
    "HF_MODELS",
    "HFModel",
    "HFPredictor",
    "MaskClassifier",
    "MaskQueries",
    "PixelClassifier",
    "adapt_first_conv",
    "build_hf",
    "check_task",
    "first_conv",
    "hf_classes",
    "load_hf_predictor",
    "task_tokens",
    "transformers_module",
    "with_channels",
    "wrap_hf",
]


@dataclass(frozen=True)
class HFModel:
    """One supported ``transformers`` architecture.

    Attributes:
        config: its ``transformers`` config class name.
        model: its ``transformers`` model class name.
        head: ``"pixels"`` (per-pixel logits, e.g. SegFormer) or ``"masks"``
            (mask queries with class logits, e.g. Mask2Former).
    """

    config: str
    model: str
    head: str


#: ``config.json``'s ``model_type`` -> its classes. geoseg checkpoints store
#: ``ModelMeta.arch = "hf-" + model_type``.
HF_MODELS: Mapping[str, HFModel] = {
    "segformer": HFModel("SegformerConfig", "SegformerForSemanticSegmentation", "pixels"),
    "upernet": HFModel("UperNetConfig", "UperNetForSemanticSegmentation", "pixels"),
    "dpt": HFModel("DPTConfig", "DPTForSemanticSegmentation", "pixels"),
    "mask2former": HFModel("Mask2FormerConfig", "Mask2FormerForUniversalSegmentation", "masks"),
    "maskformer": HFModel("MaskFormerConfig", "MaskFormerForInstanceSegmentation", "masks"),
    "oneformer": HFModel("OneFormerConfig", "OneFormerForUniversalSegmentation", "masks"),
}

#: Mask-query scores below this are clamped before the log (softmax(log s) = s / sum s).
_EPS = 1e-6


def hf_classes(config: Mapping[str, Any], where: str | None = None) -> HFModel:
    """The classes of a ``config.json`` (``where``: its path, named in the error);
    UnknownModelError lists the supported types."""
    kind = str(config.get("model_type", ""))
    if kind not in HF_MODELS:
        raise UnknownModelError(
            f"{where + ': ' if where else ''}transformers model_type {kind!r} is not "
            f"supported; geoseg imports {', '.join(HF_MODELS)}"
        )
    return HF_MODELS[kind]


class PixelClassifier(nn.Module):
    """A per-pixel head (SegFormer, UperNet, DPT): logits resized to the window.

    ``(N, C, H, W) float32 -> (N, K, H, W)`` logits (bilinear upsampling of the
    head's ``(N, K, h, w)``, as the models' own post-processing does).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixel_values=x).logits
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


class MaskClassifier(nn.Module):
    """A mask-query head (Mask2Former, MaskFormer, OneFormer) as per-pixel class scores.

    Semantic inference of these models: ``s_k = sum_q p_q(k) sigmoid(m_q)`` with
    ``p_q`` the query's class softmax without its "no object" entry and ``m_q`` its
    mask logits upsampled to the window. Returns ``log(max(s, 1e-6))``, so the
    predictor's softmax gives ``s / sum_k s_k`` and the argmax is the models' own.
    ``(N, C, H, W) float32 -> (N, K, H, W)``.

    Args:
        model: the transformers model.
        task_inputs: OneFormer's ``(1, task_seq_len)`` int64 task-token ids (the
            tokenized "the task is ..."), given to every window; None for the others.
            A buffer outside the state dict: the ids travel in the checkpoint's options.
    """

    task_inputs: torch.Tensor | None

    def __init__(self, model: nn.Module, task_inputs: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("task_inputs", task_inputs, persistent=False)

    def queries(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities ``(N, Q, K + 1)`` and mask logits ``(N, Q, H, W)`` of ``x``."""
        extra = {} if self.task_inputs is None else {
            "task_inputs": self.task_inputs.expand(len(x), -1)
        }  # fmt: skip
        out = self.model(pixel_values=x, **extra)
        masks = F.interpolate(
            out.masks_queries_logits.float(), size=x.shape[-2:], mode="bilinear",
            align_corners=False,
        )  # fmt: skip
        return out.class_queries_logits.float().softmax(-1), masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs, masks = self.queries(x)
        scores = torch.einsum("nqk,nqhw->nkhw", probs[..., :-1], masks.sigmoid())
        return torch.log(scores.clamp(min=_EPS))


class MaskQueries(MaskClassifier):
    """A mask-query head for object tasks: the raw queries instead of per-pixel scores.

    ``(N, C, H, W) float32 -> (probs (N, Q, K + 1), mask logits (N, Q, H, W))``, see
    :meth:`MaskClassifier.queries`; same weights (state-dict keys) as
    :class:`MaskClassifier`. Post-processed by :mod:`geoseg.models.hf_masks`.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.queries(x)


def wrap_hf(
    model: nn.Module, config: Mapping[str, Any], task: str = "semantic",
    task_inputs: torch.Tensor | None = None,
) -> nn.Module:  # fmt: skip
    """``model`` wrapped for geoseg's ``task`` (``task_inputs``: see :class:`MaskClassifier`).

    Returns:
        :class:`PixelClassifier` or :class:`MaskClassifier` for ``semantic``;
        :class:`MaskQueries` for an object task (``instance``/``panoptic``).

    Raises:
        CheckpointError: an object task for a model without mask queries.
    """
    check_task(config, task)
    if TASKS[task].objects:
        return MaskQueries(model, task_inputs)
    if hf_classes(config).head == "pixels":
        return PixelClassifier(model)
    return MaskClassifier(model, task_inputs)


def check_task(config: Mapping[str, Any], task: str) -> None:
    """Refuse a task the ``config.json``'s model cannot serve (objects need mask queries)."""
    from geoseg.models.families.transformers import FAMILY  # the record lists the tasks

    if task not in FAMILY.tasks:
        raise CheckpointError(
            f"--task must be one of {', '.join(FAMILY.tasks)} for a transformers model, "
            f"not {task!r}"
        )
    if TASKS[task].objects and hf_classes(config).head != "masks":
        raise CheckpointError(
            f"transformers {config.get('model_type')} has a per-pixel head and finds no "
            f"objects; --task {task} needs a mask-query model (mask2former, maskformer, oneformer)"
        )


def transformers_module() -> Any:
    """The transformers package, imported on first use (a clear error if not installed)."""
    try:
        import transformers
    except ImportError as exc:
        raise CheckpointError(
            "Hugging Face models need the transformers package: pip install 'geoseg[hf]'"
        ) from exc
    return transformers


def hf_config(config: Mapping[str, Any]) -> Any:
    """The ``transformers`` config object of a ``config.json`` dict (no hub access).

    OneFormer is built with ``is_training=False``: its training-only text mapper
    would need per-image text inputs that inference neither has nor uses.
    """
    own = dict(config)
    if own.get("model_type") == "oneformer":
        own["is_training"] = False
    return getattr(transformers_module(), hf_classes(config).config).from_dict(own)


def build_hf(meta: ModelMeta) -> nn.Module:
    """The untrained wrapped model of an imported checkpoint's ``options["hf_config"]``."""
    config = meta.options.get("hf_config")
    if not isinstance(config, Mapping):
        raise CheckpointError(
            f"a {meta.arch} checkpoint without its transformers config; re-import the model "
            "with `geoseg import FOLDER`"
        )
    if meta.arch != f"hf-{config.get('model_type')}":
        raise CheckpointError(
            f"a {meta.arch} checkpoint holding a {config.get('model_type')!r} transformers "
            "config; the file was edited or written by another program"
        )
    model_cls = getattr(transformers_module(), hf_classes(config).model)
    return wrap_hf(model_cls(hf_config(config)), config, meta.task, task_tokens(meta))


def task_tokens(meta: ModelMeta) -> torch.Tensor | None:
    """OneFormer's ``(1, task_seq_len)`` int64 task-token ids stored at import; None otherwise.

    ``geoseg import`` tokenizes "the task is <task>" with the folder's CLIP
    tokenizer (as ``OneFormerProcessor`` does: padded with 0 to ``task_seq_len``)
    and stores the ids as ``options["task_inputs"]``, so prediction needs no tokenizer.
    """
    config = meta.options["hf_config"]
    if config.get("model_type") != "oneformer":
        return None
    ids = meta.options.get("task_inputs")
    length = int(config.get("task_seq_len", 77))
    if not (
        isinstance(ids, list) and len(ids) == length
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
    ):  # fmt: skip
        raise CheckpointError(
            f"a {meta.arch} checkpoint without its {length} task-token ids (options "
            "task_inputs); re-import the model folder with `geoseg import FOLDER`"
        )
    return torch.tensor([ids], dtype=torch.int64)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The name and module of the first convolution: the one that reads the bands."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise CheckpointError("the model has no 2-D convolution to read the bands with")


def with_channels(config: Mapping[str, Any], bands: int) -> dict[str, Any]:
    """A copy of ``config.json`` whose model (and backbone) reads ``bands`` channels."""
    out = copy.deepcopy(dict(config))
    out["num_channels"] = bands
    if isinstance(out.get("backbone_config"), dict):
        out["backbone_config"]["num_channels"] = bands
    return out


class HFPredictor(TorchPredictor):
    """A :class:`~geoseg.models.runtime.TorchPredictor` that keeps windows independent on the CPU.

    The attention layers' CPU matrix products round differently with the batch
    size, so a window in a short last batch could come out a rounding step off the
    same window in a full one and the map would depend on the chunking. On the CPU
    each window therefore runs on its own; on CUDA the runtime fills every batch to
    one size (``fixed_batch``) instead.
    """

    def call(self, x: Any, as_list: bool = False) -> Any:
        if self.device.type == "cuda" or len(x) <= 1:
            return super().call(x, as_list)
        return torch.cat([super(HFPredictor, self).call(x[i : i + 1]) for i in range(len(x))])


def load_hf_predictor(
    path: str, device: str = "auto", scale: float | None = None, threads: int | None = None,
    precision: str = "auto", build: Callable[[ModelMeta], nn.Module] = build_hf,
) -> HFPredictor:  # fmt: skip
    """The predictor of an imported checkpoint (arguments as
    :func:`~geoseg.models.runtime.load_torch_predictor`; ``build``: the module of its
    metadata, e.g. a trained Mask2Former's)."""
    module, meta = load_module(path, build, scale)
    return HFPredictor(module, meta, resolve_device(device), threads, precision)
