"""``geoseg import sam_vit_b_01ec64.pth``: segment-anything's own checkpoint -> a prompt checkpoint.

Meta's ``.pth`` files (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``)
are read with ``torch.load(weights_only=True)`` only
(:func:`geoseg.io.state_dicts.read_state_dict`: a pickle that needs any class is
refused, never run). Their names are mapped to transformers' ``SamModel`` ones
(:func:`hf_key`, the rules of transformers' ``convert_sam_to_hf.py``), strictly:
every model tensor is filled exactly once with its shape and no file tensor is left
over, else one error names a few of each and nothing is written. The model is
ViT-B, -L or -H, told by the patch embedding's width (``--sam-config`` names it, or
gives a ``SamConfig`` JSON file for another size); the checkpoint is then written by
the folder import's writer (:func:`geoseg.pipelines.sam_import.sam_checkpoint`), so
both give the same form. SAM 2 / 2.1 files (Meta's ``sam2`` naming) go to
:mod:`geoseg.pipelines.sam2_pth`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from geoseg.errors import CheckpointError, GeosegError
from geoseg.io.state_dicts import StateDict, read_state_dict
from geoseg.models.families.sam import MODEL_TYPE
from geoseg.models.hf import transformers_module
from geoseg.pipelines.hf_import import read_folder_json
from geoseg.pipelines.sam2_pth import SAM2_PRESETS, import_sam2_pth, is_sam2
from geoseg.pipelines.sam_import import (
    DECODER_RULES,
    SAM_PREPROCESSOR,
    check_sam_options,
    check_window,
    finish_mapping,
    sam_checkpoint,
    sam_kind,
)

if TYPE_CHECKING:
    from geoseg.pipelines.importing import ImportOptions

__all__ = [
    "SAM_PRESETS",
    "check_sam_names",
    "hf_key",
    "import_sam_pth",
    "infer_variant",
    "map_state",
]

#: ``SamVisionConfig`` arguments of the three released models (the rest of ``SamConfig``
#: is its defaults), as transformers' conversion script builds them.
SAM_PRESETS: Mapping[str, Mapping[str, Any]] = {
    "vit_b": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "global_attn_indexes": [2, 5, 8, 11]},
    "vit_l": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
              "global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16,
              "global_attn_indexes": [7, 15, 23, 31]},
}  # fmt: skip
#: Meta's patch embedding, whose output width tells the preset.
PATCH_KEY = "image_encoder.patch_embed.proj.weight"
#: transformers holds the prompt encoder's Fourier matrix twice (tied); Meta's file once.
TIED = ("shared_image_embedding.positional_embedding",
        "prompt_encoder.shared_embedding.positional_embedding")  # fmt: skip
#: Meta's un-persisted pixel statistics (0-255 units), kept by some saved files.
PIXEL_STATS = ("pixel_mean", "pixel_std")
#: (pattern, replacement) applied in order to each Meta name.
_RULES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.", "vision_encoder."),
    (r"\.blocks\.(\d+)\.", r".layers.\1."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.neck\.0\.", ".neck.conv1."), (r"\.neck\.1\.", ".neck.layer_norm1."),
    (r"\.neck\.2\.", ".neck.conv2."), (r"\.neck\.3\.", ".neck.layer_norm2."),
    (r"\.norm(\d)\.", r".layer_norm\1."),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"^prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$", TIED[0]),
    (r"\.point_embeddings\.", ".point_embed."),
    *DECODER_RULES,
)  # fmt: skip
#: Meta's MLPs (``layers.0 .. layers.{n-1}``), which transformers splits into
#: ``proj_in``, ``layers.0 .. layers.{n-3}`` and ``proj_out``.
_MLP = re.compile(r"^(.*\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d+)\.")


def hf_key(key: str, depths: Mapping[str, int]) -> str:
    """The ``SamModel`` name of Meta's ``key``; ``depths`` is each MLP's layer count (its
    prefix -> n, from :func:`_mlp_depths`). A name no rule touches is kept (``attn.qkv``,
    ``mlp.lin1``, ``iou_token``, ... are spelled alike)."""
    for pattern, replacement in _RULES:
        key = re.sub(pattern, replacement, key)
    mlp = _MLP.match(key)
    if mlp:
        prefix, j = mlp[1], int(mlp[2])
        n = depths[prefix]
        part = "proj_in" if j == 0 else "proj_out" if j == n - 1 else f"layers.{j - 1}"
        key = f"{prefix}.{part}.{key[mlp.end() :]}"
    return key


def _mlp_depths(keys: list[str]) -> dict[str, int]:
    """Each Meta MLP's prefix (after renaming) -> its number of linear layers."""
    depths: dict[str, int] = {}
    for key in keys:
        renamed = key
        for pattern, replacement in _RULES:
            renamed = re.sub(pattern, replacement, renamed)
        mlp = _MLP.match(renamed)
        if mlp:
            depths[mlp[1]] = max(depths.get(mlp[1], 0), int(mlp[2]) + 1)
    return depths


def check_sam_names(keys: Collection[str], where: Path) -> None:
    """Meta's SAM names: SAM 2 files and files without SAM's patch embedding are refused."""
    if is_sam2(keys):
        raise CheckpointError(
            f"{where}: a SAM 2 checkpoint (Meta's sam2 naming), not SAM's; import it with "
            "geoseg import (geoseg.pipelines.sam2_pth)"
        )
    if PATCH_KEY not in keys:
        shown = sorted(keys)[:3]
        raise CheckpointError(
            f"{where}: not a segment-anything checkpoint (no {PATCH_KEY}; it holds {shown}); "
            "geoseg imports SAM's own .pth files, other models as ONNX or transformers folders"
        )


def infer_variant(shapes: Mapping[str, tuple[int, ...]], where: Path) -> str:
    """``vit_b``/``vit_l``/``vit_h`` from Meta's tensor shapes (name -> shape).

    Raises:
        CheckpointError: a SAM 2 file, no SAM image encoder, or another width.
    """
    check_sam_names(shapes, where)
    width = shapes[PATCH_KEY][0]
    found = [name for name, p in SAM_PRESETS.items() if p["hidden_size"] == width]
    if not found:
        raise CheckpointError(
            f"{where}: a SAM image encoder {width} wide, none of ViT-B/L/H (768/1024/1280); "
            "give --sam-config CONFIG.json (a transformers SamConfig) for this model"
        )
    return found[0]


def _config(tensors: Mapping[str, torch.Tensor], opts: ImportOptions, where: Path) -> Any:
    """The file's ``SamConfig``: ``--sam-config``'s preset or JSON, else the inferred preset."""
    t = transformers_module()
    choice = opts.sam_config
    if choice in SAM2_PRESETS:
        raise GeosegError(
            f"--sam-config {choice} is a SAM 2 model, and {where} is a SAM (ViT) checkpoint; "
            "give vit_b, vit_l, vit_h, a SamConfig JSON file, or leave --sam-config out"
        )
    if choice is not None and choice not in SAM_PRESETS:
        if not Path(choice).is_file():
            raise GeosegError(
                f"--sam-config {choice}: neither vit_b, vit_l, vit_h nor a SamConfig JSON file"
            )
        config = read_folder_json(Path(choice), required=True)
        if config.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise CheckpointError(
                f"{choice}: a {config.get('model_type')!r} config, and {where} is a SAM (ViT) "
                "checkpoint; give a transformers SamConfig JSON or leave --sam-config out"
            )
        try:
            return t.SamConfig.from_dict({**config, "model_type": MODEL_TYPE})
        except Exception as exc:  # transformers' config errors are untyped
            raise CheckpointError(
                f"{choice}: not a transformers SamConfig ({exc}); give vit_b, vit_l, vit_h or "
                "a SamConfig's JSON"
            ) from exc
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if choice is not None and shapes[PATCH_KEY][0] != SAM_PRESETS[choice]["hidden_size"]:
        raise CheckpointError(
            f"{where}: --sam-config {choice} is {SAM_PRESETS[choice]['hidden_size']} wide, the "
            f"file's patch embedding {shapes[PATCH_KEY][0]}; give the file's model or leave "
            "--sam-config out"
        )
    inferred = choice or infer_variant(shapes, where)
    return t.SamConfig(vision_config=dict(SAM_PRESETS[inferred]))


def map_state(
    tensors: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], where: Path
) -> dict[str, torch.Tensor]:
    """Meta's tensors under ``SamModel``'s names, each of ``expected``'s keys (name ->
    shape) filled exactly once with its shape and none of ``tensors`` left over.

    Raises:
        CheckpointError: a few missing, unexpected (Meta's names), doubled or mis-shaped keys.
    """
    keys = [k for k in tensors if k not in PIXEL_STATS]
    depths = _mlp_depths(keys)
    out: dict[str, torch.Tensor] = {}
    unexpected, doubled = [], []
    for key in keys:
        name = hf_key(key, depths)
        if name not in expected or name == TIED[1]:
            unexpected.append(key)
        elif name in out:
            doubled.append(key)
        else:
            out[name] = tensors[key].detach().to(torch.float32).clone()
    return finish_mapping(out, expected, TIED, (unexpected, doubled), where, "SAM")


def _preprocessor(tensors: Mapping[str, torch.Tensor]) -> Mapping[str, Any]:
    """SAM's defaults, or the file's own ``pixel_mean``/``pixel_std`` (0-255) when it has them."""
    if not all(k in tensors for k in PIXEL_STATS):
        return SAM_PREPROCESSOR
    mean, std = (tensors[k].flatten().double() / 255 for k in PIXEL_STATS)
    return {**SAM_PREPROCESSOR, "image_mean": mean.tolist(), "image_std": std.tolist()}


def _read(source: Path, opts: ImportOptions) -> StateDict:
    """The file's tensors (weights_only; pickled classes refused in one line); a file
    torch cannot read, given a SAM 2 preset, is said to be no SAM 2 checkpoint.

    Raises:
        CheckpointError: unreadable, or a pickle that needs code.
    """
    try:
        return read_state_dict(source)
    except CheckpointError as exc:
        if opts.sam_config not in SAM2_PRESETS or "not a PyTorch weights file" not in str(exc):
            raise
        reason = str(exc).removeprefix(f"{source}: ")
        raise CheckpointError(
            f"{source}: not a SAM 2 checkpoint ({reason}); --sam-config {opts.sam_config} "
            "takes Meta's SAM 2 / 2.1 .pt file"
        ) from exc


def import_sam_pth(source: Path, opts: ImportOptions) -> tuple[dict[str, torch.Tensor], Any]:
    """The tensors and metadata (``ModelMeta``) of a segment-anything ``.pth``, checked
    against ``opts``; the same form as :func:`~geoseg.pipelines.sam_import.import_sam_folder`'s.

    Raises:
        GeosegError: options that do not apply to SAM.
        CheckpointError: an unreadable or code-carrying file, a non-SAM file, tensors
            that do not fit the model exactly.
    """
    read = _read(source, opts)
    if read.kind != "torch":
        raise GeosegError(f"{source}: not a torch .pth file; geoseg imports SAM's .pth files")
    if is_sam2(read.tensors):  # Meta's SAM 2 / 2.1 (the same reader, another name map)
        check_sam_options(source, opts)
        return import_sam2_pth(read, opts)
    if opts.sam_config in SAM2_PRESETS and PATCH_KEY not in read.tensors:  # nor SAM (ViT)
        shown = sorted(read.tensors)[:3]
        raise CheckpointError(
            f"{source}: not a SAM 2 checkpoint (no image_encoder.trunk.* tensors; it holds "
            f"{shown}), and --sam-config {opts.sam_config} names a SAM 2 model; give Meta's "
            "SAM 2 / 2.1 .pt file (SAM's own .pth takes vit_b, vit_l, vit_h)"
        )
    check_sam_names(read.tensors, source)  # what the file is, before what the options ask
    check_sam_options(source, opts)
    config = _config(read.tensors, opts, source)
    as_dict = config.to_dict()
    check_window(opts, as_dict, "SAM")
    with torch.device("meta"):  # names and shapes only: no memory for ViT-H's weights
        expected = {k: tuple(v.shape) for k, v in sam_kind(MODEL_TYPE).model_class(config)
                    .state_dict().items()}  # fmt: skip
    state = map_state(read.tensors, expected, source)
    provenance = {"format": "segment-anything .pth", "sha256": read.sha256}
    return sam_checkpoint(
        source, opts, sam_kind(MODEL_TYPE), as_dict, state, _preprocessor(read.tensors), provenance
    )
