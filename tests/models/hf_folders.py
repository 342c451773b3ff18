"""Tiny Hugging Face transformers model folders for the tests (random weights, no hub).

Configs are plain ``config.json`` dicts (``transformers`` fills in the rest), so
the family contract test can name one without importing ``transformers``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

#: A 2-stage SegFormer (~7 k parameters, output stride 8).
SEGFORMER: dict[str, Any] = {
    "model_type": "segformer", "num_channels": 3, "num_encoder_blocks": 2, "depths": [1, 1],
    "sr_ratios": [2, 1], "hidden_sizes": [8, 16], "patch_sizes": [7, 3], "strides": [4, 2],
    "num_attention_heads": [1, 1], "mlp_ratios": [2, 2], "decoder_hidden_size": 16,
}  # fmt: skip
_SWIN: dict[str, Any] = {
    "model_type": "swin", "image_size": 64, "patch_size": 4, "num_channels": 3,
    "embed_dim": 32, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 2,
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}  # fmt: skip
#: A Mask2Former on a 4-stage Swin with 5 queries (~1.3 M parameters).
MASK2FORMER: dict[str, Any] = {
    "model_type": "mask2former", "backbone_config": _SWIN, "hidden_dim": 32, "feature_size": 32,
    "mask_feature_size": 32, "encoder_layers": 1, "decoder_layers": 2, "num_queries": 5,
    "encoder_feedforward_dim": 32, "dim_feedforward": 32, "num_attention_heads": 2,
}  # fmt: skip
#: ``ModelMeta.options`` of a geoseg-trained Mask2Former (``--arch mask2former``) of
#: ~0.2 M parameters: a 4-stage ResNet of 16-64 channels, 8 queries, 2 decoder layers.
MASK2FORMER_TRAINED: dict[str, Any] = {
    "backbone_config": {"model_type": "resnet", "embedding_size": 16, "layer_type": "basic",
                        "hidden_sizes": [16, 32, 64, 64], "depths": [1, 1, 1, 1],
                        "out_features": ["stage1", "stage2", "stage3", "stage4"]},
    "hidden_dim": 32, "feature_size": 32, "mask_feature_size": 32, "encoder_layers": 1,
    "decoder_layers": 2, "num_queries": 8, "encoder_feedforward_dim": 32,
    "dim_feedforward": 32, "num_attention_heads": 2, "train_num_points": 1024,
}  # fmt: skip
#: A MaskFormer (Swin + one-layer DETR decoder, 5 queries).
MASKFORMER: dict[str, Any] = {
    "model_type": "maskformer", "backbone_config": {**_SWIN, "embed_dim": 16},
    "fpn_feature_size": 32, "mask_feature_size": 32, "num_queries": 5,
    "decoder_config": {"model_type": "detr", "d_model": 32, "encoder_layers": 1,
                       "decoder_layers": 1, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
                       "encoder_attention_heads": 2, "decoder_attention_heads": 2,
                       "num_queries": 5},
}  # fmt: skip
#: A OneFormer on the Swin (5 queries, 12 task tokens, ~1.3 M parameters).
ONEFORMER: dict[str, Any] = {
    "model_type": "oneformer", "backbone_config": _SWIN, "hidden_dim": 32, "conv_dim": 32,
    "mask_dim": 32, "encoder_layers": 1, "decoder_layers": 2, "num_queries": 5,
    "encoder_feedforward_dim": 32, "dim_feedforward": 32, "num_attention_heads": 2,
    "task_seq_len": 12, "query_dec_layers": 1, "text_encoder_width": 32,
    "text_encoder_context_length": 12, "text_encoder_num_layers": 1,
}  # fmt: skip
#: The words of OneFormer's task texts ("the task is semantic", ...).
TASK_WORDS = ("the", "task", "is", "semantic", "instance", "panoptic")

#: A UperNet on a 4-stage ConvNeXt.
UPERNET: dict[str, Any] = {
    "model_type": "upernet", "hidden_size": 16, "use_auxiliary_head": False,
    "backbone_config": {"model_type": "convnext", "num_channels": 3, "depths": [1, 1, 1, 1],
                        "hidden_sizes": [8, 16, 32, 64],
                        "out_features": ["stage1", "stage2", "stage3", "stage4"]},
}  # fmt: skip
#: A DPT on a 4-layer ViT with 16 px patches.
DPT: dict[str, Any] = {
    "model_type": "dpt", "hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2,
    "intermediate_size": 32, "image_size": 64, "patch_size": 16,
    "neck_hidden_sizes": [8, 8, 16, 16], "fusion_hidden_size": 16,
    "backbone_out_indices": [0, 1, 2, 3], "use_auxiliary_head": False,
}  # fmt: skip

#: What the tiny folders' preprocessor_config.json says (ImageNet statistics, 8-bit input).
PREPROCESSOR = {
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    "rescale_factor": 1 / 255, "do_rescale": True, "do_normalize": True,
    "size": {"height": 64, "width": 64},
}  # fmt: skip


def labelled(config: dict[str, Any], names: list[str], channels: int = 3) -> dict[str, Any]:
    """``config`` with ``names`` as its classes and ``channels`` input bands."""
    out = json.loads(json.dumps(config))
    out["id2label"] = {str(k): n for k, n in enumerate(names)}
    out["label2id"] = {n: k for k, n in enumerate(names)}
    out["num_channels"] = channels
    if "backbone_config" in out:
        out["backbone_config"]["num_channels"] = channels
    return out


def hf_model(config: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """The randomly initialised transformers model of ``config``, in eval mode.

    Matrices are redrawn with std 0.2 (transformers initialises with 0.02), so a
    tiny model's class maps and confidences are not flat.
    """
    from geoseg.models.hf import HF_MODELS, hf_config, transformers_module

    torch.manual_seed(seed)
    cls = getattr(transformers_module(), HF_MODELS[config["model_type"]].model)
    model = cls(hf_config(config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.2)
    return model  # type: ignore[no-any-return]


def clip_tokenizer(folder: Path, files: str = "tokenizer.json") -> None:
    """A tiny CLIP BPE tokenizer of :data:`TASK_WORDS` saved into ``folder``.

    ``files``: ``tokenizer.json`` (``save_pretrained``) or ``vocab.json`` (the
    ``vocab.json`` + ``merges.txt`` pair of older folders).
    """
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    merges: list[tuple[str, str]] = []
    for word in TASK_WORDS:  # each word merged left to right from its letters
        parts = [*word[:-1], word[-1] + "</w>"]
        joined = parts[0]
        for part in parts:
            vocab.setdefault(part, len(vocab))
        for part in parts[1:]:
            if (joined, part) not in merges:
                merges.append((joined, part))
            joined += part
            vocab.setdefault(joined, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    if files == "vocab.json":
        (folder / "vocab.json").write_text(json.dumps(vocab))
        text = "".join(f"{a} {b}\n" for a, b in merges)
        (folder / "merges.txt").write_text(f"#version: 0.2\n{text}")
    else:
        CLIPTokenizer(vocab=vocab, merges=merges).save_pretrained(folder)


def model_folder(
    folder: Path, config: dict[str, Any], names: list[str], preprocessor: bool = True
) -> tuple[Path, torch.nn.Module]:
    """``save_pretrained`` a tiny model of ``config`` with classes ``names`` into ``folder``
    (a OneFormer with its tokenizer, :func:`clip_tokenizer`)."""
    model = hf_model(labelled(config, names))
    model.save_pretrained(folder)
    if preprocessor:
        (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    if config["model_type"] == "oneformer":
        clip_tokenizer(folder)
    return folder, model
