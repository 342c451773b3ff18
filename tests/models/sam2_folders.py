"""Tiny random transformers SAM 2 folders for the tests (no hub): image and video models.

A 5-block Hiera at 128 px (features 32/16/8 px, embeddings 128 x 8 x 8), one
memory-attention layer and three memory slots: a few seconds per window on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: Input side of the tiny models in px.
TINY_SIDE = 128
_HIDDEN = 128  # the object pointers are split into 64-channel memory tokens: > 64

_BACKBONE = {
    "model_type": "sam2_hiera_det_model", "hidden_size": 8, "embed_dim_per_stage": [8, 16, 32, 64],
    "num_attention_heads_per_stage": [1, 1, 2, 2], "blocks_per_stage": [1, 1, 2, 1],
    "global_attention_blocks": [3], "window_size_per_stage": [4, 4, 4, 4],
    "window_positional_embedding_background_size": [2, 2], "image_size": [TINY_SIDE, TINY_SIDE],
}  # fmt: skip
#: The sub-configs an image ``Sam2Config`` takes.
TINY_SAM2: dict[str, Any] = {
    "vision_config": {
        "backbone_config": _BACKBONE, "backbone_channel_list": [64, 32, 16, 8],
        "backbone_feature_sizes": [[TINY_SIDE // s] * 2 for s in (4, 8, 16)],
        "fpn_hidden_size": _HIDDEN,
    },
    "prompt_encoder_config": {"hidden_size": _HIDDEN, "image_size": TINY_SIDE, "patch_size": 16},
    "mask_decoder_config": {"hidden_size": _HIDDEN, "mlp_dim": 64, "num_attention_heads": 2,
                            "iou_head_hidden_dim": 32},
}  # fmt: skip
#: ``Sam2VideoConfig``: the image parts plus a small memory.
TINY_SAM2_VIDEO: dict[str, Any] = {
    **TINY_SAM2, "image_size": TINY_SIDE, "num_maskmem": 3,
    "memory_attention_hidden_size": _HIDDEN, "memory_attention_num_layers": 1,
    "memory_attention_feed_forward_hidden_size": 64,
    "memory_attention_rope_feat_sizes": [TINY_SIDE // 16] * 2,
    "memory_encoder_hidden_size": _HIDDEN,
    "mask_downsampler_embed_dim": _HIDDEN, "memory_fuser_embed_dim": _HIDDEN,
    "memory_fuser_intermediate_dim": 64,
}  # fmt: skip


def sam2_folder(folder: Path, video: bool = True, seed: int = 0) -> Path:
    """``save_pretrained`` a random tiny ``Sam2VideoModel`` (``video``) or ``Sam2Model``."""
    import transformers

    torch.manual_seed(seed)
    if video:
        config = transformers.Sam2VideoConfig(**TINY_SAM2_VIDEO)
        transformers.Sam2VideoModel(config).save_pretrained(folder)
    else:
        transformers.Sam2Model(transformers.Sam2Config(**TINY_SAM2)).save_pretrained(folder)
    return folder
