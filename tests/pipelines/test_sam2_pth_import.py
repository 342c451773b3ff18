"""``geoseg import sam2.1_hiera_*.pt``: Meta's own SAM 2 checkpoints (``{"model": state_dict}``
in Meta's names) -> a prompt checkpoint of the same form as a transformers folder's import."""

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
from geoseg.io.checkpoint import load_checkpoint
from geoseg.pipelines.importing import ImportOptions, import_model
from geoseg.pipelines.sam2_pth import SAM2_PRESETS, infer_sam2_variant, sam2_state
from tests.conftest import textured_scene, write_raster
from tests.models.sam2_folders import sam2_folder
from tests.models.sam_folders import sam_folder
from tests.pipelines.test_sam_pth_import import meta_state as sam1_meta_state

#: transformers name -> Meta's, written here independently of the importer's rules (the
#: conversion's inverse), so a wrong rule there shows as a mismatch.
_TO_META: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.backbone\.", "image_encoder.trunk."),
    (r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv."),
    (r"^prompt_encoder\.shared_embedding\.positional_embedding$",
     "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^prompt_encoder\.", "sam_prompt_encoder."), (r"^mask_decoder\.", "sam_mask_decoder."),
    (r"^memory_temporal_positional_encoding$", "maskmem_tpos_enc"),
    (r"^no_memory_embedding$", "no_mem_embed"),
    (r"^no_memory_positional_encoding$", "no_mem_pos_enc"),
    (r"^no_object_pointer$", "no_obj_ptr"),
    (r"^occlusion_spatial_embedding_parameter$", "no_obj_embed_spatial"),
    (r"^temporal_positional_encoding_projection_layer\.", "obj_ptr_tpos_proj."),
    (r"^object_pointer_proj\.", "obj_ptr_proj."),
    (r"^memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"^memory_encoder\.feature_projection\.", "memory_encoder.pix_feat_proj."),
    (r"^memory_encoder\.memory_fuser\.", "memory_encoder.fuser."),
    (r"\.scale$", ".gamma"), (r"\.depthwise_conv\.", ".dwconv."),
    (r"\.pointwise_conv(\d)\.", r".pwconv\1."),
    (r"patch_embed\.projection", "patch_embed.proj"),
    (r"mask_embed\.conv1", "mask_downscaling.0"),
    (r"mask_embed\.layer_norm1", "mask_downscaling.1"),
    (r"mask_embed\.conv2", "mask_downscaling.3"),
    (r"mask_embed\.layer_norm2", "mask_downscaling.4"),
    (r"mask_embed\.conv3", "mask_downscaling.6"),
    (r"upscale_conv1", "output_upscaling.0"), (r"upscale_layer_norm", "output_upscaling.1"),
    (r"upscale_conv2", "output_upscaling.3"),
    (r"layer_norm_final_attn", "norm_final_attn"), (r"\.layer_norm(\d?)\.", r".norm\1."),
    (r"\.o_proj\.", ".out_proj."),
)  # fmt: skip
_HEADS = (
    r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head|"
    r"object_pointer_proj)"
)


def _downsampler(key: str, n: int) -> str:
    """``layers.i.conv`` -> ``encoder.{3i}``, ``layers.i.layer_norm`` -> ``{3i+1}``,
    ``final_conv`` -> ``encoder.{3n}`` (each of Meta's ``n`` stages is conv, norm, GELU)."""
    key = re.sub(r"mask_downsampler\.layers\.(\d+)\.conv\.",
                 lambda m: f"mask_downsampler.encoder.{3 * int(m[1])}.", key)  # fmt: skip
    key = re.sub(r"mask_downsampler\.layers\.(\d+)\.layer_norm\.",
                 lambda m: f"mask_downsampler.encoder.{3 * int(m[1]) + 1}.", key)  # fmt: skip
    return key.replace("mask_downsampler.final_conv.", f"mask_downsampler.encoder.{3 * n}.")


def _mlp(key: str, middle: dict[str, int]) -> str:
    """``proj_in`` -> ``layers.0``, ``layers.k`` -> ``layers.{k+1}``, ``proj_out`` -> the last."""
    head = re.match(rf"^(.*{_HEADS}|.*\.mlp)\.(proj_in|proj_out|layers\.(\d+))\.", key)
    if not head:
        return key
    prefix, part = head[1], head[3]
    j = 0 if part == "proj_in" else middle.get(prefix, 0) + 1 if part == "proj_out" else (
        int(head[4]) + 1)  # fmt: skip
    return f"{prefix}.layers.{j}.{key[head.end() :]}"


def meta_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``Sam2Model`` / ``Sam2VideoModel`` state dict in Meta's names and layout."""
    middle: dict[str, int] = {}
    for key in state:
        m = re.match(rf"^(.*{_HEADS})\.layers\.(\d+)\.", key)
        if m:
            middle[m[1]] = max(middle.get(m[1], 0), int(m[3]) + 1)
    n_down = len({k.split(".")[3] for k in state if ".mask_downsampler.layers." in k})
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "shared_image_embedding.positional_embedding":
            continue  # the tied copy Meta does not store
        if key == "prompt_encoder.point_embed.weight":
            out.update({f"sam_prompt_encoder.point_embeddings.{i}.weight": value[i : i + 1]
                        for i in range(len(value))})  # fmt: skip
            continue
        name = _mlp(_downsampler(key, n_down), middle)
        for pattern, replacement in _TO_META:
            name = re.sub(pattern, replacement, name)
        out[name] = value
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each tiny SAM 2 (video, image) as a folder and as Meta's .pt, each imported."""
    from transformers import Sam2Model, Sam2VideoModel

    root = tmp_path_factory.mktemp("sam2pth")
    out: dict[str, Any] = {"root": root}
    for kind, cls in (("video", Sam2VideoModel), ("image", Sam2Model)):
        folder = sam2_folder(root / kind, video=kind == "video")
        model = cls.from_pretrained(folder)
        # Meta's file holds the Fourier matrix once; a random folder's two copies differ
        with torch.no_grad():
            model.shared_image_embedding.positional_embedding.copy_(
                model.prompt_encoder.shared_embedding.positional_embedding
            )
        model.save_pretrained(folder)
        state = model.state_dict()
        pt = root / f"sam2.1_{kind}.pt"
        torch.save({"model": meta_state(state)}, pt)
        config = str(folder / "config.json")
        hf = import_model(folder, root / f"{kind}_hf.safetensors", ImportOptions(("R", "G", "B")))
        own = import_model(pt, root / f"{kind}_pt.safetensors",
                           ImportOptions(("R", "G", "B"), sam_config=config))  # fmt: skip
        out[kind] = {"state": state, "pt": pt, "config": config, "hf": hf.output, "own": own.output}
    return out


@pytest.mark.parametrize(
    ("kind", "encoder", "count"), [("video", "Sam2VideoModel", 307), ("image", "Sam2Model", 225)]
)
def test_every_tensor_of_the_pt_import_is_the_models(
    models: dict[str, Any], kind: str, encoder: str, count: int
) -> None:
    tensors, meta = load_checkpoint(models[kind]["own"])
    state = models[kind]["state"]
    assert set(tensors) == set(state) and len(state) == count
    assert all(torch.equal(tensors[k], state[k]) for k in state)
    _, hf_meta = load_checkpoint(models[kind]["hf"])
    assert (meta.arch, meta.encoder, meta.window, meta.task) == ("sam2", encoder, 128, "prompt")
    assert meta.normalization == hf_meta.normalization
    assert meta.options["hf_config"]["model_type"] == hf_meta.options["hf_config"]["model_type"]
    assert meta.provenance["format"] == "sam2 .pt"


def _prompt(model: Path, scene: Path, x: float, y: float, out: Path) -> np.ndarray:
    result = CliRunner().invoke(cli, ["prompt", str(scene), "-m", str(model), "--point",
                                      f"{x},{y}", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        return src.read()


@pytest.mark.parametrize("kind", ["video", "image"])
def test_prompt_gives_the_same_masks_as_the_folder_import(
    models: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    data = (textured_scene(160, 180, 3) // 16).astype(np.uint8)
    scene = write_raster(tmp_path / "scene.tif", data, descriptions=("R", "G", "B"))
    with rasterio.open(scene) as src:
        x, y = src.xy(80, 90)
    hf, own = (_prompt(models[kind][k], scene, x, y, tmp_path / f"{k}.tif") for k in ("hf", "own"))
    assert hf[1].max() == 1  # the prompted object is there
    np.testing.assert_array_equal(hf, own)


def test_track_runs_the_pt_import_as_the_folder_import(
    models: dict[str, Any], tmp_path: Path
) -> None:
    import geopandas as gpd
    import shapely

    scenes = []
    for i in range(2):
        data = (textured_scene(120, 140, 3, seed=i) // 16).astype(np.uint8)
        scenes.append(str(write_raster(tmp_path / f"s{i}.tif", data,
                                       descriptions=("R", "G", "B"))))  # fmt: skip
    with rasterio.open(scenes[0]) as src:
        box = shapely.box(*src.xy(70, 30), *src.xy(30, 70))
        crs = src.crs
    layer = tmp_path / "b.gpkg"
    gpd.GeoDataFrame({"name": ["a"]}, geometry=[box], crs=crs).to_file(layer)
    outs = []
    for name in ("hf", "own"):
        out = tmp_path / name
        args = ["track", *scenes, "-m", str(models["video"][name]), "-o", str(out), "--device",
                "cpu", "--boxes", str(layer)]  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        tifs = sorted(out.glob("*.tif"))
        assert len(tifs) == 2
        outs.append([rasterio.open(t).read() for t in tifs])
        outs[-1].append((out / "areas.csv").read_text(encoding="utf-8"))
    for a, b in zip(*outs, strict=True):
        np.testing.assert_array_equal(a, b)


#: Meta's own names (from its ``sam2.1_hiera_t.yaml`` model), one per rule.
REAL_META_NAMES = (
    "maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial",
    "image_encoder.trunk.pos_embed_window", "image_encoder.trunk.patch_embed.proj.weight",
    "image_encoder.trunk.blocks.0.norm1.weight", "image_encoder.trunk.blocks.0.mlp.layers.1.bias",
    "image_encoder.neck.convs.3.conv.weight",
    "mask_downsample.weight", "memory_attention.layers.3.self_attn.out_proj.weight",
    "memory_attention.layers.0.cross_attn_image.k_proj.weight", "memory_attention.norm.bias",
    "memory_attention.layers.0.norm3.weight", "memory_encoder.mask_downsampler.encoder.10.bias",
    "memory_encoder.mask_downsampler.encoder.12.weight", "memory_encoder.pix_feat_proj.weight",
    "memory_encoder.fuser.layers.1.gamma", "memory_encoder.fuser.layers.0.dwconv.weight",
    "memory_encoder.fuser.layers.0.norm.weight", "memory_encoder.fuser.layers.1.pwconv2.bias",
    "memory_encoder.out_proj.weight",
    "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "sam_prompt_encoder.point_embeddings.3.weight", "sam_prompt_encoder.mask_downscaling.6.bias",
    "sam_mask_decoder.transformer.layers.1.mlp.layers.1.weight",
    "sam_mask_decoder.transformer.norm_final_attn.weight",
    "sam_mask_decoder.obj_score_token.weight",
    "sam_mask_decoder.output_upscaling.3.weight", "sam_mask_decoder.conv_s1.weight",
    "sam_mask_decoder.output_hypernetworks_mlps.3.layers.2.bias",
    "sam_mask_decoder.iou_prediction_head.layers.1.weight",
    "sam_mask_decoder.pred_obj_score_head.layers.2.weight", "obj_ptr_proj.layers.2.weight",
    "obj_ptr_tpos_proj.weight",
)  # fmt: skip


@pytest.mark.parametrize(
    ("variant", "width", "stages", "count"),
    [("hiera_t", 96, [1, 2, 7, 2], 471), ("hiera_s", 96, [1, 2, 11, 2], 519),
     ("hiera_b+", 112, [2, 3, 16, 3], 615), ("hiera_l", 144, [2, 6, 36, 4], 903)],
)  # fmt: skip
def test_the_size_is_told_by_shape_and_its_names_map_exactly(
    variant: str, width: int, stages: list[int], count: int
) -> None:
    """``count``: the tensors of Meta's released SAM 2.1 model of that size."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    with torch.device("meta"):
        model = Sam2VideoModel(Sam2VideoConfig(vision_config=dict(SAM2_PRESETS[variant][1])))
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        fake = meta_state({k: torch.empty(s) for k, s in expected.items()})
    assert len(fake) == count and set(REAL_META_NAMES) <= set(fake)
    assert fake["image_encoder.trunk.patch_embed.proj.weight"].shape == (width, 3, 7, 7)
    # a stage's first block projects to its width (Meta's blocks.{first}.proj)
    assert {k for k in fake if re.match(r"image_encoder\.trunk\.blocks\.\d+\.proj\.weight", k)} == {
        f"image_encoder.trunk.blocks.{sum(stages[:i])}.proj.weight" for i in (1, 2, 3)
    }
    assert model.config.vision_config.backbone_config.blocks_per_stage == stages
    assert infer_sam2_variant({k: tuple(v.shape) for k, v in fake.items()}, Path("x.pt")) == variant
    assert set(sam2_state(fake, expected, Path("x.pt"))) == set(expected)


def _edit(
    edit: Callable[[dict[str, torch.Tensor]], Any], replace: bool = False
) -> Callable[[dict[str, Any], Path], Path]:
    """Save the tiny video SAM 2's Meta file after ``edit`` (``replace``: save its return)."""

    def write(models: dict[str, Any], path: Path) -> Path:
        state = meta_state(models["video"]["state"])
        obj = edit(state)
        torch.save(obj if replace else {"model": state}, path)
        return path

    return write


def _sam1(models: dict[str, Any], path: Path) -> Path:
    from transformers import SamModel

    folder = sam_folder(path.parent / "sam1")
    torch.save(sam1_meta_state(SamModel.from_pretrained(folder).state_dict()), path)
    return path


def _truncated(models: dict[str, Any], path: Path) -> Path:
    data = models["video"]["pt"].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _sam1_json(models: dict[str, Any], path: Path) -> Path:
    """A SAM 2 file and, beside it, a SAM (ViT) config for --sam-config."""
    (path.parent / "vit.json").write_text(json.dumps({"model_type": "sam"}))
    return _edit(lambda s: None)(models, path)


#: case -> (write the file, --sam-config (None: the tiny model's), a fragment of the refusal)
HOSTILE: dict[str, tuple[Callable[[dict[str, Any], Path], Path], str | None, str]] = {
    "sam1-with-sam2-preset": (_sam1, "hiera_t", "--sam-config hiera_t is a SAM 2 model, and"),
    "sam1-with-sam2-json": (_sam1, "CONFIG", "a 'sam2_video' config, and"),
    "sam2-with-vit-preset": (_edit(lambda s: None), "vit_b", "--sam-config vit_b: "),
    "sam2-with-vit-json": (_sam1_json, "vit.json", "a 'sam' config, and"),
    "sam2-with-wrong-preset": (_edit(lambda s: None), "hiera_l",
                               "a Hiera trunk 8 wide with [1, 1, 2, 1] blocks per stage, "
                               "not SAM 2 hiera_l's (144 wide, [2, 6, 36, 4])"),
    "truncated": (_truncated, None, "not a PyTorch weights file"),
    "another-model": (_edit(lambda s: {"model": {"backbone.conv1.weight": torch.zeros(8, 3, 3, 3),
                                                 "head.weight": torch.zeros(2, 8)}}, True),
                      None, "not a segment-anything checkpoint"),
    "missing-key": (_edit(lambda s: s.pop("memory_attention.norm.weight")), None,
                    "missing ['memory_attention.layer_norm.weight']"),
    "extra-key": (_edit(lambda s: s.update({"memory_encoder.extra": torch.zeros(2)})), None,
                  "unexpected ['memory_encoder.extra']"),
    "wrong-shape": (_edit(lambda s: s.update({"no_obj_ptr": torch.zeros(1, 3)})), None,
                    "wrong shape ['no_object_pointer (1, 3) not (1, 128)']"),
    "a-point-embedding-short": (
        _edit(lambda s: s.pop("sam_prompt_encoder.point_embeddings.3.weight")), None,
        "wrong shape ['prompt_encoder.point_embed.weight (3, 128) not (4, 128)']"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_pt_is_refused_in_one_line_and_nothing_written(
    models: dict[str, Any], tmp_path: Path, case: str
) -> None:
    write, config, fragment = HOSTILE[case]
    pt = write(models, tmp_path / "bad.pt")
    before = set(tmp_path.rglob("*"))
    out = tmp_path / "out.safetensors"
    given = models["video"]["config"] if config in (None, "CONFIG") else config
    given = str(tmp_path / given) if given.endswith("vit.json") else given
    args = ["import", str(pt), "-o", str(out), "--bands", "R,G,B", "--sam-config", given]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.output
    assert str(pt) in lines[0] or given in lines[0], result.output
    assert not out.exists() and set(tmp_path.rglob("*")) == before
