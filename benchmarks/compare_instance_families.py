"""Every instance/panoptic family side by side on the SpaceNet buildings chip (issue 18).

    python benchmarks/compare_instance_families.py --data ../shared/data --minutes 3

The split, classes and scoring are those of the shipped buildings model, imported
from ``sample_data/models/train_buildings_spacenet.py``: the 900 x 900 px chip cut
by columns into train (0-539), validation (540-674, picks the best epoch by AP50)
and test (675-899, scored once). For each family of the registry that trains
``instance`` or ``panoptic`` (its first ``--arch``, a ResNet-18 encoder where it
takes one; see ``_families.py``), with the recipe's window, batch, learning rate
and weight decay on one CPU thread (``--threads``):

1. a probe epoch times one epoch, and the run gets ``floor(budget / epoch)``
   epochs (at least one), so the learning-rate schedule completes within the same
   ``--minutes`` for every family; training stops after the epoch that passes the
   budget should the estimate be short;
2. AP50 and PQ (building class) of the best checkpoint on the test block, run as
   one window (``score_instance_model``, as the recipe scores the shipped model);
3. inference Mpx/s: ``geoseg predict`` (in-process ``predict_instances``; the
   model loaded beforehand) on the test block at the checkpoint's window, best of
   ``--repeat``.

The recipe's weights-free brightness baseline is scored on the same block for
reference. Prints a Markdown table (tiny data: 43 buildings, a few minutes of CPU
training; the point is that every family runs and is measured the same way).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import Timing, say
from _families import FamilyRun, add_family_flags, fitting_window, selected_runs

from geoseg.errors import GeosegError
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.registry import window_multiple
from geoseg.pipelines.instances import predict_instances
from geoseg.pipelines.model_input import PredictOptions
from geoseg.training import load_train_config, train_model
from geoseg.training.instances import read_instance_raster, score_instance_model

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "sample_data" / "models"))
import train_buildings_spacenet as recipe  # noqa: E402  (a script folder, not a package)

#: The recipe's training settings (train_buildings_spacenet.train), less the network.
SETTINGS: dict[str, Any] = {"window": 96, "margin": 16, "batch_size": 8, "lr": 3e-3,
                            "weight_decay": 1e-2, "device": "cpu", "overwrite": True}  # fmt: skip


class _OutOfTime(Exception):
    """Raised by the progress callback once the budget is spent (the best epoch is saved)."""


def _train(run: FamilyRun, blocks: dict[str, Path], labels: Path, out: Path, epochs: int,
           steps: int, budget_s: float, seed: int) -> tuple[int, float]:  # fmt: skip
    """Train ``epochs`` epochs (stopping once past ``budget_s``); epochs run and wall seconds."""
    settings = SETTINGS | {"window": fitting_window(run.arch, SETTINGS["window"])}
    if run.encoder is not None:
        settings["encoder"] = run.encoder
    cfg = load_train_config(
        None, task=run.task, arch=run.arch, images=[str(blocks["train"])],
        labels=[str(labels)], val_images=[str(blocks["val"])], val_labels=[str(labels)],
        classes=recipe.SCHEMA.to_json(), output=str(out), epochs=epochs,
        steps_per_epoch=steps, seed=seed, **settings,
    )  # fmt: skip
    done, t0 = [0], time.perf_counter()

    def stop_when_spent(report: Any) -> None:
        done[0] = report.epoch
        if time.perf_counter() - t0 > budget_s:
            raise _OutOfTime

    with contextlib.suppress(_OutOfTime):
        train_model(cfg, stop_when_spent)
    return done[0], time.perf_counter() - t0


def _mpx_per_s(block: Path, ckpt: Path, out: Path, repeat: int) -> float:
    load_predictor(model_spec(str(ckpt), "cpu"))  # cached: predict finds it loaded
    opts = PredictOptions(device="cpu", overwrite=True, torch_threads=torch.get_num_threads())
    timing = Timing("predict")
    for _ in range(repeat):
        timing.time(lambda: predict_instances(block, str(ckpt), out, opts))
    h, w = recipe.BLOCKS["test"].stop - recipe.BLOCKS["test"].start, 900
    return h * w / timing.best / 1e6


def compare(run: FamilyRun, blocks: dict[str, Path], labels: Path, test: Any,
            tmp: Path, args: argparse.Namespace) -> str:  # fmt: skip
    """One Markdown row: probe, train within the budget, score, time predict."""
    ckpt = tmp / f"{run.family.name}-{run.task}.safetensors"
    budget = args.minutes * 60
    _, probe_s = _train(run, blocks, labels, ckpt, 1, args.steps, math.inf, args.seed)
    epochs = max(1, math.floor(budget / probe_s))
    ran, train_s = _train(run, blocks, labels, ckpt, epochs, args.steps, budget, args.seed)
    predictor = load_predictor(model_spec(str(ckpt), "cpu"))
    meta = predictor.meta  # type: ignore[attr-defined]
    scores = score_instance_model(predictor, [test], window_multiple(meta.arch, meta.options))  # type: ignore[arg-type]
    mpx = _mpx_per_s(blocks["test"], ckpt, tmp / "pred.tif", args.repeat)
    return (f"| {run.family.name} | {run.task} | {run.arch} | {run.encoder or '-'} | "
            f"{scores.ap50:.3f} | {scores.pq:.3f} | {scores.predicted} / {scores.truth} | "
            f"{ran} × {args.steps} | {train_s:.0f} | {mpx:.3f} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per family")
    p.add_argument("--steps", type=int, default=20, help="steps per epoch (the recipe's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the recipe's: 1)")
    p.add_argument("--repeat", type=int, default=2, help="timed predict runs (best counts)")
    p.add_argument("--seed", type=int, default=0)
    add_family_flags(p, ("instance", "panoptic"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    np.seterr(all="ignore")
    src = args.data / "spacenet_atlanta_buildings"
    image, labels = src / "sample_geotiff.tif", src / "geotiff_labels.geojson"
    say(f"SpaceNet chip, budget {args.minutes:g} min per family, {args.threads} torch thread(s)")
    rows = ["| family | task | arch | encoder | AP50 | PQ | predicted / true | epochs × steps "
            "| train s | predict Mpx/s |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        blocks = {k: recipe.crop(image, tmp / f"{k}.tif", slice(0, 900), c, None)
                  for k, c in recipe.BLOCKS.items()}  # fmt: skip
        rasters = {k: read_instance_raster(b, labels, None, recipe.SCHEMA)
                   for k, b in blocks.items()}  # fmt: skip
        threshold = recipe.pick_threshold([rasters["train"], rasters["val"]])
        base = recipe.baseline_scores(rasters["test"], threshold)
        rows.append(f"| brightness baseline | - | - | - | {base.ap50:.3f} | {base.pq:.3f} | "
                    f"{base.predicted} / {base.truth} | - | - | - |")  # fmt: skip
        say(rows[-1])
        for run in selected_runs(args):
            try:
                rows.append(compare(run, blocks, labels, rasters["test"], tmp, args))
            except GeosegError as e:
                rows.append(f"| {run.family.name} | {run.task} | {run.arch} | failed: {e} |")
            say(rows[-1])
    say("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
