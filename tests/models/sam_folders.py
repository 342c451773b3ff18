"""A tiny random transformers ``SamModel`` folder for the tests (no hub, ~190 k parameters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: A 2-layer ViT at 256 px (embeddings 32 x 16 x 16, masks 64 x 64 before upsampling).
TINY_SAM: dict[str, Any] = {
    "vision_config": {
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 128,
        "image_size": 256, "patch_size": 16, "output_channels": 32, "window_size": 4,
        "global_attn_indexes": [1], "num_pos_feats": 16,
    },
    "prompt_encoder_config": {"hidden_size": 32, "image_size": 256, "patch_size": 16,
                              "mask_input_channels": 4},
    "mask_decoder_config": {"hidden_size": 32, "mlp_dim": 64, "num_hidden_layers": 2,
                            "num_attention_heads": 2, "iou_head_hidden_dim": 32},
}  # fmt: skip


def sam_folder(folder: Path, seed: int = 0, processor: bool = False) -> Path:
    """``save_pretrained`` a random :data:`TINY_SAM` into ``folder`` (with ``processor``:
    a ``preprocessor_config.json`` from ``SamProcessor``'s image processor)."""
    from transformers import SamConfig, SamImageProcessor, SamModel

    torch.manual_seed(seed)
    SamModel(SamConfig(**TINY_SAM)).save_pretrained(folder)
    if processor:
        SamImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.2, 0.2]).save_pretrained(
            folder
        )
    return folder


def imported_sam(root: Path, scale: float | None = None) -> str:
    """A :func:`sam_folder` in ``root/folder`` imported as ``root/sam.safetensors`` (bands
    R, G, B; ``scale`` as ``geoseg import --scale``)."""
    from geoseg.pipelines.importing import ImportOptions, import_model

    opts = ImportOptions(("R", "G", "B"), scale=scale)
    return str(import_model(sam_folder(root / "folder"), root / "sam.safetensors", opts).output)


def fake_decode(monkeypatch: Any, decode: Any) -> None:
    """Replace SAM's decoder with ``decode`` (``SamPrompter.decode``'s signature: one window);
    ``decode_windows``, the batched call ``geoseg prompt`` makes, runs it window by window."""
    import numpy as np

    from geoseg.models.sam import Decoded, SamPrompter

    def decode_windows(self: SamPrompter, embeddings: Any, points: Any = None, labels: Any = None,
                       boxes: Any = None, keep: str = "best") -> Decoded:  # fmt: skip
        outs = [decode(self, e, *(None if a is None else a[b] for a in (points, labels, boxes)),
                       keep=keep) for b, e in enumerate(embeddings)]  # fmt: skip
        return Decoded(np.stack([o.logits for o in outs]), np.stack([o.scores for o in outs]))

    monkeypatch.setattr(SamPrompter, "decode", decode)
    monkeypatch.setattr(SamPrompter, "decode_windows", decode_windows)
