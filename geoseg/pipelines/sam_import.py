"""``geoseg import SAM_FOLDER``: a transformers SAM / SAM 2 folder -> a ``prompt`` checkpoint.

The folder is what ``save_pretrained`` writes (``config.json`` with
``model_type`` ``sam`` (``SamModel``), ``sam2`` (``Sam2Model``) or ``sam2_video``
(``Sam2VideoModel``, which ``geoseg track`` needs), and ``model.safetensors``; a
``preprocessor_config.json`` from the processor is optional). It is read with
``local_files_only`` and from safetensors only, as every transformers folder is
(:mod:`geoseg.pipelines.hf_import`). The config travels in the checkpoint's
metadata, the weights as its tensors (with their digest); the normalisation is the
processor's pixel mean/std and 1/255 rescale (SAM's defaults without one; ``--scale``
for scenes stored otherwise, e.g. 10000 for uint16 reflectance). A scene with
another band count than 3 gets an adapted patch embedding
(:func:`geoseg.models.runtime.adapt_first_conv`). SAM 2 takes the same options and
the same defaults (its processor's are SAM's).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from geoseg import __version__
from geoseg.errors import CheckpointError, GeosegError
from geoseg.models.families import sam2 as sam2_family
from geoseg.models.families.sam import ARCH, MODEL_TYPE, PATCH
from geoseg.models.hf import transformers_module
from geoseg.models.runtime import adapt_first_conv, check_state_fits
from geoseg.models.sam import build_sam, sam_config
from geoseg.models.sam2 import build_sam2, sam2_config
from geoseg.pipelines.hf_import import (
    check_weights_file,
    load_folder_model,
    preprocessor_normalization,
    read_folder_json,
)
from geoseg.types import ClassInfo, ClassSchema, ModelMeta

if TYPE_CHECKING:
    from geoseg.pipelines.importing import ImportOptions

__all__ = [
    "DECODER_RULES", "PATCH_LAYER", "SAM2_PATCH_LAYER", "SAM_MODEL_TYPES", "SAM_PREPROCESSOR",
    "SAM_SCHEMA", "SamKind", "check_sam_options", "check_window", "finish_mapping",
    "import_sam_folder", "sam_checkpoint", "sam_kind",
]  # fmt: skip

#: ``SamProcessor``'s defaults (ImageNet statistics on 8-bit values), used without a
#: ``preprocessor_config.json``.
SAM_PREPROCESSOR: Mapping[str, Any] = {
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    "rescale_factor": 1 / 255, "do_rescale": True, "do_normalize": True,
}  # fmt: skip
#: The classes of a prompt output's band 1: background (0) and the prompted object (1).
SAM_SCHEMA = ClassSchema(
    (ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "object", (255, 190, 0), is_thing=True))
)
#: The convolution that reads the bands (the ViT's patch embedding).
PATCH_LAYER = "vision_encoder.patch_embed.projection"
#: SAM 2's: the Hiera backbone's patch embedding.
SAM2_PATCH_LAYER = "vision_encoder.backbone.patch_embed.projection"
#: ``config.json`` ``model_type`` of the folders imported here.
SAM_MODEL_TYPES = (MODEL_TYPE, *sam2_family.MODEL_TYPES)


@dataclass(frozen=True)
class SamKind:
    """What differs between SAM and SAM 2 folders on import."""

    arch: str
    name: str
    patch_layer: str
    model_class: Callable[[Any], Any]
    config: Callable[[Mapping[str, Any]], Any]
    build: Callable[[ModelMeta], torch.nn.Module]


def sam_kind(model_type: str) -> SamKind:
    t = transformers_module()
    if model_type == MODEL_TYPE:
        return SamKind(ARCH, "SAM", PATCH_LAYER, t.SamModel, sam_config, build_sam)
    cls = t.Sam2VideoModel if model_type == sam2_family.VIDEO_TYPE else t.Sam2Model
    return SamKind(sam2_family.ARCH, "SAM 2", SAM2_PATCH_LAYER, cls, sam2_config, build_sam2)


def import_sam_folder(
    source: Path, opts: ImportOptions
) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """The tensors and metadata of a SAM / SAM 2 folder, checked against ``opts``."""
    config = read_folder_json(source / "config.json", required=True)
    check_weights_file(source)
    check_sam_options(source, opts)
    kind = sam_kind(str(config.get("model_type")))
    prep = read_folder_json(source / "preprocessor_config.json", required=False)
    check_window(opts, config, kind.name)
    model = load_folder_model(source, kind.model_class, kind.config(config))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return sam_checkpoint(source, opts, kind, config, state, prep or SAM_PREPROCESSOR,
                          {"format": "transformers"})  # fmt: skip


def check_window(opts: ImportOptions, config: Mapping[str, Any], name: str) -> None:
    """``--window``, if given, is the encoder's input size (SAM's windows are fixed)."""
    size = _input_size(config)
    if opts.window is not None and opts.window != size:
        raise GeosegError(
            f"--window {opts.window}: {name}'s encoder takes {size} px windows (its "
            "config's image_size); leave --window out"
        )


def sam_checkpoint(
    source: Path, opts: ImportOptions, kind: SamKind, config: Mapping[str, Any],
    state: dict[str, torch.Tensor], prep: Mapping[str, Any], provenance: Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], ModelMeta]:  # fmt: skip
    """The tensors and metadata of a SAM / SAM 2 model given as its transformers ``config``
    (``config.json``'s dict) and ``state`` (its ``state_dict`` names), whatever it was read
    from: one writer, so a folder and a ``.pth`` import give checkpoints of one form.

    ``prep`` is the preprocessor's mean/std/rescale; ``provenance`` says what was read
    (``format``, and anything else worth keeping).
    """
    bands = tuple(opts.bands)
    layer = f"{kind.patch_layer}.weight"
    pretrained = int(state[layer].shape[1])
    state[layer] = adapt_first_conv(state[layer], len(bands))
    meta = ModelMeta(
        task="prompt", arch=kind.arch, encoder=kind.model_class.__name__, bands=bands,
        normalization=preprocessor_normalization(prep, opts, len(bands)),
        schema=SAM_SCHEMA, window=_input_size(config), margin=0, gsd_m=opts.gsd_m,
        provenance={"imported_from": source.name, **provenance,
                    "imported_by": f"geoseg {__version__}",
                    "first_conv": {"layer": kind.patch_layer, "pretrained_channels": pretrained,
                                   "bands": len(bands)}},
        options={"hf_config": _with_channels(config, len(bands))},
    )  # fmt: skip
    module = kind.build(meta)  # as `geoseg prompt` will: strict keys and shapes
    check_state_fits(source, module, state, meta)
    module.load_state_dict(state, strict=True)
    return state, meta


def check_sam_options(source: Path, opts: ImportOptions) -> None:
    """Refuse options that do not apply to SAM (classes, object tasks, no bands)."""
    if not opts.bands:
        raise GeosegError("--bands is empty; name the scene band of each SAM input (e.g. R,G,B)")
    if opts.task not in ("semantic", "prompt"):  # "semantic" is --task's default
        raise GeosegError(
            f"{source}: a SAM model imports as a prompt model (`geoseg prompt`); leave --task out"
        )
    if opts.schema is not None or opts.things is not None:
        raise GeosegError(
            f"{source}: SAM has no classes (each prompt gives one object); leave --classes and "
            "--things out"
        )
    if opts.outputs != "logits":
        raise GeosegError("--outputs applies to ONNX graphs; SAM gives mask logits")
    if opts.margin is not None:
        raise GeosegError("--margin does not apply to SAM: each prompt reads its own window")


def _input_size(config: Mapping[str, Any]) -> int:
    """The encoder's input side in px: SAM's vision ``image_size``, SAM 2's prompt encoder's."""
    part = "vision_config" if config.get("model_type") == MODEL_TYPE else "prompt_encoder_config"
    sub = config.get(part)
    size = int((sub if isinstance(sub, dict) else {}).get("image_size", 1024))
    if size % PATCH:
        raise CheckpointError(f"{part} image_size {size} is not a multiple of {PATCH}")
    return size


def _with_channels(config: Mapping[str, Any], bands: int) -> dict[str, Any]:
    """A copy of ``config.json`` whose vision encoder (SAM 2: its backbone) reads ``bands``
    channels."""
    out = copy.deepcopy(dict(config))
    vision = out.get("vision_config")
    out["vision_config"] = vision = dict(vision if isinstance(vision, dict) else {})
    if out.get("model_type") == MODEL_TYPE:
        vision["num_channels"] = bands
    else:
        backbone = vision.get("backbone_config")
        vision["backbone_config"] = {**(backbone if isinstance(backbone, dict) else {}),
                                     "num_channels": bands}  # fmt: skip
    _input_size(out)
    return out


#: Meta -> transformers names of SAM's and SAM 2's prompt-encoder mask embedding and
#: mask-decoder upscaling (the same modules in both), appended to each importer's rules.
DECODER_RULES: tuple[tuple[str, str], ...] = (
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."),
    (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."),
    (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"\.output_upscaling\.0\.", ".upscale_conv1."),
    (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
)  # fmt: skip


def finish_mapping(
    out: dict[str, torch.Tensor],
    expected: Mapping[str, Any],
    tied: tuple[str, str],
    problems: tuple[list[str], list[str]],
    where: Path,
    model: str,
) -> dict[str, torch.Tensor]:
    """Tie the shared positional embedding and refuse a state dict that does not fit.

    ``out``: tensors under the transformers model's names; ``expected``: name -> shape
    of that model; ``tied``: (source, copy) names of the embedding the model shares;
    ``problems``: the source keys that named nothing (unexpected) or a name twice.

    Raises:
        CheckpointError: names missing, unexpected, doubled or of the wrong shape.
    """
    unexpected, doubled = problems
    if tied[0] in out:
        out[tied[1]] = out[tied[0]].clone()
    missing = sorted(set(expected) - set(out))
    wrong = sorted(f"{k} {tuple(v.shape)} not {expected[k]}" for k, v in out.items()
                   if k in expected and tuple(v.shape) != tuple(expected[k]))  # fmt: skip
    if missing or unexpected or doubled or wrong:
        raise CheckpointError(
            f"{where}: the tensors do not fit the {model} model (missing {missing[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}, twice {doubled[:3]}, wrong shape "
            f"{wrong[:3]}; {len(missing)}/{len(unexpected)}/{len(doubled)}/{len(wrong)} in "
            "all); check --sam-config, or re-download the original checkpoint"
        )
    return out
