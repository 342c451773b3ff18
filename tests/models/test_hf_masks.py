"""Mask2Former / MaskFormer objects (geoseg/models/hf_masks.py): post-processing, stitching.

The per-window post-processing is checked against transformers' own
``post_process_instance_segmentation`` / ``post_process_panoptic_segmentation`` on
tiny random models; the seams with a module that reports an oracle scene's
objects as perfect mask queries, which must stitch exactly like the oracle.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from geoseg.cli import cli
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.components import split_components
from geoseg.models.hf_masks import (
    HFMaskPredictor,
    instance_segments,
    oneformer_instance_segments,
    panoptic_segments,
)
from geoseg.stitching import InstancePredictor
from geoseg.stitching.panoptic import panoptic_block
from geoseg.types import ModelMeta, Normalization, TileSpec
from tests.models.hf_folders import MASK2FORMER, MASKFORMER, model_folder
from tests.models.mask_query_helpers import PerfectQueries, stitched
from tests.stitching.oracle import THING_SCHEMA, OraclePredictor, object_scene

pytest.importorskip("transformers")

NAMES = ["ground", "building", "tree"]
CONFIGS = {"mask2former": MASK2FORMER, "maskformer": MASKFORMER}


def raw_outputs(model: torch.nn.Module, seed: int = 3) -> Any:
    """The model's outputs on a random 64 px window, masks upsampled to 384 x 384.

    At 384 px transformers' own resizing (Mask2Former: to 384; MaskFormer: none)
    is the identity, so both post-processings see exactly the same masks.
    """
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(1, 3, 64, 64)).astype("f4"))
    with torch.no_grad():
        out = model(pixel_values=x)
    masks = F.interpolate(out.masks_queries_logits, size=(384, 384), mode="bilinear",
                          align_corners=False)  # fmt: skip
    return types.SimpleNamespace(class_queries_logits=out.class_queries_logits,
                                 masks_queries_logits=masks)  # fmt: skip


def processor(kind: str) -> Any:
    import transformers

    names = {"mask2former": "Mask2FormerImageProcessor", "oneformer": "OneFormerImageProcessor"}
    return getattr(transformers, names.get(kind, "MaskFormerImageProcessor"))()


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("threshold", [0.05, 0.3])
def test_instance_segments_agree_with_transformers(
    kind: str, threshold: float, tmp_path: Path
) -> None:
    _, model = model_folder(tmp_path / kind, CONFIGS[kind], NAMES)
    out = raw_outputs(model)
    ref = processor(kind).post_process_instance_segmentation(
        out, threshold=threshold, return_binary_maps=True
    )[0]
    probs = out.class_queries_logits[0].softmax(-1)
    masks, channels, scores = instance_segments(probs, out.masks_queries_logits[0], threshold)
    assert len(ref["segments_info"]) == len(masks) > 0
    theirs = sorted(
        (-s["score"], s["label_id"], m.numpy().astype(bool).tobytes())
        for s, m in zip(ref["segments_info"], ref["segmentation"], strict=True)
    )
    ours = sorted(
        (-round(float(s), 6), int(c), m.tobytes())
        for s, c, m in zip(scores, channels, masks, strict=True)
    )
    assert [c for _, c, _ in ours] == [c for _, c, _ in theirs]
    np.testing.assert_allclose([s for s, *_ in ours], [s for s, *_ in theirs], atol=2e-6)
    assert [m for *_, m in ours] == [m for *_, m in theirs]


def disc_outputs(seed: int, queries: int = 8, classes: int = 3) -> Any:
    """Model-like outputs: overlapping disc masks (384 px) and peaked class logits.

    A tiny random model gives at most one panoptic segment, so the panoptic rules
    (score-weighted argmax, overlap share) are exercised on these instead: of the
    7-8 queries above the threshold, 3-6 keep their segment.
    """
    gen = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(1, queries, classes + 1, generator=gen)
    logits[..., -1] -= 2  # fewer "no object" queries
    centre = 384 * torch.rand(queries, 2, generator=gen)
    radius = 40 + 80 * torch.rand(queries, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(384.0), torch.arange(384.0), indexing="ij")
    dist = ((yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2).sqrt()
    masks = ((radius[:, None, None] - dist) / 8)[None]
    return types.SimpleNamespace(class_queries_logits=logits, masks_queries_logits=masks)


@pytest.mark.parametrize("kind", [*CONFIGS, "oneformer"])
@pytest.mark.parametrize("seed", [0, 1, 3])
def test_panoptic_segments_agree_with_transformers(kind: str, seed: int) -> None:
    out = disc_outputs(seed)
    ref = processor(kind).post_process_panoptic_segmentation(
        out, threshold=0.5, label_ids_to_fuse=set()
    )[0]
    probs = out.class_queries_logits[0].softmax(-1)
    masks, channels, scores = panoptic_segments(probs, out.masks_queries_logits[0], 0.5, 0.5, 0.8)
    segs = ref["segments_info"]
    assert len(segs) == len(masks) >= 3
    assert [s["label_id"] for s in segs] == channels.tolist()
    np.testing.assert_allclose([s["score"] for s in segs], scores, atol=1e-6)
    for s, mask in zip(segs, masks, strict=True):
        np.testing.assert_array_equal(ref["segmentation"].numpy() == s["id"], mask)
    assert masks.sum(axis=0).max() == 1  # disjoint


@pytest.mark.parametrize("seed", [0, 1, 3])
@pytest.mark.parametrize("threshold", [0.2, 0.5])
def test_oneformer_instance_segments_agree_with_transformers(seed: int, threshold: float) -> None:
    out = disc_outputs(seed)
    own = processor("oneformer")
    own.class_info_file = ""  # transformers reads it (an ADE20K special case) once masks exist
    ref = own.post_process_instance_segmentation(out, threshold=threshold)[0]
    probs = out.class_queries_logits[0].softmax(-1)
    masks, channels, scores = oneformer_instance_segments(
        probs, out.masks_queries_logits[0], threshold, 0.5, 0.8
    )
    segs = sorted(ref["segments_info"], key=lambda s: -s["score"])  # topk(sorted=False) order
    assert len(segs) == len(masks) >= 2
    assert [s["label_id"] for s in segs] == channels.tolist()
    np.testing.assert_allclose([s["score"] for s in segs], scores, atol=1e-6)
    for s, mask in zip(segs, masks, strict=True):
        np.testing.assert_array_equal(ref["segmentation"].numpy() == s["id"], mask)
    assert masks.sum(axis=0).max() == 1  # disjoint, unlike Mask2Former's instances


@pytest.mark.parametrize("task", ["instance", "panoptic"])
def test_perfect_queries_stitch_like_the_oracle(task: str) -> None:
    """Objects are neither cut nor duplicated at window and chunk seams; ids are unique."""
    scene = object_scene(96, 96, seed=3)
    meta = ModelMeta(
        task=task, arch="hf-mask2former", encoder=None, bands=("object", "class"),
        normalization=Normalization((0.0, 0.0), (1.0, 1.0)), schema=THING_SCHEMA,
        window=32, margin=4, options={"min_pixels": 1},
    )  # fmt: skip
    model = HFMaskPredictor(PerfectQueries(), meta, torch.device("cpu"))
    spec = TileSpec(32, 4, 2)
    ours, truth = stitched(model, scene, spec), stitched(OraclePredictor(), scene, spec)
    n = len(np.unique(scene[0])) - 1
    pairs = np.unique(np.stack([ours[0].ravel(), truth[0].ravel()]), axis=1)
    assert pairs.shape[1] == n + 1 and pairs[0, 0] == 0 and (pairs[0] == 0).sum() == 1
    assert len(np.unique(ours[0])) == n + 1  # one id per object: a bijection with the oracle
    np.testing.assert_array_equal(ours[1], truth[1])
    whole = stitched(model, scene, TileSpec(32, 4, 3))  # other chunks: the same map
    np.testing.assert_array_equal(whole, ours)
    stuff = np.asarray(THING_SCHEMA.ids, np.uint8)[
        model.predict(scene[None], np.ones((1, 96, 96), bool))[0].argmax(0)
    ]
    pan = panoptic_block(ours, stuff, THING_SCHEMA)
    assert set(np.unique(pan[0])) == {0, 2, 5} and (pan[1][pan[0] == 0] == 0).all()


def test_instances_leave_out_stuff_and_nodata() -> None:
    scene = object_scene(32, 32, seed=1, big=False)
    meta = ModelMeta(
        task="instance", arch="hf-mask2former", encoder=None, bands=("object", "class"),
        normalization=Normalization((0.0, 0.0), (1.0, 1.0)), schema=THING_SCHEMA,
        window=32, margin=4,
    )  # fmt: skip
    model = HFMaskPredictor(PerfectQueries(), meta, torch.device("cpu"))
    valid = np.ones((1, 32, 32), bool)
    valid[0, :, :16] = False
    ((masks, classes, scores),) = model.predict_instances(scene[None], valid)
    assert set(classes.tolist()) <= {2, 5} and not masks[:, :, :16].any()
    right = scene[0][:, 16:]
    big = [i for i in np.unique(right[right > 0]) if (right == i).sum() >= 4]
    expected = [(0.6 + 0.03 * (i * 7 % 11)) / (1 + np.exp(-8)) for i in big]
    assert len(masks) == len(big) and np.allclose(sorted(scores), sorted(expected), atol=1e-6)


def _import(folder: Path, out: Path, *args: str) -> Any:
    return CliRunner().invoke(
        cli, ["import", str(folder), "-o", str(out), "--bands", "B04,B03,B02", *args]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "instance"], "--task instance needs object classes: name them with --things"),
        (["--task", "panoptic", "--things", "car"], "--things car: not a class of the model"),
        (["--things", "tree"], "--things applies to --task instance or panoptic"),
        (["--task", "change"], "--task must be one of semantic, instance, panoptic"),
        (["--task", "instance", "--things", "tree", "--score-threshold", "1"],
         "--score-threshold must be in [0, 1)"),
    ],
)  # fmt: skip
def test_bad_object_imports_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    folder, _ = model_folder(tmp_path / "m2f", MASK2FORMER, NAMES)
    result = _import(folder, tmp_path / "o.safetensors", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.safetensors").exists()


def test_things_by_name_or_id_and_stored_thresholds(tmp_path: Path) -> None:
    folder, _ = model_folder(tmp_path / "mf", MASKFORMER, NAMES)
    out = tmp_path / "mf.safetensors"
    result = _import(folder, out, "--task", "panoptic", "--things", "Building,2",
                     "--score-threshold", "0.25")  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = read_checkpoint_meta(out)
    assert meta.task == "panoptic" and meta.arch == "hf-maskformer"
    assert [c.is_thing for c in meta.schema.classes] == [False, True, True]
    assert meta.options["score_threshold"] == 0.25 and meta.options["overlap_threshold"] == 0.8
    load_predictor.cache_clear()
    model = load_predictor(model_spec(str(out), "cpu"))
    assert isinstance(model, HFMaskPredictor) and isinstance(model, InstancePredictor)
    assert model.panoptic and model.score_threshold == 0.25


def test_window_predictor_agrees_with_transformers_at_window_size(tmp_path: Path) -> None:
    """Through geoseg's import and normalization; masks differ only by the 384 px detour."""
    folder, model = model_folder(tmp_path / "m2f", MASK2FORMER, NAMES)
    out = tmp_path / "m2f.safetensors"
    result = _import(folder, out, "--task", "instance", "--things", "building,tree",
                     "--score-threshold", "0.05")  # fmt: skip
    assert result.exit_code == 0, result.output
    load_predictor.cache_clear()
    loaded = load_predictor(model_spec(str(out), "cpu"))
    assert isinstance(loaded, HFMaskPredictor)
    loaded.min_pixels = 0
    x = np.random.default_rng(7).uniform(0, 255, (1, 3, 64, 64)).astype(np.float32)
    ((masks, classes, scores),) = loaded.predict_instances(x, np.ones((1, 64, 64), bool))
    norm = loaded._base.normalize(x, np.ones((1, 64, 64), bool))
    with torch.no_grad():
        raw = model(pixel_values=torch.from_numpy(norm))
    ref = processor("mask2former").post_process_instance_segmentation(
        raw, threshold=0.05, target_sizes=[(64, 64)], return_binary_maps=True
    )[0]
    theirs = sorted(
        ((-s["score"], s["label_id"], m.numpy().astype(bool)) for s, m in
         zip(ref["segments_info"], ref["segmentation"], strict=True) if s["label_id"] > 0),
        key=lambda t: t[:2],
    )  # fmt: skip
    # by design each connected component is an object of its own: regroup them by query
    pairs = sorted({(float(-s), int(c)) for s, c in zip(scores, classes, strict=True)})
    ours = [(s, c, masks[(-scores == s) & (classes == c)].any(0)) for s, c in pairs]
    assert len(theirs) == len(ours) > 0  # the ground (stuff) query pairs are left out
    for (their_score, their_cls, their_mask), (score, cls, mask) in zip(theirs, ours, strict=True):
        assert cls == their_cls  # the tiny folder's class ids are its channels
        assert score == pytest.approx(their_score, abs=0.02)
        assert (their_mask == mask).mean() > 0.97


def _pq_ap50(pred: np.ndarray, ref: np.ndarray, scores: list[float]) -> tuple[float, float]:
    """PQ and all-point AP50 of one class, computed directly from two id maps."""
    p_ids, r_ids = np.unique(pred[pred > 0]), np.unique(ref[ref > 0])
    matched: dict[int, float] = {}
    for p in p_ids:
        for r in r_ids:
            inter = np.count_nonzero((pred == p) & (ref == r))
            iou = inter / np.count_nonzero((pred == p) | (ref == r))
            if iou > 0.5:
                matched[int(p)] = iou
    tp = len(matched)
    pq = sum(matched.values()) / (tp + (len(p_ids) - tp) / 2 + (len(r_ids) - tp) / 2)
    hits = np.array([int(p) in matched for p in sorted(p_ids, key=lambda p: -scores[p])])
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return pq, float((envelope * hits).sum() / len(r_ids))


def test_evaluate_scores_stitched_objects_like_a_direct_calculation(tmp_path: Path) -> None:
    """Perfect queries through the instance pipeline, then `geoseg evaluate --task instance`."""
    import json

    import rasterio

    from geoseg.pipelines.instances import InstanceOptions, segment_instances
    from tests.conftest import write_raster

    truth = object_scene(96, 96, seed=3)
    image = write_raster(tmp_path / "scene.tif", truth, descriptions=("object", "class"))
    meta = ModelMeta(
        task="instance", arch="hf-mask2former", encoder=None, bands=("object", "class"),
        normalization=Normalization((0.0, 0.0), (1.0, 1.0)), schema=THING_SCHEMA,
        window=32, margin=4, options={"min_pixels": 1},
    )  # fmt: skip
    model = HFMaskPredictor(PerfectQueries(), meta, torch.device("cpu"))
    pred_path = tmp_path / "pred.tif"
    opts = InstanceOptions(window=32, margin=4, chunk=48, scheduler="sync")
    segment_instances(image, lambda: model, pred_path, opts)
    with rasterio.open(pred_path) as src:
        classes, pred = src.read().astype(np.int64)
        scores = json.loads(src.tags()["GEOSEG_INSTANCE_SCORES"])
    ids, cls = truth.astype(np.int64)
    ref = np.roll(ids, 3, axis=1)  # shifted 3 px: small objects no longer match
    ref[ref == 7] = 0  # one object missed
    ref_cls = np.where(ref > 0, np.roll(cls, 3, axis=1), 0)
    ref_path = write_raster(tmp_path / "ref.tif", np.stack([ref, ref_cls]).astype(np.uint32),
                            descriptions=("instance", "class"))  # fmt: skip
    out = tmp_path / "ev"
    args = ["evaluate", "--prediction", str(pred_path), "--labels", str(ref_path), "-o",
            str(out), "--task", "instance"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    per_class = [
        _pq_ap50(np.where(classes == c, pred, 0), np.where(ref_cls == c, ref, 0), scores)
        for c in (2, 5)
    ]
    assert 0.2 < report["pq"] < 0.95 and 0.2 < report["ap50"] < 0.95
    assert report["pq"] == pytest.approx(np.mean([pq for pq, _ in per_class]))
    assert report["ap50"] == pytest.approx(np.mean([ap for _, ap in per_class]))


def test_imported_oneformer_instances_are_transformers(tmp_path: Path) -> None:
    """Import (task tokens) -> geoseg's predictor -> the same things as transformers'
    processor given its own task_inputs and the masks at the window size (panoptic: a
    tiny random model finds no thing segment; its rule is checked above on discs)."""
    task = "instance"
    import transformers

    from tests.models.hf_folders import ONEFORMER

    folder, model = model_folder(tmp_path / "of", ONEFORMER, NAMES)
    out = tmp_path / "of.safetensors"
    result = _import(folder, out, "--task", task, "--things", "building,tree",
                     "--score-threshold", "0.05")  # fmt: skip
    assert result.exit_code == 0, result.output
    load_predictor.cache_clear()
    loaded = load_predictor(model_spec(str(out), "cpu"))
    assert isinstance(loaded, HFMaskPredictor) and loaded.oneformer
    loaded.min_pixels = 0
    x = np.random.default_rng(7).uniform(0, 255, (1, 3, 64, 64)).astype(np.float32)
    ((masks, classes, scores),) = loaded.predict_instances(x, np.ones((1, 64, 64), bool))
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    own = transformers.OneFormerProcessor(processor("oneformer"), tokenizer, task_seq_length=12)
    tokens = own(images=[np.zeros((64, 64, 3), np.uint8)], task_inputs=[task],
                 return_tensors="pt")["task_inputs"]  # fmt: skip
    norm = loaded._base.normalize(x, np.ones((1, 64, 64), bool))
    with torch.no_grad():
        raw = model(pixel_values=torch.from_numpy(norm), task_inputs=tokens)
    raw.masks_queries_logits = F.interpolate(
        raw.masks_queries_logits, size=(64, 64), mode="bilinear", align_corners=False
    )
    post = own.image_processor
    post.class_info_file = ""
    ref = post.post_process_instance_segmentation(raw, threshold=0.05)[0]
    segs = sorted((s for s in ref["segments_info"] if s["label_id"] > 0),
                  key=lambda s: -s["score"])  # fmt: skip
    # by design each connected component is an object of its own: regroup them
    assert len(segs) > 0 and len(masks) >= len(segs)  # the ground (stuff) is left out
    for s in segs:
        same = np.isclose(scores, s["score"], atol=1e-6) & (classes == s["label_id"])
        assert (
            split_components((ref["segmentation"].numpy() == s["id"])[None])[1] == 0
        ).sum() == same.sum()
        np.testing.assert_array_equal(ref["segmentation"].numpy() == s["id"], masks[same].any(0))
