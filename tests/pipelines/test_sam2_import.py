"""``geoseg import`` of transformers SAM 2 folders (``Sam2Model``, ``Sam2VideoModel``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from geoseg.cli import cli
from geoseg.io.checkpoint import load_checkpoint
from geoseg.models.registry import checkpoint_family
from geoseg.models.sam2 import Sam2Prompter, load_sam2
from geoseg.pipelines.importing import ImportOptions, import_model, source_kind
from geoseg.pipelines.sam_import import SAM2_PATCH_LAYER
from tests.conftest import textured_scene, write_raster
from tests.models.sam2_folders import sam2_folder


@pytest.mark.parametrize(
    ("video", "encoder"), [(True, "Sam2VideoModel"), (False, "Sam2Model")], ids=["video", "image"]
)
def test_both_kinds_import_as_sam2_prompt_checkpoints_with_their_weights_and_digest(
    tmp_path: Path, video: bool, encoder: str
) -> None:
    folder = sam2_folder(tmp_path / "sam2", video=video)
    assert source_kind(folder) == "sam"
    out = import_model(folder, tmp_path / "s.safetensors", ImportOptions(("R", "G", "B"))).output
    tensors, meta = load_checkpoint(out)  # checks the digest
    assert (meta.task, meta.arch, meta.encoder, meta.window) == ("prompt", "sam2", encoder, 128)
    assert checkpoint_family(meta).name == "sam2"
    assert meta.normalization.mean == pytest.approx((0.485, 0.456, 0.406))
    assert meta.normalization.scale == pytest.approx(1 / 255)
    own = load_file(folder / "model.safetensors")
    assert set(own) == set(tensors) and all(torch.equal(own[k], tensors[k]) for k in own)
    prompter = load_sam2(str(out), "cpu")
    assert isinstance(prompter, Sam2Prompter) and (prompter.video is not None) == video


def test_four_bands_get_an_adapted_backbone_patch_embedding(tmp_path: Path) -> None:
    folder = sam2_folder(tmp_path / "sam2")
    out = import_model(folder, tmp_path / "s.safetensors", ImportOptions(("B", "G", "R", "N")))
    tensors, meta = load_checkpoint(out.output)
    weight = load_file(folder / "model.safetensors")[f"{SAM2_PATCH_LAYER}.weight"]
    adapted = tensors[f"{SAM2_PATCH_LAYER}.weight"]
    backbone = meta.options["hf_config"]["vision_config"]["backbone_config"]
    assert adapted.shape[1] == 4 and backbone["num_channels"] == 4
    assert torch.allclose(adapted[:, :3], weight * 0.75)
    assert torch.allclose(adapted[:, 3], weight[:, 0] * 0.75)


def test_geoseg_prompt_runs_an_image_only_sam2_checkpoint(tmp_path: Path) -> None:
    folder = sam2_folder(tmp_path / "sam2", video=False)
    model = import_model(folder, tmp_path / "s.safetensors", ImportOptions(("R", "G", "B")))
    data = (textured_scene(100, 120, 3) // 16).astype(np.uint8)
    image = write_raster(tmp_path / "scene.tif", data, descriptions=("R", "G", "B"))
    out = tmp_path / "objects.tif"
    args = ["prompt", str(image), "-m", str(model.output), "--point", "500300,5099500", "-o",
            str(out), "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        assert src.count == 2 and set(np.unique(src.read(2))) <= {0, 1}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 256}, "SAM 2's encoder takes 128 px windows"),
        ({"margin": 8}, "--margin does not apply to SAM"),
        ({"task": "instance"}, "imports as a prompt model"),
    ],
    ids=["window", "margin", "task"],
)
def test_options_that_do_not_apply_are_refused_in_one_line(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    folder = sam2_folder(tmp_path / "sam2")
    args = ["import", str(folder), "-o", str(tmp_path / "s.safetensors"), "--bands", "R,G,B"]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "s.safetensors").exists()
