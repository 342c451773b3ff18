"""Import the ukis-csmask Sentinel-2 L1C cloud models and score them on the Slovenia patch.

    pip install 'geoseg[clouds]'      # onnxruntime + ukis-csmask (Apache-2.0)
    python sample_data/models/score_clouds_ukis.py --data ../shared/data

ukis-csmask ships U-Nets (EfficientNet-B4) as ONNX graphs with their band
statistics (``model_{4b,6b}_l1c.json``): input ``(N, bands, 256, 256)`` reflectance
normalized by those statistics, output logits of 0 clear, 1 cloud, 2 cloud shadow.
This script brings each one in with :func:`geoseg.pipelines.importing.import_model`
(the ``geoseg import`` command) from the installed package (nothing is copied into
the repository), runs ``geoseg predict`` on the five dates of the eo-learn
Slovenia patch (101 x 100 px, 10 m, 13 TOA bands as reflectance) and scores the
cloud class against the patch's own cloud mask (``npy/CLM.npy``), which is cloud on
every pixel of two dates and clear on every pixel of the other three.

The models were trained at about 30 m; the patch is 10 m. Each model is scored on
the 10 m grid as it is (how ``--mask-clouds`` runs) and on a 30 m version of each
date (3 x 3 mean, 34 x 34 px), where the reference is still all cloud / all clear.
With whole dates either cloudy or clear, these are per-pixel agreement figures on
two cloudy and three clear scenes, not a cloud-edge benchmark. Writes
``clouds_ukis_scores.json`` beside this script.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.pipelines.importing import ImportOptions, import_model
from geoseg.types import ClassInfo, ClassSchema

HERE = Path(__file__).resolve().parent
PATCH = "eolearn_slovenia_lulc"
#: ukis-csmask band name -> Sentinel-2 band.
S2_BANDS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir16": "B11",
            "swir22": "B12"}  # fmt: skip
CLOUD_CLASSES = ClassSchema(
    (ClassInfo(0, "clear", (0, 0, 0)), ClassInfo(1, "cloud", (255, 255, 255)),
     ClassInfo(2, "cloud shadow", (90, 90, 90)))
)  # fmt: skip


def import_ukis(name: str, out: Path) -> Path:
    """``model_<name>.onnx`` of the installed ukis-csmask as a geoseg checkpoint."""
    import ukis_csmask

    root = Path(ukis_csmask.__file__).parent
    info = json.loads((root / f"model_{name}.json").read_text())
    stats = info["data"]["dataset_statistics"]
    opts = ImportOptions(
        bands=[S2_BANDS[b] for b in stats["band_names"]], schema=CLOUD_CLASSES,
        window=int(info["data"]["target_size"][0]), margin=32,
        mean=stats["img"][0], std=stats["img"][1], scale=10000.0, gsd_m=30.0, overwrite=True,
    )  # fmt: skip
    return import_model(root / f"model_{name}.onnx", out, opts).output


def coarsen(scene: Path, out: Path, factor: int = 3) -> Path:
    """``scene`` averaged over ``factor`` x ``factor`` pixels (10 m -> 30 m)."""
    with rasterio.open(scene) as src:
        h, w = -(-src.height // factor), -(-src.width // factor)
        data = src.read(out_shape=(src.count, h, w), resampling=Resampling.average)
        transform = src.transform * src.transform.scale(src.width / w, src.height / h)
        profile = {**src.profile, "height": h, "width": w, "transform": transform}
        names = src.descriptions
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(names, start=1):
            dst.set_band_description(i, d or f"band {i}")
    return out


def classes_of(model: Path, scene: Path, out: Path) -> np.ndarray:
    """``(H, W) uint8`` class ids (0 clear, 1 cloud, 2 shadow) of ``model`` on ``scene``."""
    opts = PredictOptions(device="cpu", overwrite=True)
    with rasterio.open(predict_scene(scene, str(model), out, opts).output) as src:
        return src.read(1)


def scores(found: dict[str, np.ndarray], truth: dict[str, bool]) -> dict[str, Any]:
    """Cloud scores over all dates: ``found`` date -> class map, ``truth`` date -> cloudy."""
    tp = fp = fn = tn = 0
    per_date = {}
    for date, labels in found.items():
        cloud = labels == 1
        n = labels.size
        per_date[date] = {
            "clm": "cloud" if truth[date] else "clear",
            "cloud": float(cloud.mean()), "shadow": float((labels == 2).mean()),
            "clear": float((labels == 0).mean()),
        }  # fmt: skip
        if truth[date]:
            tp, fn = tp + int(cloud.sum()), fn + int(n - cloud.sum())
        else:
            fp, tn = fp + int(cloud.sum()), tn + int(n - cloud.sum())
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {
        "cloud_precision": precision, "cloud_recall": recall,
        "cloud_f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "cloud_iou": tp / max(tp + fp + fn, 1), "accuracy": (tp + tn) / (tp + fp + fn + tn),
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}, "dates": per_date,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    args = parser.parse_args()
    patch = args.data / PATCH
    dates = json.loads((patch / "timestamps.json").read_text())
    clm = np.load(patch / "npy" / "CLM.npy")
    scenes = sorted((patch / "geotiff").glob("s2_l1c_*.tif"))
    truth = {}
    for scene in scenes:
        date = scene.stem.removeprefix("s2_l1c_")
        index = next(i for i, t in enumerate(dates) if t.startswith(date))
        truth[date] = bool(clm[index].mean() > 0.5)
    clm_dates = {d: "cloud" if c else "clear" for d, c in truth.items()}
    result: dict[str, Any] = {"patch": PATCH, "reference": "npy/CLM.npy (1 = cloud)",
                              "dates": clm_dates}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name in ("4b_l1c", "6b_l1c"):
            model = import_ukis(name, t / f"{name}.safetensors")
            for grid, factor in (("10m", 1), ("30m", 3)):
                found = {}
                for scene in scenes:
                    date = scene.stem.removeprefix("s2_l1c_")
                    src = scene if factor == 1 else coarsen(scene, t / f"{date}_30m.tif")
                    found[date] = classes_of(model, src, t / f"{name}_{date}_{grid}.tif")
                result[f"{name}_{grid}"] = scores(found, truth)
                r = result[f"{name}_{grid}"]
                print(f"{name} {grid}: cloud F1 {r['cloud_f1']:.3f} IoU {r['cloud_iou']:.3f} "
                      f"precision {r['cloud_precision']:.3f} recall {r['cloud_recall']:.3f} "
                      f"accuracy {r['accuracy']:.3f}")  # fmt: skip
    (HERE / "clouds_ukis_scores.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {HERE / 'clouds_ukis_scores.json'}")


if __name__ == "__main__":
    main()
