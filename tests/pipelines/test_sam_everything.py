"""SAM segment everything (``geoseg predict -m sam --task instance``): grid, filters, NMS, seams.

Random tiny weights give meaningless masks, so the mechanics are tested with an
oracle: the encoder is replaced by the window's object ids and the decoder by
the mask of the object under each queried point (plus two candidates SAM's
filters must drop), and the scene result must be the objects exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner
from scipy import ndimage

from geoseg.cli import cli
from geoseg.errors import CheckpointError, GeosegError
from geoseg.models import sam_everything
from geoseg.models.cache import load_predictor
from geoseg.models.sam import Decoded, SamPrompter
from geoseg.models.sam_everything import (
    EverythingSettings,
    everything_predictor,
    nms_keep,
    point_grid,
    quality_keep,
    stability_scores,
)
from geoseg.pipelines.importing import ImportOptions, import_model
from geoseg.pipelines.instances import predict_instances
from geoseg.pipelines.model_input import PredictOptions
from tests.conftest import TINY_BANDS, textured_scene, write_raster
from tests.models.sam2_folders import sam2_folder
from tests.pipelines.test_instance_cli import instance_checkpoint  # noqa: F401 (fixture)

T = Affine(10, 0, 500000, 0, -10, 5100000)
H, W, S = 600, 700, 256  # tiny SAM: 256 px windows, default margin 32, stride 192


def label_scene() -> np.ndarray:
    """``(H, W) int32`` objects (connected components, ids 1..n): rectangles and discs of
    at least 20 px (a 16 x 16 grid on 256 px windows hits each), two larger than a window
    across window and chunk seams, none touching another."""
    yy, xx = np.mgrid[:H, :W]
    fg = np.zeros((H, W), bool)
    fg |= (yy >= 180) & (yy < 204) & (xx >= 20) & (xx < 660)  # across every column seam
    fg |= (yy >= 250) & (yy < 580) & (xx >= 370) & (xx < 395)  # across row seams
    rng = np.random.default_rng(3)
    for _ in range(80):
        cy, cx = rng.integers(15, H - 15), rng.integers(15, W - 15)
        if rng.random() < 0.5:
            shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(11, 20) ** 2
        else:
            hy, hx = rng.integers(10, 24, size=2)
            shape = (abs(yy - cy) <= hy) & (abs(xx - cx) <= hx)
        if not (ndimage.binary_dilation(shape, iterations=3) & fg).any():
            fg |= shape
    labels, _ = ndimage.label(fg)
    return labels.astype(np.int32)


def oracle_decode(
    self: SamPrompter, embedding: Any, points: Any = None, labels: Any = None,
    boxes: Any = None, keep: str = "best",
) -> Decoded:  # fmt: skip
    """Per point, SAM's three candidates: the object under it (logit +5, predicted IoU
    0.95); the whole window, at logit +5 with IoU 0.80 (even points: fails the IoU filter)
    or at logit 0.5 with IoU 0.99 (odd points: stability 0 fails the stability filter);
    the object grown by 1 px (IoU 0.90: passes both, NMS must drop it). Candidates of
    background points other than the whole window score 0.3."""
    ids = embedding[0].numpy().astype(np.int64)
    cols, rows = np.minimum(points[:, 0, :].astype(np.int64), S - 1).T
    hit = ids[rows, cols]
    obj = ids[None] == hit[:, None, None]
    odd = (np.arange(len(hit)) % 2 == 1)[:, None, None]
    logits = np.empty((len(hit), 3, S, S), np.float32)
    logits[:, 0] = np.where(obj, 5.0, -5.0)
    logits[:, 1] = np.where(odd, 0.5, 5.0)
    logits[:, 2] = np.where(ndimage.maximum_filter(obj, size=(1, 3, 3)), 5.0, -5.0)
    scores = np.where(hit[:, None] > 0, [[0.95, 0.0, 0.90]], 0.3).astype(np.float32)
    scores[:, 1] = np.where(odd[:, 0, 0], 0.99, 0.80)
    return Decoded(logits, scores)


@pytest.fixture
def oracle(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """SAM replaced by the oracle; yields the number of windows each encode call had."""
    encoded: list[int] = []

    def encode(self: SamPrompter, batch: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        encoded.append(len(batch))
        return torch.from_numpy(np.where(valid, batch[:, 0], 0)[:, None].astype(np.float32))

    monkeypatch.setattr(SamPrompter, "encode", encode)
    monkeypatch.setattr(SamPrompter, "decode", oracle_decode)
    load_predictor.cache_clear()
    yield encoded
    load_predictor.cache_clear()


def read(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    with rasterio.open(path) as src:
        return np.asarray(src.read()), src.tags()


def test_scene_objects_are_the_oracle_objects_for_any_chunking(
    sam: str, oracle: list[int], tmp_path: Path
) -> None:
    truth = label_scene()
    n = int(truth.max())
    assert n > 30
    data = np.stack([truth, np.zeros_like(truth), np.zeros_like(truth)]).astype(np.uint8)
    image = write_raster(tmp_path / "scene.tif", data, transform=T, descriptions=("R", "G", "B"))
    runs = []
    for chunk in (192, 576):
        out = tmp_path / f"objects_{chunk}.tif"
        opts = PredictOptions(device="cpu", chunk=chunk, batch_size=3)
        result = predict_instances(image, sam, out, opts)
        assert result.count == n
        runs.append(read(out))
    (a, tags_a), (b, tags_b) = runs
    assert np.array_equal(a, b) and tags_a == tags_b  # the same bytes whatever the chunking
    ids = a[1]
    assert np.array_equal(ids > 0, truth > 0)
    pairs = np.unique(np.stack([truth[truth > 0], ids[truth > 0]]), axis=1)
    # one scene id per object (none cut at a seam) and one object per id (none merged)
    assert pairs.shape[1] == n and len(np.unique(pairs[1])) == n
    assert sorted(np.unique(ids)) == list(range(n + 1))
    assert set(np.unique(a[0][truth > 0])) == {1} and set(np.unique(a[0][truth == 0])) == {255}
    # every object keeps its mask's predicted IoU (the 1-px-grown duplicate's 0.90 lost NMS)
    assert json.loads(tags_a["GEOSEG_INSTANCE_SCORES"]) == [0.0] + [pytest.approx(0.95)] * n
    assert sum(oracle) == 2 * 4 * 4  # each window of the 4 x 4 grid encoded once per run


def test_grid_points_are_cell_centres_row_by_row() -> None:
    assert point_grid(2, 8).tolist() == [[2, 2], [6, 2], [2, 6], [6, 6]]
    assert point_grid(16, 256)[:2].tolist() == [[8, 8], [24, 8]]


def test_stability_is_the_iou_at_plus_and_minus_the_offset() -> None:
    logits = np.array([[[-2.0, -0.5, 0.5], [1.5, 2.0, 3.0]], [[-3.0] * 3] * 2])
    assert stability_scores(logits).tolist() == [pytest.approx(3 / 5), 0.0]
    assert stability_scores(logits, offset=2.5).tolist() == [pytest.approx(1 / 6), 0.0]


def test_quality_filters_are_sams() -> None:
    scores = np.array([0.88, 0.89, 0.95, 0.99, 0.5])
    stability = np.array([1.0, 0.95, 0.949, 1.0, 1.0])
    # predicted IoU strictly above 0.88, stability at least 0.95 (SAM's comparisons)
    assert quality_keep(scores, stability, EverythingSettings()).tolist() == [
        False, True, False, True, False,
    ]  # fmt: skip
    loose = EverythingSettings(pred_iou_thresh=0.4, stability_thresh=0.9)
    assert quality_keep(scores, stability, loose).tolist() == [True] * 5


def box_mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """A 32 x 32 mask covering columns x0..x1 and rows y0..y1 (inclusive)."""
    mask = np.zeros((32, 32), bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


def test_nms_drops_the_lower_of_two_boxes_above_iou_0_7() -> None:
    # boxes (max inclusive, areas as SAM/torchvision: (x1 - x0) * (y1 - y0)):
    # A (0,0,9,9) 81, B (0,0,9,8) 72: IoU 72/81 = 0.89 -> A (lower score) goes;
    # C (0,0,9,5) 45: IoU with B 45/72 = 0.625 -> stays; D elsewhere stays
    masks = np.stack([box_mask(0, 0, 9, 9), box_mask(0, 0, 9, 8), box_mask(0, 0, 9, 5),
                      box_mask(20, 20, 30, 30)])  # fmt: skip
    scores = np.array([0.90, 0.95, 0.92, 0.91], np.float32)
    assert nms_keep(masks, scores).tolist() == [1, 2, 3]
    assert nms_keep(masks, scores, iou=0.6).tolist() == [1, 3]  # 0.625 > 0.6: C goes too
    assert nms_keep(masks, scores, iou=0.9).tolist() == [1, 2, 3, 0]
    assert nms_keep(masks[:0], scores[:0]).tolist() == []


def test_the_real_tiny_sam_runs_end_to_end(
    sam: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # random weights predict IoU ~0: keep every candidate so that masks reach the stitcher
    monkeypatch.setattr(sam_everything, "quality_keep",
                        lambda scores, stability, settings: np.ones(len(scores), bool))  # fmt: skip
    asked: list[tuple[int, ...]] = []
    real = SamPrompter.decode

    def decode(self: SamPrompter, embedding: Any, points: Any = None, labels: Any = None,
               boxes: Any = None, keep: str = "best") -> Decoded:  # fmt: skip
        asked.append((*points.shape, *labels.shape, keep == "all"))
        return real(self, embedding, points, labels, boxes, keep)

    monkeypatch.setattr(SamPrompter, "decode", decode)
    load_predictor.cache_clear()
    data = (textured_scene(300, 400, 3) // 16).astype(np.uint8)
    image = write_raster(tmp_path / "scene.tif", data, transform=T, descriptions=("R", "G", "B"))
    out, vector = tmp_path / "objects.tif", tmp_path / "objects.gpkg"
    args = ["predict", str(image), "-m", sam, "--task", "instance", "-o", str(out),
            "--device", "cpu", "--points-per-side", "4", "--vector", str(vector)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    load_predictor.cache_clear()
    assert result.exit_code == 0, result.output
    # 2 x 3 windows (stride 192), each decoded once: 4 x 4 single positive points, 3 masks each
    assert asked == [(16, 1, 2, 16, 1, True)] * 6
    (bands, _) = read(out)
    assert bands.shape == (2, 300, 400) and bands.dtype == np.uint32
    count = int(bands[1].max())
    assert count > 0 and sorted(np.unique(bands[1])) == list(range(count + 1))
    assert set(np.unique(bands[0][bands[1] > 0])) == {1}
    assert f"wrote {out} ({count} instances)" in result.output
    assert sorted(gpd.read_file(vector)["instance_id"]) == list(range(1, count + 1))


def test_sam2_segments_everything_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SAM 2's prompter is a SAM one (three feature maps per window): the same path runs."""
    model = import_model(sam2_folder(tmp_path / "folder"), tmp_path / "sam2.safetensors",
                         ImportOptions(("R", "G", "B"))).output  # fmt: skip
    monkeypatch.setattr(sam_everything, "quality_keep",
                        lambda scores, stability, settings: np.ones(len(scores), bool))  # fmt: skip
    load_predictor.cache_clear()
    data = (textured_scene(200, 260, 3) // 16).astype(np.uint8)
    image = write_raster(tmp_path / "scene.tif", data, transform=T, descriptions=("R", "G", "B"))
    out = tmp_path / "objects.tif"
    args = ["predict", str(image), "-m", str(model), "--task", "instance", "-o", str(out),
            "--device", "cpu", "--points-per-side", "4"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    load_predictor.cache_clear()
    assert result.exit_code == 0, result.output
    (bands, _) = read(out)
    assert bands.shape == (2, 200, 260) and bands.dtype == np.uint32 and bands[1].max() > 0
    assert set(np.unique(bands[0][bands[1] > 0])) == {1}


def test_points_per_side_is_for_sam_only(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    checkpoint = request.getfixturevalue("instance_checkpoint")
    data = textured_scene(64, 64, len(TINY_BANDS))
    image = write_raster(tmp_path / "s.tif", data, transform=T, descriptions=TINY_BANDS)
    with pytest.raises(GeosegError, match="--points-per-side 4: a SAM checkpoint's point grid"):
        predict_instances(image, str(checkpoint), tmp_path / "o.tif",
                          PredictOptions(device="cpu"), points_per_side=4)  # fmt: skip
    assert not (tmp_path / "o.tif").exists()
    with pytest.raises(CheckpointError, match="applies to SAM checkpoints"):
        everything_predictor(object(), 4)
    with pytest.raises(GeosegError, match="must be at least 1"):
        EverythingSettings(points_per_side=0)


#: refusals of `geoseg predict -m SAM` (extra arguments, words in the one-line error).
REFUSED: dict[str, tuple[list[str], str]] = {
    "no-task": ([], "runs only with --task instance; use `geoseg prompt"),
    "task-panoptic": (["--task", "panoptic"], "use --task instance"),
    "task-semantic": (["--task", "semantic"], "use --task instance"),
    "panoptic-output": (["--task", "instance", "--panoptic", "pan.tif"], "drop --panoptic"),
    "other-window": (["--task", "instance", "--window", "512"], "takes 256 px windows"),
    "margin-zero": (["--task", "instance", "--margin", "0"], "margin must be a whole number >= 1"),
    "probabilities": (["--task", "instance", "--probabilities", "p.tif"], "per-pixel class"),
    "points-semantic": (["--task", "semantic", "--points-per-side", "4"], "use --task instance"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_say_why_and_write_nothing(case: str, sam: str, tmp_path: Path) -> None:
    extra, words = REFUSED[case]
    data = (textured_scene(64, 64, 3) // 16).astype(np.uint8)
    image = write_raster(tmp_path / "scene.tif", data, transform=T, descriptions=("R", "G", "B"))
    before = set(tmp_path.rglob("*"))
    extra = [str(tmp_path / a) if a.endswith(".tif") else a for a in extra]
    args = ["predict", str(image), "-m", sam, "-o", str(tmp_path / "o.tif"), "--device", "cpu"]
    result = CliRunner().invoke(cli, [*args, *extra])
    assert result.exit_code == 2 and words in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert set(tmp_path.rglob("*")) == before
