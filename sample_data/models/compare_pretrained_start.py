"""Does a pretrained encoder help? ``landcover_s2``'s recipe from scratch vs from weights.

    python sample_data/models/compare_pretrained_start.py --data ../shared/data \\
        --weights resnet18_sentinel2_all_moco-59bfdff9.pth \\
        --weights-bands B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B10,B11,B12

Trains the shipped land-cover model's recipe (``train_default_models.py``: the
eo-learn Slovenia patch, the same train/validation/test blocks, six bands, U-Net
on ``tu-resnet18`` cut at depth 3) twice per seed: from a random start and with
``encoder_weights`` (here torchgeo's SSL4EO MoCo Sentinel-2 ResNet-18, whose 13
input kernels are picked by band name for the six bands). Both runs of a seed see
the same windows; each is scored once on the test block. Prints and writes
``pretrained_start.json`` in ``--out``. geoseg ships no result of this: the
weights cannot be downloaded where geoseg is built and tested, and the loading
itself is tested (``tests/training/test_encoder_weights.py``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from train_default_models import LANDCOVER, NET, SLOVENIA_DATES, split

from geoseg.pipelines.evaluate import evaluate_scene
from geoseg.pipelines.predict import PredictOptions
from geoseg.training import load_train_config, train_model

#: The blocks of ``train_default_models.py`` (rows; all 100 columns).
BLOCKS = {"train": (slice(0, 60), slice(0, 100)), "val": (slice(60, 75), slice(0, 100)),
          "test": (slice(75, 101), slice(0, 100))}  # fmt: skip


def run(parts: dict[str, list[tuple[Path, Path]]], out: Path, seed: int, epochs: int,
        weights: str | None, bands: list[str] | None) -> dict[str, Any]:  # fmt: skip
    """Train one model (``weights`` None: random start) and score it on the test block."""
    cfg = load_train_config(
        None, images=[str(p[0]) for p in parts["train"]],
        labels=[str(p[1]) for p in parts["train"]], val_images=[str(parts["val"][0][0])],
        val_labels=[str(parts["val"][0][1])], classes=LANDCOVER.to_json(), output=str(out),
        window=48, margin=8, epochs=epochs, steps_per_epoch=25, batch_size=16, lr=3e-3,
        seed=seed, device="auto", overwrite=True, encoder_weights=weights, encoder_bands=bands,
        **NET,
    )  # fmt: skip
    best = train_model(cfg).best_miou
    image, labels = parts["test"][0]
    opts = PredictOptions(device="cpu", overwrite=True)
    test = evaluate_scene(str(out), image, labels, out.with_suffix(".eval"), opts).metrics
    return {"seed": seed, "val_miou": best, "test_miou": test.miou,
            "test_overall_accuracy": test.overall_accuracy}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
    parser.add_argument("--data", type=Path, default=shared)
    parser.add_argument("--weights", required=True, help="encoder state dict (.pth/.safetensors)")
    parser.add_argument("--weights-bands", help="the file's input bands, comma-separated")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    bands = args.weights_bands.split(",") if args.weights_bands else None
    runs: dict[str, list[dict[str, Any]]] = {"random start": [], "pretrained start": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        slo = args.data / "eolearn_slovenia_lulc" / "geotiff"
        parts: dict[str, list[tuple[Path, Path]]] = {"train": [], "val": [], "test": []}
        for date in SLOVENIA_DATES:
            got = split(work, slo / f"s2_l1c_{date}.tif", slo / "lulc.tif", BLOCKS, f"slo_{date}")
            parts["train"].append(got["train"])
            if date == SLOVENIA_DATES[-1]:
                parts["val"].append(got["val"])
                parts["test"].append(got["test"])
        for seed in args.seeds:
            for start, weights in (("random start", None), ("pretrained start", args.weights)):
                out = work / f"{start.split()[0]}_{seed}.safetensors"
                runs[start].append(run(parts, out, seed, args.epochs, weights, bands))
                print(start, runs[start][-1], flush=True)
    summary = {
        start: {"runs": rs, "mean_test_miou": float(np.mean([r["test_miou"] for r in rs]))}
        for start, rs in runs.items()
    }
    report = {"weights": args.weights, "epochs": args.epochs, **summary}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pretrained_start.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
