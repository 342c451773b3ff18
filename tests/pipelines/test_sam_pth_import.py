"""``geoseg import model.pth``: segment-anything's own checkpoints (Meta's names) -> a prompt
checkpoint of the same form as a transformers folder's import."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import CheckpointError, GeosegError
from geoseg.io.checkpoint import load_checkpoint
from geoseg.pipelines.importing import ImportOptions, import_model
from geoseg.pipelines.sam_pth import SAM_PRESETS, infer_variant, map_state
from tests.conftest import textured_scene, write_raster
from tests.models.sam_folders import TINY_SAM, sam_folder

#: transformers name -> Meta's, written here independently of the importer's rules (the
#: conversion's inverse), so a wrong rule there shows as a mismatch.
_TO_META: tuple[tuple[str, str], ...] = (
    (r"^shared_image_embedding\.positional_embedding$",
     "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^vision_encoder\.layers\.", "vision_encoder.blocks."),
    (r"^vision_encoder\.", "image_encoder."),
    (r"patch_embed\.projection", "patch_embed.proj"),
    (r"neck\.conv1", "neck.0"), (r"neck\.layer_norm1", "neck.1"),
    (r"neck\.conv2", "neck.2"), (r"neck\.layer_norm2", "neck.3"),
    (r"mask_embed\.conv1", "mask_downscaling.0"),
    (r"mask_embed\.layer_norm1", "mask_downscaling.1"),
    (r"mask_embed\.conv2", "mask_downscaling.3"),
    (r"mask_embed\.layer_norm2", "mask_downscaling.4"),
    (r"mask_embed\.conv3", "mask_downscaling.6"),
    (r"upscale_conv1", "output_upscaling.0"), (r"upscale_layer_norm", "output_upscaling.1"),
    (r"upscale_conv2", "output_upscaling.3"),
    (r"layer_norm_final_attn", "norm_final_attn"), (r"\.layer_norm(\d)\.", r".norm\1."),
    (r"\.point_embed\.(\d)", r".point_embeddings.\1"),
    (r"\.proj_in\.", ".layers.0."), (r"\.proj_out\.", ".layers.2."),
)  # fmt: skip


def meta_name(key: str) -> str | None:
    """Meta's name of a ``SamModel`` key (None: the tied copy Meta does not store)."""
    if key == "prompt_encoder.shared_embedding.positional_embedding":
        return None
    mlp = re.match(r"^(.*(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.0\.", key)
    if mlp:  # the middle layer of a 3-layer MLP
        return f"{mlp[1]}.layers.1.{key[mlp.end() :]}"
    for pattern, replacement in _TO_META:
        key = re.sub(pattern, replacement, key)
    return key


def meta_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {meta_name(k): v for k, v in state.items()}
    return {k: v for k, v in out.items() if k is not None}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny SAM as a folder and as Meta's .pth, each imported; its config as JSON."""
    from transformers import SamModel

    root = tmp_path_factory.mktemp("sampth")
    folder = sam_folder(root / "folder")
    state = SamModel.from_pretrained(folder).state_dict()
    pth = root / "sam_tiny.pth"
    torch.save(meta_state(state), pth)
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY_SAM))
    opts = ImportOptions(("R", "G", "B"))
    hf = import_model(folder, root / "hf.safetensors", opts).output
    own = import_model(pth, root / "pth.safetensors", ImportOptions(
        ("R", "G", "B"), sam_config=str(config))).output  # fmt: skip
    return {"state": state, "pth": pth, "config": config, "hf": hf, "own": own, "root": root}


def test_every_tensor_of_the_pth_import_is_the_models(models: dict[str, Any]) -> None:
    tensors, meta = load_checkpoint(models["own"])
    state = models["state"]
    assert set(tensors) == set(state) and len(state) == 175
    assert all(torch.equal(tensors[k], state[k]) for k in state)
    _, hf_meta = load_checkpoint(models["hf"])
    assert (meta.arch, meta.encoder, meta.window, meta.task) == ("sam", "SamModel", 256, "prompt")
    assert meta.normalization == hf_meta.normalization
    assert meta.provenance["format"] == "segment-anything .pth"


def test_prompt_gives_the_same_masks_as_the_folder_import(
    models: dict[str, Any], tmp_path: Path
) -> None:
    data = (textured_scene(300, 320, 3) // 16).astype(np.uint8)
    scene = write_raster(tmp_path / "scene.tif", data, descriptions=("R", "G", "B"))
    with rasterio.open(scene) as src:
        x, y = src.xy(150, 160)
    outs = []
    for name in ("hf", "own"):
        out = tmp_path / f"{name}.tif"
        result = CliRunner().invoke(cli, ["prompt", str(scene), "-m", str(models[name]),
                                          "--point", f"{x},{y}", "-o", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output
        with rasterio.open(out) as src:
            outs.append(src.read())
    assert outs[0][1].max() == 1  # the prompted object is there
    np.testing.assert_array_equal(outs[0], outs[1])


def _edit(
    edit: Callable[[dict[str, torch.Tensor]], Any], replace: bool = False
) -> Callable[[dict[str, Any], Path], Path]:
    """Save the tiny SAM's Meta state dict after ``edit`` (``replace``: save what it returns)."""

    def write(models: dict[str, Any], path: Path) -> Path:
        state = meta_state(models["state"])
        obj = edit(state)
        torch.save(obj if replace else state, path)
        return path

    return write


class Hostile:
    """A class a pickle names: weights_only must refuse to build it."""


#: case -> (write the .pth, a fragment of the one-line refusal)
HOSTILE: dict[str, tuple[Callable[[dict[str, Any], Path], Path], str]] = {
    "missing-key": (_edit(lambda s: s.pop("mask_decoder.iou_token.weight")),
                    "missing ['mask_decoder.iou_token.weight']"),
    "extra-key": (_edit(lambda s: s.update({"image_encoder.extra.weight": torch.zeros(2)})),
                  "unexpected ['image_encoder.extra.weight']"),
    "wrong-shape": (_edit(lambda s: s.update({"mask_decoder.iou_token.weight":
                                              torch.zeros(2, 32)})),
                    "wrong shape ['mask_decoder.iou_token.weight (2, 32) not (1, 32)']"),
    "custom-class": (_edit(lambda s: {"model": s, "hostile": Hostile()}, True),
                     "a Python pickle that needs code to load"),
    "sam2-pth": (_edit(lambda s: {"model": {"image_encoder.trunk.patch_embed.proj.weight":
                                            torch.zeros(2), "sam_mask_decoder.iou_token.weight":
                                            torch.zeros(2)}}, True),
                 "a None config, and"),  # a SamConfig JSON for a SAM 2 file
    "plain-tensor": (_edit(lambda s: torch.zeros(3), True), "holds no state dict (found Tensor)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_pth_is_refused_in_one_line_and_nothing_written(
    models: dict[str, Any], tmp_path: Path, case: str
) -> None:
    write, fragment = HOSTILE[case]
    pth = write(models, tmp_path / "bad.pth")
    out = tmp_path / "out.safetensors"
    args = ["import", str(pth), "-o", str(out), "--bands", "R,G,B",
            "--sam-config", str(models["config"])]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and str(pth) in lines[0], result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [pth]


def _meta_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """Meta's names and shapes of a full-size preset (built on the meta device: no memory)."""
    from transformers import SamConfig, SamModel

    with torch.device("meta"):
        model = SamModel(SamConfig(vision_config=dict(SAM_PRESETS[variant])))
    return {k: tuple(v.shape) for k, v in meta_state(model.state_dict()).items()}


@pytest.mark.parametrize(
    ("variant", "width", "blocks"), [("vit_b", 768, 12), ("vit_l", 1024, 24), ("vit_h", 1280, 32)]
)
def test_the_variant_is_told_by_shape_and_its_names_map_exactly(
    variant: str, width: int, blocks: int
) -> None:
    from transformers import SamConfig, SamModel

    shapes = _meta_shapes(variant)
    assert shapes["image_encoder.patch_embed.proj.weight"] == (width, 3, 16, 16)
    assert infer_variant(shapes, Path("sam.pth")) == variant
    with torch.device("meta"):
        expected = SamModel(SamConfig(vision_config=dict(SAM_PRESETS[variant]))).state_dict()
        fake = {k: torch.empty(s) for k, s in shapes.items()}
    mapped = map_state(fake, {k: tuple(v.shape) for k, v in expected.items()}, Path("sam.pth"))
    assert set(mapped) == set(expected)
    assert sum(k.endswith("attn.rel_pos_h") and v.shape[0] == 127 for k, v in mapped.items()) == 4
    assert (
        len({k.split(".")[2] for k in mapped if k.startswith("vision_encoder.layers.")}) == blocks
    )


def test_another_width_and_a_wrong_preset_are_refused(
    models: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match="64 wide, none of ViT-B/L/H"):
        import_model(models["pth"], tmp_path / "a.safetensors", ImportOptions(("R", "G", "B")))
    with pytest.raises(CheckpointError, match="--sam-config vit_l is 1024 wide, the file's patch "
                       "embedding 768"):  # fmt: skip
        infer = {"image_encoder.patch_embed.proj.weight": torch.empty(768, 3, 16, 16)}
        torch.save(infer, tmp_path / "b.pth")
        import_model(tmp_path / "b.pth", tmp_path / "b.safetensors",
                     ImportOptions(("R", "G", "B"), sam_config="vit_l"))  # fmt: skip
    assert not list(tmp_path.glob("*.safetensors"))


def test_the_files_own_pixel_statistics_are_its_normalisation(
    models: dict[str, Any], tmp_path: Path
) -> None:
    state = meta_state(models["state"])
    state["pixel_mean"] = torch.tensor([102.0, 51.0, 25.5]).view(3, 1, 1)
    state["pixel_std"] = torch.tensor([51.0, 51.0, 25.5]).view(3, 1, 1)
    torch.save(state, tmp_path / "stats.pth")
    opts = ImportOptions(("R", "G", "B"), sam_config=str(models["config"]))
    meta = import_model(tmp_path / "stats.pth", tmp_path / "s.safetensors", opts).meta
    assert meta.normalization.mean == pytest.approx((0.4, 0.2, 0.1))
    assert meta.normalization.std == pytest.approx((0.2, 0.2, 0.1))
    assert meta.normalization.scale == pytest.approx(1 / 255)


def test_sam_config_is_refused_for_a_folder(models: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(GeosegError, match=r"--sam-config applies to SAM \.pth checkpoints"):
        import_model(models["root"] / "folder", tmp_path / "f.safetensors",
                     ImportOptions(("R", "G", "B"), sam_config="vit_b"))  # fmt: skip
    assert not (tmp_path / "f.safetensors").exists()
