"""``geoseg import sam2.1_hiera_tiny.pt``: Meta's own SAM 2 / 2.1 checkpoint -> a prompt checkpoint.

Meta's files (``{"model": state_dict}`` with ``image_encoder.trunk.*``,
``sam_prompt_encoder.*``, ``sam_mask_decoder.*``, ``memory_attention.*``,
``memory_encoder.*``, ...) are read with ``torch.load(weights_only=True)`` only (as
every ``.pth``, :func:`geoseg.io.state_dicts.read_state_dict`). Their names are
mapped to transformers' ``Sam2VideoModel`` ones (:func:`sam2_state`, the renames of
transformers' ``convert_sam2_video_to_hf.py``, written out here), strictly: every
model tensor filled once with its shape, no file tensor left over, else one line
names a few of each and nothing is written. A file with the memory weights (Meta's
released ones all have them) becomes a ``Sam2VideoModel``, which both ``geoseg
prompt`` and ``geoseg track`` run; one without becomes an image ``Sam2Model``.

The Hiera trunk is tiny, small, base+ or large, told by its width and stage depths
(96/[1,2,7,2], 96/[1,2,11,2], 112/[2,3,16,3], 144/[2,6,36,4]); SAM 2.0 and 2.1 by
2.1's extra tensors (``no_obj_embed_spatial``, ``obj_ptr_tpos_proj``). ``--sam-config``
names a preset (``hiera_t``, ``hiera_s``, ``hiera_b+``, ``hiera_l``) or a transformers
``Sam2VideoConfig`` / ``Sam2Config`` JSON file for another model. The checkpoint is
written by the folder import's writer, so both give one form.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from geoseg.errors import CheckpointError, GeosegError
from geoseg.models.families.sam2 import IMAGE_TYPE, VIDEO_TYPE
from geoseg.models.hf import transformers_module
from geoseg.pipelines.hf_import import read_folder_json
from geoseg.pipelines.sam_import import (
    DECODER_RULES,
    SAM_PREPROCESSOR,
    check_window,
    finish_mapping,
    sam_checkpoint,
    sam_kind,
)

if TYPE_CHECKING:
    from geoseg.io.state_dicts import StateDict
    from geoseg.pipelines.importing import ImportOptions

__all__ = ["SAM2_PRESETS", "import_sam2_pth", "infer_sam2_variant", "is_sam2", "sam2_state"]

#: transformers' ``model_type`` of the Hiera backbone config.
HIERA = "sam2_hiera_det_model"
#: (Hiera width, blocks per stage) and the ``Sam2VisionConfig`` of Meta's four models
#: (the rest is transformers' defaults, which are SAM 2.1 tiny's).
SAM2_PRESETS: Mapping[str, tuple[tuple[int, tuple[int, ...]], Mapping[str, Any]]] = {
    "hiera_t": ((96, (1, 2, 7, 2)), {"backbone_config": {"model_type": HIERA}}),
    "hiera_s": ((96, (1, 2, 11, 2)), {"backbone_config": {
        "model_type": HIERA, "blocks_per_stage": [1, 2, 11, 2],
        "global_attention_blocks": [7, 10, 13]}}),
    "hiera_b+": ((112, (2, 3, 16, 3)), {"backbone_config": {
        "model_type": HIERA, "hidden_size": 112, "embed_dim_per_stage": [112, 224, 448, 896],
        "num_attention_heads_per_stage": [2, 4, 8, 16], "blocks_per_stage": [2, 3, 16, 3],
        "global_attention_blocks": [12, 16, 20],
        "window_positional_embedding_background_size": [14, 14]},
        "backbone_channel_list": [896, 448, 224, 112]}),
    "hiera_l": ((144, (2, 6, 36, 4)), {"backbone_config": {
        "model_type": HIERA, "hidden_size": 144, "embed_dim_per_stage": [144, 288, 576, 1152],
        "num_attention_heads_per_stage": [2, 4, 8, 16], "blocks_per_stage": [2, 6, 36, 4],
        "global_attention_blocks": [23, 33, 43],
        "window_positional_embedding_background_size": [7, 7],
        "window_size_per_stage": [8, 4, 16, 8]},
        "backbone_channel_list": [1152, 576, 288, 144]}),
}  # fmt: skip
PATCH_KEY = "image_encoder.trunk.patch_embed.proj.weight"
#: A name only SAM 2 files have (SAM's mask decoder is ``mask_decoder``).
SAM2_MARK = ("image_encoder.trunk.", "sam_mask_decoder.", "sam_prompt_encoder.")
#: Meta's prompt encoder's Fourier matrix, which transformers holds twice (tied).
FOURIER = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
TIED = ("prompt_encoder.shared_embedding.positional_embedding",
        "shared_image_embedding.positional_embedding")  # fmt: skip
#: Meta's four point embeddings, one ``(1, D)`` each; transformers' one ``(4, D)``.
_POINT = re.compile(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$")
#: (pattern, replacement) applied in order to each Meta name.
_RULES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."), (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
    (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
    (r"^obj_ptr_proj\.", "object_pointer_proj."),
    (r"^memory_encoder\.out_proj\.", "memory_encoder.projection."),
    (r"^memory_encoder\.pix_feat_proj\.", "memory_encoder.feature_projection."),
    (r"^memory_encoder\.fuser\.", "memory_encoder.memory_fuser."),
    (r"\.gamma$", ".scale"), (r"\.dwconv\.", ".depthwise_conv."),
    (r"\.pwconv(\d)\.", r".pointwise_conv\1."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.norm(\d?)\.", r".layer_norm\1."), (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"\.out_proj\.", ".o_proj."),
    *DECODER_RULES,
)  # fmt: skip
#: Meta's MLPs (``layers.0 .. layers.{n-1}``): transformers' ``proj_in``, ``layers.0 ..
#: layers.{n-3}``, ``proj_out``.
_MLP = re.compile(r"^((?:.*\.)?(?:mlp|output_hypernetworks_mlps\.\d+|iou_prediction_head|"
                  r"pred_obj_score_head|object_pointer_proj))\.layers\.(\d+)\.")  # fmt: skip
#: Meta's mask downsampler (``encoder.{3i}`` conv, ``{3i+1}`` norm, the last a 1x1 conv).
_DOWN = re.compile(r"^(memory_encoder\.mask_downsampler\.)encoder\.(\d+)\.")


def is_sam2(keys: Collection[str]) -> bool:
    """Whether Meta's names are SAM 2's."""
    return any(k.startswith(SAM2_MARK) for k in keys)


def _renamed(keys: Collection[str]) -> dict[str, str]:
    """Meta name -> the name after :data:`_RULES` (MLPs and downsampler not yet split)."""
    out = {}
    for key in keys:
        name = key
        for pattern, replacement in _RULES:
            name = re.sub(pattern, replacement, name)
        out[key] = name
    return out


def _split(name: str, depths: Mapping[str, int], last_down: int) -> str:
    """The ``Sam2VideoModel`` name of a renamed key: MLP layers and downsampler indices."""
    mlp = _MLP.match(name)
    if mlp:
        prefix, j, n = mlp[1], int(mlp[2]), depths[mlp[1]]
        part = "proj_in" if j == 0 else "proj_out" if j == n - 1 else f"layers.{j - 1}"
        return f"{prefix}.{part}.{name[mlp.end() :]}"
    down = _DOWN.match(name)
    if down:
        j = int(down[2])
        part = "final_conv" if j == last_down else f"layers.{j // 3}." + (
            "conv" if j % 3 == 0 else "layer_norm")  # fmt: skip
        return f"{down[1]}{part}.{name[down.end() :]}"
    return name


def sam2_names(keys: Collection[str]) -> dict[str, str]:
    """Meta name -> ``Sam2VideoModel`` name (``FOURIER`` -> the first of :data:`TIED`;
    the point embeddings keep Meta's names: :func:`sam2_state` concatenates them)."""
    renamed = {k: v for k, v in _renamed(keys).items() if not _POINT.match(k)}
    depths: dict[str, int] = {}
    downs = [-1]
    for name in renamed.values():
        mlp, down = _MLP.match(name), _DOWN.match(name)
        if mlp:
            depths[mlp[1]] = max(depths.get(mlp[1], 0), int(mlp[2]) + 1)
        if down:
            downs.append(int(down[2]))
    out = {k: _split(v, depths, max(downs)) for k, v in renamed.items()}
    if FOURIER in out:
        out[FOURIER] = TIED[0]
    return out


def sam2_state(
    tensors: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], where: Path
) -> dict[str, torch.Tensor]:
    """Meta's SAM 2 tensors under transformers' names, each of ``expected``'s keys (name ->
    shape) filled exactly once with its shape and none of ``tensors`` left over.

    Raises:
        CheckpointError: a few missing, unexpected (Meta's names), doubled or mis-shaped keys.
    """
    out: dict[str, torch.Tensor] = {}
    unexpected, doubled = [], []
    for key, name in sam2_names(list(tensors)).items():
        if name not in expected or name == TIED[1]:
            unexpected.append(key)
        elif name in out:
            doubled.append(key)
        else:
            out[name] = tensors[key].detach().to(torch.float32).clone()
    points = sorted((int(m[1]), k) for k in tensors if (m := _POINT.match(k)))
    if [j for j, _ in points] == list(range(len(points))) and points:
        out["prompt_encoder.point_embed.weight"] = torch.cat(
            [tensors[k].detach().to(torch.float32) for _, k in points]
        )
    else:
        unexpected += [k for _, k in points]
    return finish_mapping(out, expected, TIED, (unexpected, doubled), where, "SAM 2")


def _stages(shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Blocks per Hiera stage: a stage's first block (after the first) projects to its width."""
    block = re.compile(r"^image_encoder\.trunk\.blocks\.(\d+)\.(proj\.)?")
    found = [(int(m[1]), bool(m[2])) for k in shapes if (m := block.match(k))]
    if not found:
        return ()
    starts = sorted({0} | {j for j, proj in found if proj})
    ends = [*starts[1:], max(j for j, _ in found) + 1]
    return tuple(e - s for s, e in zip(starts, ends, strict=True))


def infer_sam2_variant(shapes: Mapping[str, tuple[int, ...]], where: Path) -> str:
    """``hiera_t``/``_s``/``_b+``/``_l`` from Meta's tensor shapes (name -> shape).

    Raises:
        CheckpointError: no Hiera patch embedding, or a trunk none of the four.
    """
    if PATCH_KEY not in shapes:
        raise CheckpointError(
            f"{where}: a SAM 2 file without its Hiera patch embedding ({PATCH_KEY}); "
            "re-download the original checkpoint"
        )
    trunk = (shapes[PATCH_KEY][0], _stages(shapes))
    found = [name for name, (sig, _) in SAM2_PRESETS.items() if sig == trunk]
    if not found:
        raise CheckpointError(
            f"{where}: a Hiera trunk {trunk[0]} wide with {list(trunk[1])} blocks per stage, "
            "none of SAM 2's tiny/small/base+/large; give --sam-config CONFIG.json (a "
            "transformers Sam2VideoConfig) for this model"
        )
    return found[0]


def _check_preset(shapes: Mapping[str, tuple[int, ...]], choice: str, where: Path) -> None:
    """Refuse a file whose Hiera trunk is none of SAM 2's presets when the user named one.

    The user said which model the file is; asking them for a config JSON instead
    would answer another question. A trunk that is another preset is left to the caller.

    Raises:
        CheckpointError: no patch embedding, or a trunk that is no preset.
    """
    want = SAM2_PRESETS[choice][0]
    if PATCH_KEY not in shapes:
        raise CheckpointError(
            f"{where}: not a complete SAM 2 checkpoint (no {PATCH_KEY}), so not SAM 2 "
            f"{choice}; re-download Meta's original .pt"
        )
    trunk = (shapes[PATCH_KEY][0], _stages(shapes))
    if not trunk[1]:
        raise CheckpointError(
            f"{where}: not a complete SAM 2 checkpoint (its Hiera trunk has no blocks), so "
            f"not SAM 2 {choice}; re-download Meta's original .pt"
        )
    if trunk != want and all(sig != trunk for sig, _ in SAM2_PRESETS.values()):
        raise CheckpointError(
            f"{where}: a Hiera trunk {trunk[0]} wide with {list(trunk[1])} blocks per stage, "
            f"not SAM 2 {choice}'s ({want[0]} wide, {list(want[1])}) nor another preset's; "
            "give this model's transformers Sam2VideoConfig JSON as --sam-config"
        )


def _config(read: StateDict, opts: ImportOptions, video: bool) -> Any:
    """The file's ``Sam2VideoConfig`` (``video``) or ``Sam2Config``: ``--sam-config``'s
    preset or JSON, else the preset told by shape."""
    t, where, choice = transformers_module(), read.path, opts.sam_config
    cls = t.Sam2VideoConfig if video else t.Sam2Config
    if choice is not None and choice not in SAM2_PRESETS:
        if not Path(choice).is_file():
            raise GeosegError(
                f"--sam-config {choice}: {where} is a SAM 2 checkpoint; give hiera_t, hiera_s, "
                "hiera_b+, hiera_l or a transformers Sam2VideoConfig JSON file"
            )
        config = read_folder_json(Path(choice), required=True)
        if config.get("model_type") not in (IMAGE_TYPE, VIDEO_TYPE):  # save_pretrained's
            raise CheckpointError(
                f"{choice}: a {config.get('model_type')!r} config, and {where} is a SAM 2 "
                "checkpoint; give a transformers Sam2VideoConfig JSON (model_type sam2_video) "
                "or leave --sam-config out"
            )
        try:
            return cls.from_dict({k: v for k, v in config.items() if k != "model_type"})
        except Exception as exc:  # transformers' config errors are untyped
            raise CheckpointError(f"{choice}: not a transformers SAM 2 config ({exc})") from exc
    shapes = {k: tuple(v.shape) for k, v in read.tensors.items()}
    if choice is not None:
        _check_preset(shapes, choice, where)
    inferred = infer_sam2_variant(shapes, where)
    if choice is not None and choice != inferred:
        raise CheckpointError(
            f"{where}: --sam-config {choice}, and the file's trunk is {inferred}; give the "
            "file's model or leave --sam-config out"
        )
    vision = dict(SAM2_PRESETS[inferred][1])
    if not video:
        return cls(vision_config=vision)
    return cls(vision_config=vision,
               enable_occlusion_spatial_embedding="no_obj_embed_spatial" in shapes,
               enable_temporal_pos_encoding_for_object_pointers="obj_ptr_tpos_proj.weight"
               in shapes)  # fmt: skip


def import_sam2_pth(read: StateDict, opts: ImportOptions) -> tuple[dict[str, torch.Tensor], Any]:
    """The tensors and metadata (``ModelMeta``) of Meta's SAM 2 / 2.1 checkpoint ``read``
    (options already checked against SAM), the form of a transformers folder's import.

    Raises:
        GeosegError: a ``--sam-config`` that is not SAM 2's.
        CheckpointError: a trunk of no known size, tensors that do not fit the model exactly.
    """
    video = any(k.startswith("memory_attention.") for k in read.tensors)
    config = _config(read, opts, video)
    as_dict = config.to_dict()
    check_window(opts, as_dict, "SAM 2")
    kind = sam_kind(VIDEO_TYPE if video else IMAGE_TYPE)
    with torch.device("meta"):  # names and shapes only: no memory for Hiera-L's weights
        expected = {k: tuple(v.shape) for k, v in kind.model_class(config).state_dict().items()}
    state = sam2_state(read.tensors, expected, read.path)
    provenance = {"format": "sam2 .pt", "sha256": read.sha256}
    return sam_checkpoint(read.path, opts, kind, as_dict, state, SAM_PREPROCESSOR, provenance)
