"""Experiment: an early-fusion change model on the LEVIR-CD sample pairs (not shipped).

    python sample_data/models/train_change_levir.py --data ../shared/data \
        -o change_levir.safetensors [--overwrite]

The 11 LEVIR-CD crops (0.5 m RGB, Texas, two dates, building-change masks) are
PNGs without georeferencing. Each is written as a GeoTIFF on a clearly local grid
(LOCAL_CS, origin 0,0, 0.5 m pixels: the location is synthetic, only the pixel size
is real), the two dates are stacked with ``geoseg stack`` and a 6-band U-Net is
trained with ``--task change``. Seven pairs train, one validates, three are held
out and scored with ``geoseg evaluate``. The LEVIR-CD images are for research and
non-commercial use only, so the model is not shipped; only the scores are kept
(``change_levir_scores.json``). ``-o`` keeps the trained model where you say
(default: thrown away with the working folder). Existing outputs (model, scores)
are refused before any work unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from geoseg.errors import GeosegError
from geoseg.evaluation.metrics import metrics_from_confusion
from geoseg.io.atomic import check_output_path
from geoseg.io.reports import write_json
from geoseg.io.stack import stack_dates
from geoseg.pipelines.evaluate import evaluate_scene
from geoseg.pipelines.predict import PredictOptions
from geoseg.training import load_train_config, train_model
from geoseg.types import ClassInfo, ClassSchema

HERE = Path(__file__).resolve().parent
LOCAL = CRS.from_wkt(
    'LOCAL_CS["local grid, synthetic location, 0.5 m pixels",UNIT["metre",1],'
    'AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)
CHANGE = ClassSchema(
    (ClassInfo(0, "no change", (200, 200, 200)), ClassInfo(1, "change", (227, 26, 28)))
)
TEST = ("test_2_0000_0000", "test_7_0256_0512", "train_386_0512_0768")
VAL = ("val_27_0000_0256",)


def _tif(path: Path, data: np.ndarray, names: tuple[str, ...]) -> Path:
    profile = {
        "driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
        "dtype": data.dtype.name, "crs": LOCAL,
        "transform": from_origin(0, data.shape[1] * 0.5, 0.5, 0.5),
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, n in enumerate(names, start=1):
            dst.set_band_description(i, n)
    return path


def _pair(levir: Path, work: Path, name: str) -> tuple[Path, Path]:
    dates = []
    for d in ("A", "B"):
        with rasterio.open(levir / d / f"{name}.png") as src:
            dates.append(_tif(work / f"{name}_{d}.tif", src.read()[:3], ("red", "green", "blue")))
    with rasterio.open(levir / "label" / f"{name}.png") as src:
        mask = (src.read(1) > 127).astype(np.uint8)[None]
    stacked = stack_dates(dates, work / f"{name}_AB.tif")
    return stacked, _tif(work / f"{name}_change.tif", mask, ("change",))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's options (see the module doc)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("-o", "--output", type=Path, help="Keep the trained model here.")
    parser.add_argument("--scores", type=Path, default=HERE / "change_levir_scores.json")
    parser.add_argument("--overwrite", action="store_true", help="Replace the model and scores.")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    return args


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse existing outputs (without ``--overwrite``) and a missing data folder, before work.

    Raises:
        OutputExistsError: the model or the scores file exists.
        GeosegError: no LEVIR-CD samples under ``--data``.
    """
    for path in (args.output, args.scores):
        if path is not None:
            check_output_path(path, args.overwrite)
    if not (args.data / "levir_cd_samples" / "label").is_dir():
        raise GeosegError(
            f"{args.data / 'levir_cd_samples'}: no LEVIR-CD samples there; give --data"
        )


def _score(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def main(argv: list[str] | None = None) -> int:
    """Train, score the held-out pairs, write the scores (and ``-o`` the model): exit code."""
    args = parse_args(argv)
    try:
        check_outputs(args)
    except GeosegError as exc:
        print(f"train_change_levir: error: {exc}", file=sys.stderr)
        return 2
    levir = args.data / "levir_cd_samples"
    names = sorted(p.stem for p in (levir / "label").glob("*.png"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pairs = {n: _pair(levir, work, n) for n in names}
        train = [pairs[n] for n in names if n not in TEST + VAL]
        cfg = load_train_config(
            None, images=[str(p[0]) for p in train], labels=[str(p[1]) for p in train],
            val_images=[str(pairs[n][0]) for n in VAL], val_labels=[str(pairs[n][1]) for n in VAL],
            classes=CHANGE.to_json(), output=str(args.output or work / "change.safetensors"),
            task="change", arch="unet", encoder="tu-resnet18",
            options={"encoder_depth": 3, "decoder_channels": [64, 32, 16]},
            window=64, margin=8, epochs=args.epochs, steps_per_epoch=25, batch_size=16, seed=0,
            overwrite=args.overwrite,
        )  # fmt: skip
        result = train_model(
            cfg,
            lambda r: print(
                f"epoch {r.epoch} loss {r.loss:.4f} val mIoU {r.val_miou:.4f}", flush=True
            ),
        )
        conf = np.zeros((2, 2), np.int64)
        for n in TEST:
            ev = evaluate_scene(
                str(cfg.output),
                pairs[n][0],
                pairs[n][1],
                work / f"eval_{n}",
                PredictOptions(device="cpu"),
            )
            conf += ev.confusion
    m = metrics_from_confusion(conf, CHANGE.names)
    report: dict[str, Any] = {
        "held_out_pairs": list(TEST), "train_pairs": [n for n in names if n not in TEST + VAL],
        "val_pairs": list(VAL), "best_val_miou": result.best_miou,
        "change_f1": _score(m.f1[1]), "change_iou": _score(m.iou[1]),
        "change_precision": _score(m.precision[1]), "change_recall": _score(m.recall[1]),
        "change_note": m.notes()[1], "pixels": m.pixels, "change_pixels": int(conf[1].sum()),
    }  # fmt: skip
    write_json(args.scores, report, args.overwrite)
    print(json.dumps(report, indent=2))
    if args.output is not None:
        print(f"kept the model at {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
