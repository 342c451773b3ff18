"""Experiment: early-fusion and Siamese change models on the LEVIR-CD sample pairs (not shipped).

    python sample_data/models/train_change_levir.py --data ../shared/data \
        [--archs early siam-diff siam-conc] [--seeds 0 1 2] [-o best.safetensors] [--overwrite]
        [--date-augment] [--swap-dates] [--depth 3|4] [--window 64] [--batch-size 16]
        [--epochs 30] [--select] [--tta none|flips|d4] [--ema 0.99]
        [--append]   # --append: add runs to a scores file of the same setup

The 11 LEVIR-CD crops (0.5 m RGB, Texas, two dates, building-change masks) are
PNGs without georeferencing. Each is written as a GeoTIFF on a clearly local grid
(LOCAL_CS, origin 0,0, 0.5 m pixels: the location is synthetic, only the pixel size
is real), the two dates are stacked with ``geoseg stack`` and each architecture
(``--task change --arch early|siam-diff|siam-conc``, the same encoder and decoder
sizes) is trained once per seed (``--date-augment``: with simulated date-to-date
differences; ``--swap-dates``: each window's dates exchanged with probability 1/2;
``--depth 4``: a four-stage encoder with decoder channels 128, 64, 32, 16 instead of
three stages with 64, 32, 16).
Seven pairs train, one validates (it picks each run's best epoch), three are held
out and scored with ``geoseg evaluate``; nothing is chosen by the held-out scores.
``--select`` scores the validation pair instead and leaves the held-out pairs unread
by any model: the runs that choose a recipe are made that way. ``--tta flips|d4``
scores the same trained model a second time with test-time augmentation (``geoseg
evaluate --tta``: class probabilities averaged over the 4 flips or the 8 rotations
and flips); each run then also records ``change_f1_tta``, ``change_iou_tta``, ... .
The scores file keeps every run's change F1/IoU, each architecture's mean and
spread over the seeds, and the figure of the first early-fusion run (F1 0.685,
one seed, no date augmentation). The LEVIR-CD images are for research and
non-commercial use only, so no model is shipped; ``-o`` keeps the run with the
best validation score (default: thrown away with the working folder). Existing
outputs (model, scores) are refused before any work unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
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
from geoseg.tiling.tta import TTA_MODES
from geoseg.training import load_train_config, train_model
from geoseg.training.config import TrainConfig
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


#: The first early-fusion run (one seed, window 64, 30 epochs, no date augmentation).
FIRST_EARLY_FUSION = {
    "arch": "early (unet)", "seeds": [0], "change_f1": 0.6852773910375911,
    "change_iou": 0.5212334422227807, "date_augment": False,
}  # fmt: skip
ARCHS = ("early", "siam-diff", "siam-conc")
#: ``--depth`` -> the decoder's channels, one per encoder stage.
DECODERS = {3: [64, 32, 16], 4: [128, 64, 32, 16]}
#: What the script writes into a scores file; ``--append`` carries any other key over.
WRITTEN = ("held_out_pairs", "train_pairs", "val_pairs", "scored", "setup", "summary", "runs",
           "first_early_fusion")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's options (see the module doc)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--depth", type=int, choices=sorted(DECODERS), default=3,
                        help="Encoder stages (the decoder has one block per stage).")  # fmt: skip
    parser.add_argument("--swap-dates", action="store_true",
                        help="Exchange each window's dates with probability 1/2.")  # fmt: skip
    parser.add_argument("--select", action="store_true", help="Score the validation pair, "
                        "not the held-out pairs (runs that choose a recipe).")  # fmt: skip
    parser.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="Keep a moving average of the weights (decay per step; 0 = off).",
    )
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="Also score each model with this test-time augmentation.")  # fmt: skip
    parser.add_argument("--encoder", default="tu-resnet18")
    parser.add_argument("--date-augment", action="store_true",
                        help="Train with simulated date-to-date differences.")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, help="Keep the best-validating model here.")
    parser.add_argument("--scores", type=Path, default=HERE / "change_levir_scores.json")
    parser.add_argument("--overwrite", action="store_true", help="Replace the model and scores.")
    parser.add_argument("--append", action="store_true", help="Add these runs to the scores "
                        "file (same setup; a run of one arch and seed is replaced).")  # fmt: skip
    args = parser.parse_args(argv)
    for name in ("epochs", "steps_per_epoch", "window", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if any(s < 0 for s in args.seeds):
        parser.error("--seeds must not be negative")
    return args


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse existing outputs (without ``--overwrite``) and a missing data folder, before work.

    Raises:
        OutputExistsError: the model or the scores file exists.
        GeosegError: no LEVIR-CD samples under ``--data``.
    """
    for path in (args.output, None if args.append else args.scores):
        if path is not None:
            check_output_path(path, args.overwrite)
    if not (args.data / "levir_cd_samples" / "label").is_dir():
        raise GeosegError(
            f"{args.data / 'levir_cd_samples'}: no LEVIR-CD samples there; give --data"
        )


def _score(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _config(args: argparse.Namespace, pairs: dict[str, tuple[Path, Path]], train: list[str],
            arch: str, seed: int, output: Path) -> TrainConfig:  # fmt: skip
    """One run: the same split, encoder, decoder sizes and schedule for every architecture."""
    return load_train_config(
        None, images=[str(pairs[n][0]) for n in train], labels=[str(pairs[n][1]) for n in train],
        val_images=[str(pairs[n][0]) for n in VAL], val_labels=[str(pairs[n][1]) for n in VAL],
        classes=CHANGE.to_json(), output=str(output), task="change", arch=arch,
        encoder=args.encoder,
        options={"encoder_depth": args.depth, "decoder_channels": DECODERS[args.depth]},
        window=args.window, margin=8, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size, seed=seed, overwrite=True, date_augment=args.date_augment,
        swap_dates=args.swap_dates, ema=args.ema,
    )  # fmt: skip


def _run(cfg: TrainConfig, pairs: dict[str, tuple[Path, Path]], work: Path,
         scored: tuple[str, ...] = TEST, tta_mode: str = "none") -> dict[str, Any]:  # fmt: skip
    """Train ``cfg``, score the ``scored`` pairs together (and again with ``tta_mode``
    unless it is ``"none"``): the run's record."""
    start = time.perf_counter()
    result = train_model(
        cfg,
        lambda r: print(f"  {cfg.arch} seed {cfg.seed} epoch {r.epoch} loss {r.loss:.4f} "
                        f"val mIoU {r.val_miou:.4f}", flush=True),
    )  # fmt: skip
    record: dict[str, Any] = {
        "arch": cfg.arch, "seed": cfg.seed, "best_val_miou": result.best_miou,
    }  # fmt: skip
    for tta in ("none", *(() if tta_mode == "none" else (tta_mode,))):
        scoring = time.perf_counter()
        conf = np.zeros((2, 2), np.int64)
        for n in scored:
            ev = evaluate_scene(
                cfg.output, pairs[n][0], pairs[n][1], work / f"eval_{cfg.seed}_{n}_{tta}",
                PredictOptions(device="cpu", tta=tta),
            )  # fmt: skip
            conf += ev.confusion
        record.update(_change_record(conf, "" if tta == "none" else "_tta"))
        record.setdefault("pixels", int(conf.sum()))
        record.setdefault("change_pixels", int(conf[1].sum()))
        if tta != "none":
            record["tta"] = tta
            record["tta_scoring_seconds"] = round(time.perf_counter() - scoring, 1)
    record["minutes"] = round((time.perf_counter() - start) / 60, 2)
    return record


def _change_record(conf: np.ndarray, suffix: str) -> dict[str, Any]:
    """F1, IoU, precision, recall and note of the change class of a 2 x 2 confusion,
    keys ending in ``suffix``."""
    m = metrics_from_confusion(conf, CHANGE.names)
    values = {"change_f1": _score(m.f1[1]), "change_iou": _score(m.iou[1]),
              "change_precision": _score(m.precision[1]), "change_recall": _score(m.recall[1]),
              "change_note": m.notes()[1]}  # fmt: skip
    return {k + suffix: v for k, v in values.items()}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per architecture: mean, sample standard deviation, min and max of F1 and IoU
    (and of ``change_f1_tta``/``change_iou_tta`` where the runs have them)."""
    out: dict[str, dict[str, Any]] = {}
    for arch in dict.fromkeys(r["arch"] for r in runs):
        mine = [r for r in runs if r["arch"] == arch]
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in mine]}
        for key in ("change_f1", "change_iou", "change_f1_tta", "change_iou_tta"):
            if not all(key in r for r in mine):
                continue
            values = [r[key] for r in mine if r[key] is not None]
            entry[key] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "min": min(values, default=None), "max": max(values, default=None),
            }  # fmt: skip
        out[arch] = entry
    return out


def _setup(args: argparse.Namespace) -> dict[str, Any]:
    return {"encoder": args.encoder, "encoder_depth": args.depth,
            "decoder_channels": DECODERS[args.depth], "window": args.window,
            "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
            "batch_size": args.batch_size, "date_augment": args.date_augment,
            "swap_dates": args.swap_dates,
            **({"tta": args.tta} if args.tta != "none" else {}),
            **({"ema": args.ema} if args.ema else {})}  # fmt: skip


def carried_sections(args: argparse.Namespace) -> dict[str, Any]:
    """``--append``: the scores file's keys the script does not write (notes, history)."""
    if not (args.append and args.scores.is_file()):
        return {}
    found = json.loads(args.scores.read_text())
    return {k: v for k, v in found.items() if k not in WRITTEN}


def earlier_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--append``: the runs already in the scores file, less those about to be rerun.

    Raises:
        GeosegError: the file's runs were made with another setup.
    """
    if not (args.append and args.scores.is_file()):
        return []
    found = json.loads(args.scores.read_text())
    scored = "val_pairs (--select)" if args.select else "held_out_pairs"
    if found.get("scored", "held_out_pairs") != scored:
        raise GeosegError(f"{args.scores}: its runs scored {found.get('scored')}, these {scored}")
    if found.get("setup") != _setup(args):
        raise GeosegError(
            f"{args.scores}: its runs used {found.get('setup')}; append runs of the same setup"
        )
    return [r for r in found["runs"] if r["seed"] not in args.seeds or r["arch"] not in args.archs]


def _report(args: argparse.Namespace, train: list[str], runs: list[dict[str, Any]],
            carried: dict[str, Any]) -> dict:  # fmt: skip
    """The scores file: split, what was scored, setup, per-architecture summary, every run,
    the first figure, and what ``--append`` carried over."""
    return {
        "held_out_pairs": list(TEST), "train_pairs": train, "val_pairs": list(VAL),
        "scored": "val_pairs (--select)" if args.select else "held_out_pairs",
        "setup": _setup(args), "summary": summarise(runs), "runs": runs,
        "first_early_fusion": FIRST_EARLY_FUSION, **carried,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Train every (arch, seed), score the held-out pairs, write the scores: exit code."""
    args = parse_args(argv)
    try:
        check_outputs(args)
        runs = earlier_runs(args)
        carried = carried_sections(args)
    except GeosegError as exc:
        print(f"train_change_levir: error: {exc}", file=sys.stderr)
        return 2
    levir = args.data / "levir_cd_samples"
    names = sorted(p.stem for p in (levir / "label").glob("*.png"))
    train = [n for n in names if n not in TEST + VAL]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pairs = {n: _pair(levir, work, n) for n in names}
        best: tuple[float, Path] | None = None
        for seed in args.seeds:  # seed-major: an interrupted comparison is still a fair one
            for arch in args.archs:
                model = work / f"{arch}_{seed}.safetensors"
                cfg = _config(args, pairs, train, arch, seed, model)
                runs.append(_run(cfg, pairs, work, VAL if args.select else TEST, args.tta))
                print(json.dumps(runs[-1]), flush=True)
                report = _report(args, train, runs, carried)
                write_json(args.scores, report, args.overwrite or args.append or len(runs) > 1)
                val = runs[-1]["best_val_miou"]
                if best is None or val > best[0]:
                    best = (val, model)
        if args.output is not None and best is not None:
            shutil.copyfile(best[1], args.output)
    print(json.dumps(summarise(runs), indent=2))
    if args.output is not None:
        print(f"kept the best-validating model at {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
