"""``geoseg import`` of a transformers ``SamModel`` folder: a self-describing prompt checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from geoseg.errors import CheckpointError
from geoseg.io.checkpoint import load_checkpoint, read_checkpoint_meta
from geoseg.models.registry import checkpoint_family
from geoseg.models.sam import build_sam
from geoseg.models.sam2 import build_sam2
from geoseg.pipelines.importing import ImportOptions, import_model, source_kind
from geoseg.pipelines.sam_import import PATCH_LAYER
from tests.models.sam_folders import sam_folder


@pytest.mark.parametrize(
    ("processor", "scale", "mean", "std", "factor"),
    [
        (True, None, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), 1 / 255),
        (False, None, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255),
        (False, 1e4, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1e-4),
    ],
    ids=["processor", "sam-defaults", "uint16-scale"],
)
def test_normalisation_comes_from_the_processor_or_sams_defaults(
    tmp_path: Path, processor: bool, scale: float | None, mean: tuple[float, ...],
    std: tuple[float, ...], factor: float,
) -> None:  # fmt: skip
    folder = sam_folder(tmp_path / "sam", processor=processor)
    assert source_kind(folder) == "sam"
    meta = import_model(
        folder, tmp_path / "s.safetensors", ImportOptions(("R", "G", "B"), scale=scale)
    ).meta
    assert meta.normalization.mean == pytest.approx(mean)
    assert meta.normalization.std == pytest.approx(std)
    assert meta.normalization.scale == pytest.approx(factor)
    assert (meta.task, meta.arch, meta.window, checkpoint_family(meta).name) == (
        "prompt", "sam", 256, "sam"
    )  # fmt: skip


def test_the_weights_travel_unchanged_with_their_digest(tmp_path: Path) -> None:
    folder = sam_folder(tmp_path / "sam")
    out = import_model(folder, tmp_path / "s.safetensors", ImportOptions(("R", "G", "B"))).output
    tensors, meta = load_checkpoint(out)  # checks the digest
    own = load_file(folder / "model.safetensors")
    assert set(own) <= set(tensors)
    assert all(torch.equal(own[k], tensors[k]) for k in own)
    assert meta.options["hf_config"]["vision_config"]["image_size"] == 256


def test_four_bands_get_an_adapted_patch_embedding(tmp_path: Path) -> None:
    folder = sam_folder(tmp_path / "sam")
    opts = ImportOptions(("B04", "B03", "B02", "B08"))
    out = import_model(folder, tmp_path / "s.safetensors", opts).output
    tensors, meta = load_checkpoint(out)
    weight = load_file(folder / "model.safetensors")[f"{PATCH_LAYER}.weight"]
    adapted = tensors[f"{PATCH_LAYER}.weight"]
    assert adapted.shape[1] == 4 and meta.options["hf_config"]["vision_config"]["num_channels"] == 4
    assert torch.allclose(adapted[:, :3], weight * 0.75) and torch.allclose(
        adapted[:, 3], weight[:, 0] * 0.75
    )


#: case -> (runtime, edit of the stored metadata, the refusal). One check
#: (``geoseg.models.sam.stored_config``) serves both runtimes; each names its model.
EDITED: dict[str, tuple[str, dict[str, Any], str]] = {
    "sam-without-config": ("sam", {"options": {}}, "a sam checkpoint without its SAM config "
                           "(options hf_config); re-import the model folder with `geoseg import"),
    "sam-config-as-sam2": ("sam", {"arch": "sam2"},
                           "a sam2 checkpoint holding a SAM config; the file was edited"),
    "sam2-given-sam-config": ("sam2", {"arch": "sam2"}, "a sam2 checkpoint without its SAM 2 "
                              "config (options hf_config); re-import the model folder"),
    "sam2-config-as-sam": ("sam2", {"model_type": "sam2"},
                           "a sam checkpoint holding a SAM 2 config; the file was edited"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(EDITED))
def test_an_edited_sam_checkpoint_is_refused_with_its_model_named(sam: str, case: str) -> None:
    runtime, edit, message = EDITED[case]
    meta = read_checkpoint_meta(sam)
    if "model_type" in edit:
        config = {**meta.options["hf_config"], "model_type": edit.pop("model_type")}
        edit = {"options": {**meta.options, "hf_config": config}}
    build = build_sam if runtime == "sam" else build_sam2
    with pytest.raises(CheckpointError) as err:
        build(dataclasses.replace(meta, **edit))
    assert str(err.value).startswith(message)
