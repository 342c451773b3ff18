"""Score the flood workflow's water map against the Sen1Floods11 hand label.

    python sample_data/models/score_flood_sen1floods11.py --data ../shared/data

Runs ``geoseg predict`` (:func:`geoseg.pipelines.predict_scene`) on the whole
Sentinel-2 chip ``Spain_7370579_S2Hand.tif`` (EPSG:4326, 512 x 512 px, 13 bands)
with the shipped water model (``water_s2.safetensors``, the flood workflow's
model) and with the weights-free ``spectral`` model (its class ``water`` is the
water map), then scores each water map against ``Spain_7370579_LabelHand.tif``
(1 = water, 0 = not water, -1 = not valid and left out) with geoseg's own
evaluation code (:func:`geoseg.evaluation.confusion_from_labels`,
:func:`geoseg.evaluation.metrics_from_confusion`): water IoU, precision,
recall, and the mapped water area against the label's water area, both in ha
of true ellipsoidal area (:func:`geoseg.areas.pixel_area_m2`, exact per row of
a geographic grid), over the labelled pixels only.

Two regions: the whole chip, and the held-out block the water model was not
trained or validated on (columns 416-511, all rows; ``train_default_models.py``
trains on columns 0-319 and validates on 320-415). The model sees the whole
chip as input, as it would in the workflow; only the scored pixels differ.
Writes ``flood_sen1floods11_scores.json`` beside this script.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from geoseg.areas import HECTARE_M2, pixel_area_m2
from geoseg.evaluation import confusion_from_labels, metrics_from_confusion
from geoseg.pipelines import PredictOptions, predict_scene

HERE = Path(__file__).resolve().parent
CHIP = "sen1floods11_spain/Spain_7370579_S2Hand.tif"
LABEL = "sen1floods11_spain/Spain_7370579_LabelHand.tif"
#: Columns of the chip the water model never saw a label of (train_default_models.py).
HELD_OUT_COLS = (416, 512)
MODELS = {"water_s2": str(HERE / "water_s2.safetensors"), "spectral": "spectral"}


def water_map(model: str, chip: Path, out: Path) -> np.ndarray:
    """``(H, W) uint8`` map of ``model`` on ``chip``: 1 = water, 0 = not water, 255 = nodata."""
    result = predict_scene(chip, model, out, PredictOptions(device="cpu", overwrite=True))
    water = result.schema.ids[result.schema.names.index("water")]
    with rasterio.open(result.output) as src:
        labels = src.read(1)
    return np.where(labels == 255, 255, (labels == water).astype(np.uint8)).astype(np.uint8)


def score(pred: np.ndarray, truth: np.ndarray, area_m2: np.ndarray) -> dict[str, Any]:
    """Water scores of ``(H, W)`` maps (1 water, 0 not water; other values left out).

    Args:
        pred: predicted water map.
        truth: hand label (1 water, 0 not water, -1 not valid).
        area_m2: ``(H, W)`` true area of each pixel, m².
    """
    conf = confusion_from_labels(truth, pred, [0, 1])
    metrics = metrics_from_confusion(conf, ["not water", "water"])
    scored = np.isin(truth, (0, 1)) & np.isin(pred, (0, 1))
    mapped_ha = float(area_m2[scored & (pred == 1)].sum()) / HECTARE_M2
    label_ha = float(area_m2[scored & (truth == 1)].sum()) / HECTARE_M2
    return {
        "pixels": metrics.pixels, "water_iou": metrics.iou[1],
        "water_precision": metrics.precision[1], "water_recall": metrics.recall[1],
        "water_f1": metrics.f1[1], "overall_accuracy": metrics.overall_accuracy,
        "mapped_water_ha": mapped_ha, "label_water_ha": label_ha,
        "area_error_ha": mapped_ha - label_ha,
        "relative_area_error": (mapped_ha - label_ha) / label_ha,
        "confusion": conf.tolist(),
    }  # fmt: skip


def score_models(data: Path, work: Path) -> dict[str, Any]:
    """Scores of every model in :data:`MODELS` on the whole chip and on the held-out block."""
    with rasterio.open(data / LABEL) as src:
        truth = src.read(1).astype(np.int16)
        crs, transform = src.crs, src.transform
    area = pixel_area_m2(crs, transform, np.arange(truth.shape[0]), np.arange(truth.shape[1]))
    cols = slice(*HELD_OUT_COLS)
    report: dict[str, Any] = {
        "image": CHIP, "labels": LABEL, "crs": crs.to_string(),
        "area_method": "ellipsoidal (WGS84) area of every pixel, geoseg.areas.pixel_area_m2",
        "scored": "labelled pixels (label 0 or 1) with a prediction; label -1 left out",
        "held_out": {"rows": [0, truth.shape[0]], "cols": list(HELD_OUT_COLS),
                     "note": "columns 0-319 train, 320-415 validation (train_default_models.py)"},
    }  # fmt: skip
    for name, model in MODELS.items():
        pred = water_map(model, data / CHIP, work / f"{name}.tif")
        report[name] = {
            "chip": score(pred, truth, area),
            "held_out": score(pred[:, cols], truth[:, cols], area[:, cols]),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = score_models(args.data, Path(tmp))
    text = json.dumps(report, indent=2) + "\n"
    (HERE / "flood_sen1floods11_scores.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
