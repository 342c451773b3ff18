"""Hugging Face transformers models: ``geoseg import FOLDER``, ``geoseg models``, predict.

Tiny randomly initialised SegFormer / Mask2Former / MaskFormer folders are written
with ``save_pretrained`` into tmp folders; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from geoseg.cli import cli
from geoseg.errors import CheckpointError
from geoseg.io.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.families import transformers as family
from geoseg.models.hf import HF_MODELS, adapt_first_conv
from tests.conftest import textured_scene, write_raster
from tests.models.hf_folders import (
    DPT,
    MASK2FORMER,
    MASKFORMER,
    ONEFORMER,
    PREPROCESSOR,
    SEGFORMER,
    UPERNET,
    clip_tokenizer,
    hf_model,
    model_folder,
)

pytest.importorskip("transformers")

NAMES = ["forest", "water", "urban"]
MEAN, STD = np.array(PREPROCESSOR["image_mean"]), np.array(PREPROCESSOR["image_std"])


@pytest.fixture(scope="module")
def segformer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    return model_folder(tmp_path_factory.mktemp("hf") / "segformer", SEGFORMER, NAMES)


def geoseg_import(folder: Path, out: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["import", str(folder), "-o", str(out), *args])


def imported(folder: Path, out: Path, *args: str) -> Path:
    result = geoseg_import(folder, out, *args)
    assert result.exit_code == 0, result.output
    return out


def probabilities(model: str | Path, window: np.ndarray) -> np.ndarray:
    """``(N, K, H, W)`` probabilities of the imported model for raw windows ``(N, C, H, W)``."""
    load_predictor.cache_clear()
    predictor = load_predictor(model_spec(str(model), "cpu"))
    valid = np.ones((window.shape[0], *window.shape[2:]), bool)
    return np.asarray(predictor.predict(window, valid))


def rgb_windows(n: int = 2, side: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 3, side, side)).astype(np.float32)


def pixel_head_reference(model: torch.nn.Module, x: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """What transformers itself gives: softmax of the upsampled logits of normalized ``x``."""
    norm = (x / 255.0 - np.asarray(mean)[:, None, None]) / np.asarray(std)[:, None, None]
    with torch.no_grad():
        logits = model(pixel_values=torch.from_numpy(norm.astype(np.float32))).logits
        up = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return torch.softmax(up, dim=1).numpy()


def test_segformer_import_predicts_what_transformers_does(
    segformer: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    folder, model = segformer
    out = imported(folder, tmp_path / "seg.safetensors", "--bands", "B04,B03,B02")
    meta = read_checkpoint_meta(out)
    assert (meta.task, meta.arch, meta.encoder) == (
        "semantic", "hf-segformer", "SegformerForSemanticSegmentation"
    )  # fmt: skip
    assert meta.schema.names == tuple(NAMES) and meta.window == 64 and meta.margin == 8
    assert meta.normalization.mean == (0.485, 0.456, 0.406)
    assert meta.normalization.scale == pytest.approx(1 / 255)
    x = rgb_windows()
    expected = pixel_head_reference(model, x, MEAN, STD)
    np.testing.assert_allclose(probabilities(out, x), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("config", "layer"),
    [
        (UPERNET, "backbone.embeddings.patch_embeddings"),
        (DPT, "dpt.embeddings.patch_embeddings.projection"),
    ],
    ids=["upernet", "dpt"],
)
def test_upernet_and_dpt_predict_what_transformers_does(
    config: dict[str, Any], layer: str, tmp_path: Path
) -> None:
    folder, model = model_folder(tmp_path / "m", config, NAMES[:2])
    out = imported(folder, tmp_path / "m.safetensors", "--bands", "B04,B03,B02")
    meta = read_checkpoint_meta(out)
    assert meta.arch == f"hf-{config['model_type']}"
    assert meta.provenance["first_conv"]["layer"] == layer
    x = rgb_windows()
    expected = pixel_head_reference(model, x, MEAN, STD)
    # geoseg runs CPU windows one at a time, the reference as a batch of two
    np.testing.assert_allclose(probabilities(out, x), expected, atol=1e-4)


def test_models_describes_an_imported_checkpoint(
    segformer: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    out = imported(segformer[0], tmp_path / "seg.safetensors", "--bands", "B04,B03,B02")
    text = CliRunner().invoke(cli, ["models", str(out)]).output
    assert "family: transformers   inputs: pixels   runtime: torch" in text
    assert "task: semantic   arch: hf-segformer   encoder: SegformerForSemanticSegmentation" in text
    assert "bands (3): B04, B03, B02" in text and "water" in text
    listing = CliRunner().invoke(cli, ["models"]).output
    assert "transformers  Hugging Face SegFormer" in listing
    assert (
        "--arch: hf-segformer, hf-upernet, hf-dpt, hf-mask2former, hf-maskformer, hf-oneformer"
        in (listing)
    )


def _maps_at_two_chunk_sizes(folder: Path, tmp_path: Path, *extra: str) -> list[np.ndarray]:
    """Import ``folder`` (RGB, window 64, margin 8) and predict a 150 x 173 scene with
    48 px and 144 px chunks: the two output rasters."""
    out = imported(folder, tmp_path / "m.safetensors", "--bands", "B04,B03,B02",
                   "--window", "64", "--margin", "8", "--scale", "10000")  # fmt: skip
    scene = write_raster(tmp_path / "s.tif", textured_scene(150, 173, bands=3),
                         descriptions=("B04", "B03", "B02"))  # fmt: skip
    maps = []
    for chunk in ("48", "144"):
        dst = tmp_path / f"m{chunk}.tif"
        args = ["predict", str(scene), "-m", str(out), "-o", str(dst), "--chunk", chunk]
        result = CliRunner().invoke(cli, [*args, *extra, "--device", "cpu"])
        assert result.exit_code == 0, result.output
        with rasterio.open(dst) as src:
            maps.append(src.read())
    return maps


def test_predict_is_identical_across_chunk_sizes_with_confidence(
    segformer: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    maps = _maps_at_two_chunk_sizes(segformer[0], tmp_path, "--confidence")
    assert maps[0].shape == (2, 150, 173)
    assert np.array_equal(maps[0], maps[1])
    labels, confidence = maps[0]
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert confidence.min() >= 85 and len(np.unique(confidence)) > 10  # max of 3 probs >= 1/3


@pytest.mark.parametrize(
    ("weight", "bands", "expected"),
    [
        ([1.0, 2.0, 4.0], 3, [1.0, 2.0, 4.0]),
        ([1.0, 2.0, 4.0], 1, [7.0]),
        ([1.0, 2.0, 4.0], 2, [5.0, 2.0]),
        ([1.0, 2.0, 4.0], 4, [0.75, 1.5, 3.0, 0.75]),
        ([1.0, 2.0, 4.0], 6, [0.5, 1.0, 2.0, 0.5, 1.0, 2.0]),
    ],
)
def test_adapt_first_conv_formula(weight: list[float], bands: int, expected: list[float]) -> None:
    w = torch.tensor(weight).reshape(1, 3, 1, 1).repeat(2, 1, 1, 1)
    got = adapt_first_conv(w, bands)
    assert got.shape == (2, bands, 1, 1)
    np.testing.assert_allclose(got[:, :, 0, 0].numpy(), [expected, expected])


@pytest.mark.parametrize(
    ("bands", "window_of", "mean", "std"),
    [
        # six bands: the RGB window twice gives the RGB model's answer exactly
        ("B04,B03,B02,B8A,B11,B12", lambda x: np.concatenate([x, x], axis=1), None, None),
        # one band: a grey window gives the answer of the RGB model on grey RGB
        ("PAN", lambda x: x[:, :1], "0.45", "0.226"),
    ],
)
def test_other_band_counts_keep_the_pretrained_response(
    segformer: tuple[Path, torch.nn.Module], tmp_path: Path, bands: str,
    window_of: Callable[[np.ndarray], np.ndarray], mean: str | None, std: str | None,
) -> None:  # fmt: skip
    folder, model = segformer
    norm = ["--mean", mean, "--std", std] if mean and std else []
    result = geoseg_import(folder, tmp_path / "n.safetensors", "--bands", bands, *norm)
    assert result.exit_code == 0, result.output
    n = len(bands.split(","))
    assert f"adapted from 3 to {n} bands" in result.output
    tensors, meta = load_checkpoint(tmp_path / "n.safetensors")
    layer = meta.provenance["first_conv"]["layer"]
    assert layer == "segformer.stages.0.patch_embeddings.proj"
    original = model.state_dict()[f"{layer}.weight"]
    assert torch.equal(tensors[f"model.{layer}.weight"], adapt_first_conv(original, n))
    assert meta.provenance["first_conv"]["pretrained_channels"] == 3
    x = rgb_windows()
    if n == 1:
        x[:, 1] = x[:, 2] = x[:, 0]
    rgb_mean = [float(mean)] * 3 if mean else MEAN
    rgb_std = [float(std)] * 3 if std else STD
    expected = pixel_head_reference(model, x, rgb_mean, rgb_std)
    np.testing.assert_allclose(probabilities(tmp_path / "n.safetensors", window_of(x)),
                               expected, atol=1e-5)  # fmt: skip


def test_mask2former_semantic_agrees_with_transformers_postprocessing(tmp_path: Path) -> None:
    import transformers

    folder, model = model_folder(tmp_path / "m2f", MASK2FORMER, NAMES)
    out = imported(folder, tmp_path / "m2f.safetensors", "--bands", "B04,B03,B02")
    assert read_checkpoint_meta(out).arch == "hf-mask2former"
    x = rgb_windows(n=1)
    probs = probabilities(out, x)
    assert probs.shape == (1, 3, 64, 64) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    norm = ((x / 255.0 - MEAN[:, None, None]) / STD[:, None, None]).astype(np.float32)
    with torch.no_grad():
        outputs = model(pixel_values=torch.from_numpy(norm))
    processor = transformers.Mask2FormerImageProcessor()
    ref = processor.post_process_semantic_segmentation(outputs, target_sizes=[(64, 64)])[0]
    # transformers detours through 384 x 384 masks; geoseg upsamples once to the window
    assert (probs[0].argmax(axis=0) == ref.numpy()).mean() > 0.97


def test_maskformer_imports_and_predicts(tmp_path: Path) -> None:
    folder, _ = model_folder(tmp_path / "mf", MASKFORMER, NAMES[:2], preprocessor=False)
    out = imported(folder, tmp_path / "mf.safetensors", "--bands", "B04,B03,B02,B08")
    meta = read_checkpoint_meta(out)
    assert meta.arch == "hf-maskformer" and meta.window == 256
    assert meta.normalization.mean == (0.0,) * 4 and meta.normalization.scale == 1.0
    probs = probabilities(out, rgb_windows(n=1)[:, [0, 1, 2, 0]] / 255.0)
    assert probs.shape == (1, 2, 64, 64) and np.isfinite(probs).all()


@pytest.fixture(scope="module")
def oneformer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    return model_folder(tmp_path_factory.mktemp("hf") / "oneformer", ONEFORMER, NAMES)


def processor_tokens(folder: Path, task: str) -> torch.Tensor:
    """``(1, 12)`` task_inputs of transformers' own OneFormerProcessor for ``task``."""
    import transformers

    processor = transformers.OneFormerProcessor(
        image_processor=transformers.OneFormerImageProcessor(),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(str(folder), local_files_only=True),
        task_seq_length=ONEFORMER["task_seq_len"],
    )  # fmt: skip
    image = np.zeros((64, 64, 3), np.uint8)
    return processor(images=[image], task_inputs=[task], return_tensors="pt")["task_inputs"]


@pytest.mark.parametrize(
    ("files", "task"), [("tokenizer.json", "semantic"), ("vocab.json", "panoptic")]
)
def test_oneformer_task_tokens_are_the_processors(
    oneformer: tuple[Path, torch.nn.Module], tmp_path: Path, files: str, task: str
) -> None:
    folder = Path(shutil.copytree(oneformer[0], tmp_path / "of"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    clip_tokenizer(folder, files)
    things = ["--things", "water"] if task != "semantic" else []
    out = imported(folder, tmp_path / "of.safetensors", "--bands", "B04,B03,B02",
                   "--task", task, *things)  # fmt: skip
    ids = read_checkpoint_meta(out).options["task_inputs"]
    assert ids == processor_tokens(folder, task)[0].tolist()
    assert ids[:2] == [0, 6] and ids[-1] == 0 and len(ids) == 12  # <start> "the" ... padding


def test_oneformer_semantic_agrees_with_transformers(
    oneformer: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    import transformers

    folder, model = oneformer
    out = imported(folder, tmp_path / "of.safetensors", "--bands", "B04,B03,B02")
    assert read_checkpoint_meta(out).arch == "hf-oneformer"
    x = rgb_windows(n=1)
    probs = probabilities(out, x)
    norm = ((x / 255.0 - MEAN[:, None, None]) / STD[:, None, None]).astype(np.float32)
    with torch.no_grad():
        raw = model(pixel_values=torch.from_numpy(norm),
                    task_inputs=processor_tokens(folder, "semantic"))  # fmt: skip
    # the masks at the window's size (as geoseg upsamples them), then transformers' rule
    raw.masks_queries_logits = F.interpolate(
        raw.masks_queries_logits, size=(64, 64), mode="bilinear", align_corners=False
    )
    processor = transformers.OneFormerImageProcessor()
    ref = processor.post_process_semantic_segmentation(raw, return_segmentation_scores=True)[0]
    scores = ref["segmentation_scores"].numpy()
    np.testing.assert_allclose(probs[0], scores / scores.sum(axis=0), atol=1e-5)
    assert np.array_equal(probs[0].argmax(axis=0), ref["segmentation"].numpy())
    assert np.ptp(probs[0], axis=(1, 2)).max() > 0.1  # scores vary over the window


def test_oneformer_predict_is_identical_across_chunk_sizes(
    oneformer: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    maps = _maps_at_two_chunk_sizes(oneformer[0], tmp_path)
    assert maps[0].shape == (1, 150, 173) and np.array_equal(maps[0], maps[1])
    assert len(np.unique(maps[0])) > 1


def test_oneformer_without_its_task_tokens_is_refused_at_load(
    oneformer: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    out = imported(oneformer[0], tmp_path / "of.safetensors", "--bands", "B04,B03,B02")
    tensors, meta = load_checkpoint(out)
    options = {k: v for k, v in meta.options.items() if k != "task_inputs"}
    edited = save_checkpoint(tmp_path / "edited.safetensors", tensors,
                             dataclasses.replace(meta, options=options))  # fmt: skip
    load_predictor.cache_clear()
    with pytest.raises(CheckpointError, match="without its 12 task-token ids"):
        load_predictor(model_spec(str(edited), "cpu"))


def test_family_lists_every_runtime_model_type() -> None:
    assert tuple(HF_MODELS) == family.MODEL_TYPES


def test_an_edited_config_is_refused_at_load(
    segformer: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    out = imported(segformer[0], tmp_path / "seg.safetensors", "--bands", "B04,B03,B02")
    tensors, meta = load_checkpoint(out)
    config = {**meta.options["hf_config"], "decoder_hidden_size": 32}
    meta = dataclasses.replace(meta, options={"hf_config": config})
    edited = save_checkpoint(tmp_path / "edited.safetensors", tensors, meta)
    load_predictor.cache_clear()
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_predictor(model_spec(str(edited), "cpu"))


def _no_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _pickled(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _truncated(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _other_config(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "decoder_hidden_size": 32}))


def _missing_tensor(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if "classifier" not in k},
              folder / "model.safetensors", metadata={"format": "pt"})  # fmt: skip


def _five_labels(folder: Path) -> None:
    """config.json edited to 5 classes; the weights' head has 3."""
    config = json.loads((folder / "config.json").read_text())
    names = {str(i): f"c{i}" for i in range(5)}
    labels = {v: int(k) for k, v in names.items()}
    (folder / "config.json").write_text(json.dumps({**config, "id2label": names,
                                                    "label2id": labels}))  # fmt: skip


def _bert(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))


def _oneformer(folder: Path) -> None:
    """A OneFormer config, and (as in the folder) no tokenizer files."""
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "oneformer"}))


def _two_classes(folder: Path) -> None:
    (folder / "classes.yaml").write_text(
        "- {id: 1, name: forest, colour: [0, 120, 0]}\n"
        "- {id: 2, name: water, colour: [0, 0, 200]}\n"
    )


def _existing_output(folder: Path) -> None:
    (folder.parent / "out.safetensors").write_bytes(b"keep")


@pytest.mark.parametrize(
    ("spoil", "args", "message"),
    [
        (_no_weights, [], "no model.safetensors beside config.json"),
        (_pickled, [], "pytorch_model.bin: pickled weights; geoseg never unpickles"),
        (_truncated, [], "transformers cannot load the model"),
        (_other_config, [], "model.safetensors does not fit config.json (decode_head."),
        (_five_labels, [], "decode_head.classifier.weight (3, 16, 1, 1) stored, (5, 16, 1, 1) "
         "for config.json"),
        (_missing_tensor, [], "model.safetensors does not fit config.json (missing decode_head."),
        (_bert, [], "config.json: transformers model_type 'bert' is not supported; geoseg "
         "imports segformer"),
        (_oneformer, [], "OneFormer needs its CLIP tokenizer for the task input, and the "
         "folder has no tokenizer.json (or vocab.json + merges.txt)"),
        (None, ["--task", "instance", "--things", "water"],
         "has a per-pixel head and finds no objects; --task instance needs a mask-query"),
        (_two_classes, ["--classes", "{folder}/classes.yaml"],
         "the model outputs 3 classes, the class file lists 2 (forest, water)"),
        (None, ["--mean", "0.1,0.2"], "--mean has 2 and --std 3 values for 3 --bands"),
        (None, ["--bands", ","], "--bands is empty"),
        (None, ["--window", "100"], "multiple of 32 px"),
        (_existing_output, [], "exists; pass --overwrite"),
    ],
)  # fmt: skip
def test_bad_folders_are_refused_in_one_line_and_nothing_is_written(
    segformer: tuple[Path, torch.nn.Module], tmp_path: Path,
    spoil: Callable[[Path], None] | None, args: list[str], message: str,
) -> None:  # fmt: skip
    folder = Path(shutil.copytree(segformer[0], tmp_path / "model"))
    if spoil is not None:
        spoil(folder)
    out = tmp_path / "out.safetensors"
    given = [a.format(folder=folder) for a in args]
    bands = [] if "--bands" in given else ["--bands", "B04,B03,B02"]
    result = geoseg_import(folder, out, *bands, *given)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists() or out.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model", *(["out.safetensors"] if out.exists() else [])]
    )


def test_a_deeply_nested_config_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    (folder / "model.safetensors").write_bytes(b"")
    result = CliRunner().invoke(
        cli, ["import", str(folder), "-o", str(tmp_path / "m.safetensors"), "--bands", "R,G,B"]
    )
    assert result.exit_code == 2, result.output
    assert "config.json: malformed JSON file" in result.output
    assert "levels deep" in result.output
    assert not (tmp_path / "m.safetensors").exists()


def test_a_folder_naming_no_classes_imports_transformers_default_two(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """transformers leaves ``id2label`` out of config.json at its default (2 labels): the
    import said "0 classes" and refused; it takes the 2 outputs and says how to name them."""
    folder = tmp_path / "segf"
    model = hf_model(SEGFORMER)  # no labelled(): the default labels
    model.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert "id2label" not in saved and "num_labels" not in saved
    with caplog.at_level(logging.WARNING):
        out = imported(folder, tmp_path / "seg.safetensors", "--bands", "B04,B03,B02")
    assert read_checkpoint_meta(out).schema.names == ("class_0", "class_1")
    assert "names no classes (no id2label); its 2 outputs are imported as class_0, class_1" in (
        caplog.text
    )
    x = rgb_windows()
    assert probabilities(out, x).shape == (2, 2, 64, 64)
