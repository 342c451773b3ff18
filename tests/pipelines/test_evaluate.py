"""evaluate_scene scores exactly what predict writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.errors import OutputExistsError
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
