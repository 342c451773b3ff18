"""evaluate_scene scores exactly what predict writes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.errors import GeosegError, OutputExistsError
from geoseg.io.checkpoint import load_checkpoint, save_checkpoint
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.pipelines.evaluate import evaluate_scene
from tests.conftest import TINY_BANDS, TINY_SCHEMA, textured_scene, write_raster


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    data = textured_scene(90, 110)
    data[:, :20, :30] = 0
    return write_raster(tmp_path / "s.tif", data, nodata=0, descriptions=TINY_BANDS)


def test_a_model_scored_against_its_own_prediction_is_perfect(
    tmp_path: Path, scene: Path, tiny_checkpoint: Path
) -> None:
    lc = tmp_path / "lc.tif"
    predict_scene(scene, str(tiny_checkpoint), lc, PredictOptions(device="cpu"))
    opts = PredictOptions(device="cpu", chunk=48)  # another chunking: same labels
    result = evaluate_scene(str(tiny_checkpoint), scene, lc, tmp_path / "ev", opts)
    assert result.metrics.miou == pytest.approx(1.0)
    assert result.metrics.overall_accuracy == pytest.approx(1.0)
    with rasterio.open(lc) as src:
        labels = src.read(1)
    assert result.metrics.pixels == int((labels != 255).sum())
    counts = [int((labels == c).sum()) for c in TINY_SCHEMA.ids]
    assert list(result.metrics.support) == counts
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["miou"] == pytest.approx(1.0) and report["pixels"] == result.metrics.pixels
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 0
    lines = (tmp_path / "ev" / "confusion.csv").read_text().splitlines()
    assert lines[0].split(",")[1:] == list(TINY_SCHEMA.names)


def test_maps_merge_classes_before_scoring(tmp_path: Path, scene: Path) -> None:
    lc = tmp_path / "lc.tif"
    predict_scene(scene, "spectral", lc)
    with rasterio.open(lc) as src:
        pred = src.read(1)
    # Reference: the spectral map with vegetation (1) recoded as 7; mapped back, it is perfect.
    ref = np.where(pred == 1, 7, pred).astype(np.uint8)
    ref_path = write_raster(tmp_path / "ref.tif", ref[None], nodata=255)
    result = evaluate_scene(
        "spectral", scene, ref_path, tmp_path / "ev", reference_map={0: 0, 7: 1, 2: 2, 3: 3, 4: 4}
    )
    assert result.metrics.overall_accuracy == pytest.approx(1.0)
    # Merge every spectral class into "not water" vs water: confusion is 2 x 2.
    from geoseg.types import ClassInfo, ClassSchema

    binary = ClassSchema((ClassInfo(0, "water", (0, 0, 255)), ClassInfo(1, "other", (9, 9, 9))))
    result = evaluate_scene(
        "spectral", scene, ref_path, tmp_path / "ev2", classes=binary,
        reference_map={0: 0, 7: 1, 2: 1, 3: 1, 4: 1}, prediction_map={0: 0, 1: 1, 2: 1, 3: 1, 4: 1},
    )  # fmt: skip
    assert result.confusion.shape == (2, 2) and result.confusion[0, 1] == 0


def test_existing_reports_are_refused(tmp_path: Path, scene: Path) -> None:
    lc = tmp_path / "lc.tif"
    predict_scene(scene, "spectral", lc)
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "metrics.json").write_text("{}")
    with pytest.raises(OutputExistsError):
        evaluate_scene("spectral", scene, lc, tmp_path / "ev")
    assert (tmp_path / "ev" / "metrics.json").read_text() == "{}"


@pytest.fixture(scope="module")
def change_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The tiny U-Net re-labelled as a change model: class 1 = no change, 4 and 9 = change."""
    tensors, meta = load_checkpoint(tiny_checkpoint)
    out = tmp_path_factory.mktemp("change") / "change.safetensors"
    return save_checkpoint(out, tensors, dataclasses.replace(meta, task="change"))


@pytest.mark.parametrize(("changed", "nodata"), [(255, 255), (1, None)])
def test_change_task_scores_the_change_class(
    tmp_path: Path, scene: Path, change_checkpoint: Path, changed: int, nodata: int | None
) -> None:
    predicted = tmp_path / "pred.tif"
    predict_scene(scene, str(change_checkpoint), predicted, PredictOptions(device="cpu"))
    with rasterio.open(predicted) as src:
        pred = src.read(1)
    pred_change, pred_same = np.isin(pred, [4, 9]), pred == 1
    # Reference = the prediction, then 40 false alarms, 25 misses and 10 unscored pixels
    ref = np.where(pred_change, changed, 0).astype(np.uint8)
    ref.flat[np.flatnonzero(pred_change)[:40]] = 0
    ref.flat[np.flatnonzero(pred_same)[:25]] = changed
    ref.flat[np.flatnonzero(pred_same)[25:35]] = 7  # neither 0 nor change: not scored
    mask = write_raster(tmp_path / "mask.tif", ref[None], nodata=nodata)  # 255 = change here
    result = evaluate_scene(
        str(change_checkpoint), scene, mask, tmp_path / "ev", PredictOptions(device="cpu")
    )
    tp, fp, fn = int(pred_change.sum()) - 40, 40, 25
    tn = int(pred_same.sum()) - 25 - 10
    assert result.task == "change"
    np.testing.assert_array_equal(result.confusion, [[tn, fp], [fn, tp]])
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["task"] == "change"
    assert report["change_precision"] == pytest.approx(tp / (tp + fp))
    assert report["change_recall"] == pytest.approx(tp / (tp + fn))
    assert report["change_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert report["change_iou"] == pytest.approx(tp / (tp + fp + fn))
    assert report["pixels"] == tp + fp + fn + tn
    assert [c["name"] for c in report["classes"]] == ["no change", "change"]


def test_hand_made_change_metrics() -> None:
    """A 2 x 4 case: TP 3, FP 1, FN 2, TN 2 -> precision 3/4, recall 3/5, F1 2/3, IoU 1/2."""
    from geoseg.evaluation.metrics import metrics_from_confusion
    from geoseg.pipelines.evaluate import CHANGE_SCHEMA, _change_scores

    m = metrics_from_confusion(np.array([[2, 1], [2, 3]]), CHANGE_SCHEMA.names)
    scores = _change_scores(m)
    assert scores.pop("change_note") is None
    assert scores == pytest.approx(
        {"change_precision": 0.75, "change_recall": 0.6, "change_f1": 2 / 3, "change_iou": 0.5}
    )


def test_a_task_other_than_the_checkpoints_is_refused(
    tmp_path: Path, scene: Path, tiny_checkpoint: Path, change_checkpoint: Path
) -> None:
    lc = write_raster(tmp_path / "lc.tif", np.zeros((1, 90, 110), np.uint8))
    with pytest.raises(GeosegError, match=r"tiny\.safetensors: is a semantic model"):
        evaluate_scene(str(tiny_checkpoint), scene, lc, tmp_path / "ev", task="change")
    with pytest.raises(GeosegError, match=r"change\.safetensors: is a change model"):
        evaluate_scene(str(change_checkpoint), scene, lc, tmp_path / "ev", task="semantic")
    with pytest.raises(GeosegError, match=r"spectral: is a semantic model"):
        evaluate_scene("spectral", scene, lc, tmp_path / "ev", task="change")
    assert not (tmp_path / "ev").exists()  # refused before anything is written
    from click.testing import CliRunner

    from geoseg.cli import cli

    args = ["evaluate", "-m", str(tiny_checkpoint), "--image", str(scene), "--labels", str(lc),
            "-o", str(tmp_path / "ev"), "--task", "change", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert f"{tiny_checkpoint}: is a semantic model" in result.output
    assert "--task change" in result.output
