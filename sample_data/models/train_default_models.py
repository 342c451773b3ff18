"""Recipe that trains and scores the default models shipped in sample_data/models/.

    python sample_data/models/train_default_models.py --data ../shared/data

Real labelled data (not shipped; see the data folder's README):

* ``landcover_s2.safetensors``: Sentinel-2 L1C, 1 km x 1 km near Ljubljana
  (eo-learn example patch, 2015), three clear dates, 5 land-cover classes.
* ``water_s2.safetensors``: Sentinel-2 L1C chip of a flood near Murcia
  (Sen1Floods11, 2019), hand-labelled water / not water.

Each raster is split into three spatially separate blocks: train, validation
(picks the best epoch) and test (scored once, at the end, for the model and for
the weights-free ``spectral`` baseline on the same pixels). Both models read the
six bands B02, B03, B04, B08, B11, B12 (10-20 m), the bands of the demo scene.

``--auto --time-budget 8m`` plans each model from its train block as ``geoseg train
--auto`` does (:mod:`auto_recipe`), trains it, scores the same test block and writes
the figures under ``"auto"`` in scores.json beside the recipe's; the shipped file is
replaced only when the planned model wins by more than noise (``auto_recipe.is_better``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from auto_recipe import MARGIN_MIOU, is_better, plan_and_train, side_by_side
from rasterio.windows import Window

from geoseg.io.checkpoint import load_checkpoint, save_checkpoint
from geoseg.pipelines.calibrate import calibrate_model
from geoseg.pipelines.evaluate import evaluate_scene
from geoseg.pipelines.predict import PredictOptions
from geoseg.training import load_train_config, train_model
from geoseg.training.plan_file import parse_duration
from geoseg.types import ClassInfo, ClassSchema

HERE = Path(__file__).resolve().parent
BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
NET = {"arch": "unet", "encoder": "tu-resnet18",
       "options": {"encoder_depth": 3, "decoder_channels": [64, 32, 16]}}  # fmt: skip

LANDCOVER = ClassSchema((
    ClassInfo(1, "cultivated land", (255, 211, 0)),
    ClassInfo(2, "forest", (27, 120, 55)),
    ClassInfo(3, "grassland", (150, 210, 90)),
    ClassInfo(4, "shrubland", (160, 120, 60)),
    ClassInfo(8, "artificial surface", (227, 26, 28)),
))  # fmt: skip
WATER = ClassSchema(
    (ClassInfo(0, "not water", (230, 230, 200)), ClassInfo(1, "water", (31, 120, 180)))
)
SLOVENIA_DATES = ("2015-07-11", "2015-08-30", "2015-09-09")


def crop(
    src_path: Path, dst_path: Path, rows: slice, cols: slice, bands: tuple[str, ...] | None
) -> Path:
    """Write a block of ``src_path`` (selected bands, same georeferencing) as a GeoTIFF."""
    with rasterio.open(src_path) as src:
        win = Window.from_slices(rows, cols, height=src.height, width=src.width)
        names = [d or str(i + 1) for i, d in enumerate(src.descriptions)]
        canon = [n.upper().replace("B0", "B") for n in names]
        idx = [canon.index(b.replace("B0", "B")) + 1 for b in bands] if bands else [1]
        data = src.read(idx, window=win)
        profile = src.profile | {
            "height": data.shape[1], "width": data.shape[2], "count": len(idx),
            "transform": src.window_transform(win), "tiled": False, "compress": "deflate",
        }  # fmt: skip
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(data)
            for i, b in enumerate(idx, start=1):
                dst.set_band_description(i, names[b - 1] if not bands else bands[i - 1])
    return dst_path


def split(
    work: Path, image: Path, labels: Path, blocks: dict[str, tuple[slice, slice]], tag: str
) -> dict[str, tuple[Path, Path]]:
    return {
        part: (crop(image, work / f"{tag}_{part}.tif", r, c, BANDS),
               crop(labels, work / f"{tag}_{part}_labels.tif", r, c, None))
        for part, (r, c) in blocks.items()
    }  # fmt: skip


def score(model: str, test: tuple[Path, Path], out: Path, **kw: Any) -> dict[str, Any]:
    result = evaluate_scene(
        model, test[0], test[1], out, PredictOptions(device="cpu", overwrite=True), **kw
    )
    return result.metrics.to_json()


def _json_maps(maps: dict[str, Any]) -> dict[str, Any]:
    out = {k: {str(a): b for a, b in v.items()} for k, v in maps.items() if k != "classes"}
    if "classes" in maps:
        out["classes"] = maps["classes"].to_json()
    return out


def train_and_score(
    name: str, data: dict[str, list[tuple[Path, Path]]], schema: ClassSchema, window: int,
    spectral_maps: dict[str, Any], model_maps: dict[str, Any], note: str, epochs: int,
    heldout: dict[str, Any], retrain: bool,
) -> dict[str, Any]:  # fmt: skip
    out = HERE / f"{name}.safetensors"
    heldout = heldout | {"model_maps": _json_maps(model_maps),
                         "spectral_maps": _json_maps(spectral_maps)}  # fmt: skip
    best = train(name, data, schema, window, note, epochs, heldout) if retrain else None
    test = data["test"][0]
    work = test[0].parent
    scores = {
        "model": score(str(out), test, work / f"{name}_eval"),
        "model_compared": score(str(out), test, work / f"{name}_eval_cmp", **model_maps),
        "spectral_compared": score(
            "spectral", test, work / f"{name}_eval_spectral", **spectral_maps
        ),
    }
    tensors, meta = load_checkpoint(out)
    if best is None:
        best = meta.metrics.get("val_miou")
    provenance = dict(meta.provenance) | {"heldout": heldout}
    metrics = dict(meta.metrics) | {"test": scores, "val_miou": best}
    meta = dataclasses.replace(meta, metrics=metrics, provenance=provenance)
    save_checkpoint(out, tensors, meta, overwrite=True)
    return scores | {"best_val_miou": best}


def train(
    name: str, data: dict[str, list[tuple[Path, Path]]], schema: ClassSchema, window: int,
    note: str, epochs: int, heldout: dict[str, Any],
) -> float | None:  # fmt: skip
    """Train one model into sample_data/models/NAME.safetensors; best validation mIoU."""
    out = HERE / f"{name}.safetensors"
    cfg = load_train_config(
        None, images=[str(p[0]) for p in data["train"]], labels=[str(p[1]) for p in data["train"]],
        val_images=[str(p[0]) for p in data["val"]], val_labels=[str(p[1]) for p in data["val"]],
        classes=schema.to_json(), output=str(out), window=window, margin=8, epochs=epochs,
        steps_per_epoch=25, batch_size=16, lr=3e-3, seed=0, device="auto", overwrite=True,
        provenance={"data": note, "heldout": heldout}, **NET,
    )  # fmt: skip

    return train_model(cfg, epoch_printer(name)).best_miou


def epoch_printer(name: str) -> Callable[[Any], None]:
    """A training-loop callback printing one line per epoch."""

    def report(r: Any) -> None:
        print(
            f"{name} epoch {r.epoch}/{r.epochs} loss {r.loss:.4f} val mIoU {r.val_miou:.4f} "
            f"({r.windows / (r.data_s + r.step_s):.0f} windows/s, data {r.data_s:.1f} s, "
            f"step {r.step_s:.1f} s)",
            flush=True,
        )

    return report


def run_auto(
    old: dict[str, Any], budget_s: float, name: str, data: dict[str, list[tuple[Path, Path]]],
    schema: ClassSchema, spectral_maps: dict[str, Any], model_maps: dict[str, Any], note: str,
    heldout: dict[str, Any], **_: Any,
) -> dict[str, Any]:  # fmt: skip
    """``--auto``: plan and train ``name``, score it on the recipe's test block beside ``old``.

    The shipped checkpoint is replaced only when :func:`auto_recipe.is_better`; ``old``
    (the recipe's figures) is kept and the planned model's go under ``"auto"``.
    """
    test = data["test"][0]
    work = test[0].parent
    held = heldout | {"model_maps": _json_maps(model_maps),
                      "spectral_maps": _json_maps(spectral_maps)}  # fmt: skip
    provenance = {"data": note, "heldout": held, "recipe": "train_default_models.py --auto"}
    ckpt, best, secs, plan = plan_and_train(
        name, data, schema, work, budget_s, provenance, epoch_printer(name)
    )
    scores = {
        "model": score(str(ckpt), test, work / f"{name}_auto_eval"),
        "model_compared": score(str(ckpt), test, work / f"{name}_auto_cmp", **model_maps),
        "spectral_compared": old["spectral_compared"],  # the same test pixels: unchanged
    }
    print(side_by_side(name, old["model"], scores["model"]), flush=True)
    won = is_better(scores["model"], old["model"])
    if won:
        tensors, meta = load_checkpoint(ckpt)
        metrics = dict(meta.metrics) | {"test": scores, "val_miou": best}
        save_checkpoint(HERE / f"{name}.safetensors", tensors,
                        dataclasses.replace(meta, metrics=metrics), overwrite=True)  # fmt: skip
    print(f"{name}: the planned model {'replaces' if won else 'does not replace'} the shipped "
          f"one (needs test mIoU > recipe + {MARGIN_MIOU} and kappa not lower)")  # fmt: skip
    auto = scores | {"best_val_miou": best, "train_s": round(secs, 1), "time_budget_s": budget_s,
                     "plan": plan, "replaces_recipe_model": won,
                     "rule": f"test mIoU > recipe + {MARGIN_MIOU}, kappa not lower"}  # fmt: skip
    return old | {"auto": auto, "shipped": "auto" if won else "recipe"}


def slovenia(data: Path, work: Path) -> dict[str, Any]:
    """The land-cover recipe's blocks and settings (``train_and_score`` keywords)."""
    slo = data / "eolearn_slovenia_lulc" / "geotiff"
    blocks = {"train": (slice(0, 60), slice(0, 100)), "val": (slice(60, 75), slice(0, 100)),
              "test": (slice(75, 101), slice(0, 100))}  # fmt: skip
    parts: dict[str, list[tuple[Path, Path]]] = {"train": [], "val": [], "test": []}
    for date in SLOVENIA_DATES:
        got = split(work, slo / f"s2_l1c_{date}.tif", slo / "lulc.tif", blocks, f"slo_{date}")
        parts["train"].append(got["train"])
        if date == SLOVENIA_DATES[-1]:
            parts["val"].append(got["val"])
            parts["test"].append(got["test"])
    # spectral classes -> nearest land-cover class: water 0 -> artificial, vegetation 1 ->
    # forest, bare 2 -> grassland, built-up 3 -> artificial, cloud 4 -> artificial
    spectral_to_lc = {0: 8, 1: 2, 2: 3, 3: 8, 4: 8}
    return dict(
        name="landcover_s2", data=parts, schema=LANDCOVER, window=48,
        spectral_maps={"classes": LANDCOVER, "prediction_map": spectral_to_lc}, model_maps={},
        note="eo-learn Slovenia patch (EPSG:32633), Sentinel-2 L1C 2015-07-11/08-30/09-09, rows "
        "0-59 train, 60-74 validation, 75-100 test (2015-09-09)",
        heldout={"image": "eolearn_slovenia_lulc/geotiff/s2_l1c_2015-09-09.tif",
                 "labels": "eolearn_slovenia_lulc/geotiff/lulc.tif", "rows": [75, 101],
                 "cols": [0, 100]},
    )  # fmt: skip


def spain(data: Path, work: Path) -> dict[str, Any]:
    """The water recipe's blocks and settings (``train_and_score`` keywords)."""
    s1f = data / "sen1floods11_spain"
    blocks = {"train": (slice(0, 512), slice(0, 320)), "val": (slice(0, 512), slice(320, 416)),
              "test": (slice(0, 512), slice(416, 512))}  # fmt: skip
    got = split(
        work, s1f / "Spain_7370579_S2Hand.tif", s1f / "Spain_7370579_LabelHand.tif", blocks, "s1f"
    )
    water_map = {0: 1, 1: 0, 2: 0, 3: 0, 4: 0}
    return dict(
        name="water_s2", data={k: [v] for k, v in got.items()}, schema=WATER, window=64,
        spectral_maps={"classes": WATER, "prediction_map": water_map},
        model_maps={"classes": WATER},
        note="Sen1Floods11 Spain_7370579 (EPSG:4326), Sentinel-2 L1C 2019-09-18, columns 0-319 "
        "train, 320-415 validation, 416-511 test",
        heldout={"image": "sen1floods11_spain/Spain_7370579_S2Hand.tif",
                 "labels": "sen1floods11_spain/Spain_7370579_LabelHand.tif", "rows": [0, 512],
                 "cols": [416, 512]},
    )  # fmt: skip


RECIPES = {"landcover_s2": slovenia, "water_s2": spain}


def calibrate_shipped(name: str, val: tuple[Path, Path], work: Path) -> None:
    """Replace ``NAME.safetensors`` by its copy with a temperature fitted on ``val``.

    The weights are untouched (the file's tensors hash is the same); only the metadata
    gains ``temperature`` and the fit's ECE/NLL, so label maps and scores are unchanged.
    """
    shipped = HERE / f"{name}.safetensors"
    got = calibrate_model(str(shipped), val[0], val[1], work / f"{name}.safetensors")
    print(f"{name}: T {got.temperature:.3f}", flush=True)
    os.replace(work / f"{name}.safetensors", shipped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--score-only", action="store_true", help="re-score the shipped models")
    parser.add_argument("--auto", action="store_true", help="plan from the train block "
                        "(geoseg train --auto), train, score beside the recipe's figures; "
                        "replace a shipped model only if it wins by more than noise")  # fmt: skip
    parser.add_argument("--calibrate", action="store_true", help="fit the shipped models' "
                        "softmax temperature on their validation block (what training with "
                        "validation rasters now does) without retraining")  # fmt: skip
    parser.add_argument("--time-budget", default="8m", help="--auto: training budget (8m, 90s)")
    parser.add_argument("--models", default=",".join(RECIPES), help="comma-separated subset")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 on a shared machine: "
                        "2 threads on 2 busy cores made a step 4-35x slower)")  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = HERE / "scores.json"
    report: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            kw = RECIPES[name](args.data, Path(tmp))
            if args.calibrate:
                calibrate_shipped(kw["name"], kw["data"]["val"][0], Path(tmp))
                continue
            if args.auto:
                budget = parse_duration(args.time_budget)
                report[name] = run_auto(report[name], budget, **kw)
                report[name]["auto"]["threads"] = torch.get_num_threads()
            else:
                kw["epochs"], kw["retrain"] = args.epochs, not args.score_only
                report[name] = train_and_score(**kw) | (
                    {"auto": report[name]["auto"]} if "auto" in report.get(name, {}) else {}
                )
        # after each model: a later model's failure keeps the earlier one's figures
        path.write_text(json.dumps(report, indent=2, default=lambda o: None) + "\n")
    print(json.dumps(report, indent=2, default=lambda o: None))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
