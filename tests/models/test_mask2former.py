"""Mask2Former trained by geoseg: targets, the ignore rule, tiny overfits per task, seams,
`geoseg train`/`predict`/`evaluate` end to end, and refusals in one line."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from affine import Affine
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import CheckpointError, GeosegError, UnknownModelError
from geoseg.io.checkpoint import read_checkpoint_meta, save_checkpoint
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.hf import HFPredictor
from geoseg.models.hf_masks import HFMaskPredictor
from geoseg.models.mask2former import mask2former_config, mask2former_model
from geoseg.models.registry import training_family
from geoseg.training.instances import instance_scores, predict_instance_ids
from geoseg.training.mask2former import IGNORED_LOGIT, mask2former_step_loss, window_segments
from geoseg.training.sampling import Batch
from geoseg.types import NODATA_LABEL, ClassInfo, ClassSchema, ModelMeta, Normalization, TileSpec
from tests.conftest import write_raster
from tests.models.hf_folders import MASK2FORMER_TRAINED
from tests.models.mask_query_helpers import PerfectQueries, stitched
from tests.stitching.oracle import THING_SCHEMA, OraclePredictor, object_scene

pytest.importorskip("transformers")

#: A Mask2Former of ~0.2 M parameters (ResNet of 16-64 channels, 8 queries).
TINY = MASK2FORMER_TRAINED
BUILDINGS = ClassSchema(
    (ClassInfo(0, "ground", (0, 0, 0)), ClassInfo(1, "building", (200, 0, 0), is_thing=True))
)
LAND = ClassSchema(
    (ClassInfo(1, "forest", (0, 120, 0)), ClassInfo(4, "water", (0, 0, 200)),
     ClassInfo(7, "urban", (200, 0, 0)))
)  # fmt: skip


def _meta(task: str, schema: ClassSchema, bands: int = 3, **options: Any) -> ModelMeta:
    return ModelMeta(
        task=task, arch="mask2former", encoder="resnet18",
        bands=tuple(f"b{i}" for i in range(bands)),
        normalization=Normalization((0.0,) * bands, (1.0,) * bands), schema=schema,
        window=64, margin=8, options={**TINY, **options},
    )  # fmt: skip


# --- targets ------------------------------------------------------------------------------

#: A 4 x 4 window: class index (0 ground, 1 building; 255 unlabelled) and instance ids.
TARGET = np.array([[0, 1, 1, 0], [0, 1, 1, 255], [1, 0, 0, 0], [1, 255, 0, 0]])
IDS = np.array([[0, 3, 3, 0], [0, 3, 3, 3], [7, 0, 0, 0], [7, 7, 0, 0]])


def test_semantic_targets_by_hand() -> None:
    masks, classes, ignore = window_segments(TARGET, None, "semantic", [])
    assert classes.tolist() == [0, 1]
    ground = [[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    np.testing.assert_array_equal(masks[0], np.array(ground, bool))
    np.testing.assert_array_equal(masks[1], TARGET == 1)
    np.testing.assert_array_equal(ignore, TARGET == 255)
    assert not (masks & ignore).any()  # unlabelled pixels are in no mask


def test_instance_and_panoptic_targets_by_hand() -> None:
    masks, classes, ignore = window_segments(TARGET, IDS, "instance", [1])
    # each object loses its unlabelled pixel: 3 at (1, 3), 7 at (3, 1)
    assert classes.tolist() == [1, 1] and masks.shape == (2, 4, 4)
    np.testing.assert_array_equal(masks[0], (IDS == 3) & (TARGET != 255))
    np.testing.assert_array_equal(masks[1], (IDS == 7) & (TARGET != 255))
    assert masks.sum(axis=(1, 2)).tolist() == [4, 2] and ignore.sum() == 2
    pan_masks, pan_classes, _ = window_segments(TARGET, IDS, "panoptic", [1])
    # the objects, then the ground (stuff): every labelled pixel outside them
    assert pan_classes.tolist() == [1, 1, 0]
    np.testing.assert_array_equal(pan_masks[2], (TARGET == 0))
    assert pan_masks.sum() == 16 - 2  # a partition of the labelled pixels


def test_objects_of_stuff_classes_and_empty_windows() -> None:
    # an id over ground pixels is no object; a window of nothing has no masks
    masks, classes, _ = window_segments(np.zeros((4, 4), np.int64), np.ones((4, 4)), "instance",
                                        [1])  # fmt: skip
    assert masks.shape == (0, 4, 4) and classes.shape == (0,) and masks.dtype == bool
    nothing = np.full((4, 4), NODATA_LABEL)
    masks, classes, ignore = window_segments(nothing, None, "semantic", [])
    assert masks.shape == (0, 4, 4) and ignore.all()
    with pytest.raises(GeosegError, match="instance ids"):
        window_segments(TARGET, None, "panoptic", [1])


def test_unlabelled_cells_give_no_gradient() -> None:
    """A window whose left half is unlabelled: the model's mask features there (stride 4)
    get no gradient from the loss of any query or decoder layer."""
    torch.manual_seed(0)
    module = mask2former_model(_meta("semantic", LAND)).train()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    target = np.zeros((1, 64, 64), np.int64)
    target[0, :, 32:] = 1
    target[0, :, :32] = NODATA_LABEL
    batch = Batch(x.detach().numpy(), np.ones((1, 64, 64), bool), target)
    grads: list[torch.Tensor] = []
    hf = module.model

    def keep_grad(module: Any, inputs: Any, out: Any) -> None:
        out.mask_features.register_hook(grads.append)

    hook = hf.model.pixel_level_module.decoder.register_forward_hook(keep_grad)
    loss = mask2former_step_loss(module, x, batch, "semantic", [])
    loss.backward()
    hook.remove()
    assert torch.isfinite(loss) and IGNORED_LOGIT == -20.0
    # mask features are stride 4: columns 0-7 hold unlabelled pixels only -> no gradient
    assert grads[0][..., :7].abs().max() == 0 and grads[0][..., 9:].abs().max() > 0


# --- tiny overfits --------------------------------------------------------------------------


def _box(rows: slice, cols: slice) -> np.ndarray:
    out = np.zeros((64, 64), bool)
    out[rows, cols] = True
    return out


#: Three squares on a 64 px window: two of one kind (band 0 bright), one of another (band 1).
SQUARES = (_box(slice(6, 22), slice(8, 24)), _box(slice(36, 56), slice(30, 54)),
           _box(slice(8, 20), slice(42, 58)))  # fmt: skip


def _image() -> np.ndarray:
    image = np.random.default_rng(0).normal(0, 0.1, (3, 64, 64)).astype(np.float32)
    image[0, SQUARES[0] | SQUARES[1]] += 1.5
    image[1, SQUARES[2]] += 1.5
    return image


def _fit(task: str, schema: ClassSchema, target: np.ndarray, ids: np.ndarray | None,
         steps: int) -> tuple[torch.nn.Module, list[float], float]:  # fmt: skip
    """``steps`` Adam steps of the tiny model on :func:`_image`; losses and seconds."""
    torch.manual_seed(0)
    module = mask2former_model(_meta(task, schema)).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    image = _image()
    batch = Batch(image[None], np.ones((1, 64, 64), bool), target[None],
                  None if ids is None else ids[None])  # fmt: skip
    things = [k for k, c in enumerate(schema.classes) if c.is_thing]
    x, losses, t0 = torch.from_numpy(image)[None], [], time.perf_counter()
    for _ in range(steps):
        loss = mask2former_step_loss(module, x, batch, task, things)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return module.eval(), losses, time.perf_counter() - t0


@pytest.fixture
def one_thread() -> Any:
    """One torch thread: the tiny models are fastest so on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _objects() -> tuple[np.ndarray, np.ndarray]:
    """Class index (1 on the squares) and instance ids of :data:`SQUARES`."""
    ids = np.zeros((64, 64), np.int64)
    for i, square in enumerate(SQUARES):
        ids[square] = i + 1
    return (ids > 0).astype(np.int64), ids


def test_semantic_overfit_reaches_a_high_miou(one_thread: None) -> None:
    target = np.zeros((64, 64), np.int64)  # forest
    target[SQUARES[0] | SQUARES[1]] = 1  # water
    target[SQUARES[2]] = 2  # urban
    module, losses, seconds = _fit("semantic", LAND, target, None, 40)
    assert losses[-1] < 0.3 * losses[0], losses
    predictor = HFPredictor(module, _meta("semantic", LAND), torch.device("cpu"))
    pred = predictor.predict(_image()[None], np.ones((1, 64, 64), bool))[0].argmax(0)
    ious = [((pred == k) & (target == k)).sum() / ((pred == k) | (target == k)).sum()
            for k in range(3)]  # fmt: skip
    assert min(ious) > 0.8, ious
    assert seconds < 60


@pytest.mark.parametrize(("task", "steps"), [("instance", 60), ("panoptic", 100)])
def test_object_overfit_finds_the_three_squares(task: str, steps: int, one_thread: None) -> None:
    target, ids = _objects()
    module, losses, seconds = _fit(task, BUILDINGS, target, ids, steps)
    assert losses[-1] < 0.25 * losses[0], losses
    predictor = HFMaskPredictor(module, _meta(task, BUILDINGS), torch.device("cpu"))
    valid = np.ones((64, 64), bool)
    cls, pred_ids, scores = predict_instance_ids(predictor, _image(), valid, 32)
    found = instance_scores(target.astype(np.uint8), ids, cls, pred_ids, BUILDINGS, valid, scores)
    assert found.truth == 3 and found.ap50 == 1.0 and found.pq > 0.85, found
    assert seconds < 60  # about 4 s (instance) and 7 s (panoptic) on one free core


# --- seams ----------------------------------------------------------------------------------


class OracleMask2Former(torch.nn.Module):
    """Stands in for the transformers model: :class:`PerfectQueries` as its outputs."""

    def forward(self, pixel_values: torch.Tensor) -> Any:
        probs, masks = PerfectQueries()(pixel_values)
        return types.SimpleNamespace(class_queries_logits=probs.log(), masks_queries_logits=masks)


@pytest.mark.parametrize("task", ["instance", "panoptic"])
def test_trained_checkpoints_stitch_like_the_oracle(task: str, tmp_path: Path) -> None:
    """A trained-family checkpoint loads as the imported models' object predictor; with
    perfect queries its objects cross window and chunk seams whole, with scene-unique ids."""
    meta = dataclasses.replace(_meta(task, THING_SCHEMA, bands=2, min_pixels=1),
                               bands=("object", "class"))  # fmt: skip
    path = save_checkpoint(tmp_path / "m.safetensors", mask2former_model(meta).state_dict(), meta)
    predictor = load_predictor(model_spec(str(path), "cpu"))
    assert isinstance(predictor, HFMaskPredictor) and predictor.panoptic == (task == "panoptic")
    predictor._base.module.model = OracleMask2Former()
    scene = object_scene(96, 96, seed=3)
    spec = TileSpec(32, 4, 2)
    ours, truth = stitched(predictor, scene, spec), stitched(OraclePredictor(), scene, spec)
    n = len(np.unique(scene[0])) - 1
    pairs = np.unique(np.stack([ours[0].ravel(), truth[0].ravel()]), axis=1)
    assert pairs.shape[1] == n + 1 and (pairs[0] == 0).sum() == 1  # a bijection of objects
    assert len(np.unique(ours[0])) == n + 1 and n > 20
    np.testing.assert_array_equal(ours[1], truth[1])
    np.testing.assert_array_equal(stitched(predictor, scene, TileSpec(32, 4, 3)), ours)


# --- geoseg train / predict / evaluate --------------------------------------------------------

UTM = {"crs": "EPSG:32616", "transform": Affine(0.5, 0, 733600.0, 0, -0.5, 3725000.0)}


def _run(*args: Any) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _scene(tmp_path: Path, task: str) -> tuple[Path, Path, Path]:
    """A 1-band 64 px uint16 scene of the three squares, its labels (semantic: class ids
    0/1; objects: instance ids) and classes.yaml."""
    target, ids = _objects()
    image = np.random.default_rng(0).normal(300, 20, size=(64, 64)) + 900 * target
    scene = write_raster(tmp_path / "scene.tif", image[None].astype(np.uint16), **UTM)
    labels = ids if task != "semantic" else target
    path = write_raster(tmp_path / "labels.tif", labels[None].astype(np.uint32), **UTM)
    classes = tmp_path / "classes.yaml"
    classes.write_text(yaml.safe_dump(BUILDINGS.to_json()))
    return scene, path, classes


@pytest.mark.parametrize(
    ("task", "metric", "key", "epochs"),
    [("semantic", "mIoU", "miou", 2), ("instance", "AP50", "ap50", 4), ("panoptic", "PQ", "pq", 4)],
)
def test_geoseg_train_predict_and_evaluate(
    task: str, metric: str, key: str, epochs: int, tmp_path: Path, one_thread: None
) -> None:
    """`geoseg train` on a 64 px scene of three bright squares (whole-scene windows,
    augmented), then `geoseg evaluate` of the checkpoint on it in one 96 px window (a model
    overfit to one view is no judge of cut squares; the seams are tested above)."""
    scene, labels, classes = _scene(tmp_path, task)
    config = tmp_path / "net.yaml"
    config.write_text(yaml.safe_dump({"options": TINY}))
    out = tmp_path / "m2f.safetensors"
    text = _run(
        "train", "--task", task, "--arch", "mask2former", "--image", scene, "--labels", labels,
        "--val-image", scene, "--val-labels", labels, "--classes", classes, "--config", config,
        "-o", out, "--epochs", epochs, "--steps-per-epoch", "40", "--batch-size", "2",
        "--window", "64", "--lr", "3e-3", "--device", "cpu",
    )  # fmt: skip
    assert f"best val {metric}" in text
    meta = read_checkpoint_meta(out)
    assert (meta.task, meta.arch) == (task, "mask2former")
    assert meta.options["hf_config"]["id2label"] == {"0": "ground", "1": "building"}
    assert meta.options["hf_config"]["backbone_config"]["num_channels"] == 1
    assert training_family(task, "mask2former").name == "mask2former"
    ev = tmp_path / "ev"
    args = ["--task", task] if task != "semantic" else []
    _run("evaluate", "-m", out, "--image", scene, "--labels", labels, "-o", ev, "--device",
         "cpu", "--window", "96", "--margin", "16", *args)  # fmt: skip
    report = json.loads((ev / "metrics.json").read_text())
    # objects: validation scores the things (the buildings), as does the building's entry
    building = next(c for c in report["classes"] if c["name"] == "building")
    found = report[key] if task == "semantic" else building[key]
    assert meta.metrics[f"val_{key}"] > 0.9 and found > 0.9, (meta.metrics, report)


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "args", "options", "message"),
    [
        ("no transformers", ["--task", "semantic"], {},
         "Hugging Face models need the transformers package: pip install 'geoseg\\[hf\\]'"),
        ("change task", ["--task", "change"], {},
         "unknown architecture 'mask2former' for --task change; choose one of early, unet"),
        ("unknown option", ["--task", "instance"], {"anchor_sizes": [8]},
         r"unknown Mask2Former options \['anchor_sizes'\]; known: backbone_config"),
        ("unknown encoder", ["--task", "panoptic", "--encoder", "vgg16"], {"hidden_dim": 32},
         "unknown Mask2Former encoder 'vgg16'; choose one of resnet18, .*, swin-base"),
        ("bad backbone", ["--task", "semantic"], {"backbone_config": "swin"},
         "options.backbone_config must be a transformers backbone config with a model_type"),
        ("window", ["--task", "instance", "--window", "48"], {},
         "--window 48 must be a multiple of 32 for mask2former"),
    ],
)  # fmt: skip
def test_bad_training_inputs_are_one_line_and_write_nothing(
    case: str, args: list[str], options: dict[str, Any], message: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    if case == "no transformers":
        monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    scene, labels, classes = _scene(tmp_path, args[1])
    config = tmp_path / "net.yaml"
    config.write_text(yaml.safe_dump({"options": options}))
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(cli, [str(a) for a in [
        "train", "--arch", "mask2former", "--image", scene, "--labels", labels, "--classes",
        classes, "--config", config, "-o", out, "--epochs", "1", "--steps-per-epoch", "1",
        "--device", "cpu", *args,
    ]])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), result.output
    assert not out.exists() and list(tmp_path.glob("m.*")) == []


def test_edited_checkpoints_are_refused_at_load(tmp_path: Path) -> None:
    meta = _meta("instance", BUILDINGS)
    stored = {**meta.options, "hf_config": mask2former_config(meta)}
    module = mask2former_model(meta)
    good = save_checkpoint(tmp_path / "good.safetensors", module.state_dict(),
                           dataclasses.replace(meta, options=stored))  # fmt: skip
    assert isinstance(load_predictor(model_spec(str(good), "cpu")), HFMaskPredictor)
    three = dataclasses.replace(meta, schema=THING_SCHEMA, options=stored)
    with pytest.raises(CheckpointError, match="config has 2 classes and 3 input channels, its "
                       "metadata 3 classes and 3 bands"):  # fmt: skip
        mask2former_model(three)
    other = dataclasses.replace(meta, options={**stored, "hf_config": {"model_type": "detr"}})
    with pytest.raises(CheckpointError, match="without a Mask2Former config"):
        mask2former_model(other)
    with pytest.raises(CheckpointError, match="'hf-mask2former' checkpoint, not a Mask2Former"):
        mask2former_model(dataclasses.replace(meta, arch="hf-mask2former"))
    with pytest.raises(UnknownModelError, match="unknown Mask2Former encoder"):
        mask2former_model(dataclasses.replace(meta, encoder="swin-huge", options={}))
