"""Inference end-to-end ÷ model-only for every instance/panoptic family (target: <= 1.15).

For each family of the registry that trains ``instance`` or ``panoptic`` (its first
``--arch``, see ``_families.py``), trains a checkpoint for one step on the
generated scene (the weights barely matter: the ratio measures what the pipeline
adds) and measures on the CPU with the same window, margin and batch size:

(a) end-to-end ``geoseg predict`` in-process: ``predict_instances`` for an
    instance checkpoint, ``predict_panoptic`` for a panoptic one (read, pad,
    forward, the family's post-processing, ownership, seam edges, staging, id
    resolution, relabel, COG copy with overviews; panoptic: the fused COG too);
(b) model-only: the same predictor's ``predict_instances`` (forward plus the
    family's own post-processing: connected components, Mask R-CNN box/mask
    decoding, Matrix NMS, centre grouping) on exactly the windows of the global
    grid, ``ceil(H/S) * ceil(W/S)``, cut from the same scene, in the same batches.

The model is loaded once before timing (the per-process cache), so neither side
pays for it. Verdict on the ratio of the best wall times; ``cpu`` is the ratio of
process CPU seconds (all threads), a cross-check on a busy machine, where waiting
for a core inflates wall times at random.

    python benchmarks/bench_instance.py --size 512 --window 128 --repeat 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from _common import Timing, exit_code, n_windows, say
from _families import (
    FamilyRun,
    add_family_flags,
    fitting_window,
    sample_scene,
    selected_runs,
    task_data,
    train_tiny,
)

from geoseg.errors import GeosegError
from geoseg.models.cache import load_predictor, model_spec
from geoseg.pipelines.instances import predict_instances, predict_panoptic
from geoseg.pipelines.model_input import PredictOptions

TARGET = 1.15


def grid_windows(scene: Path, window: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """The global grid's windows of ``scene``: ``(n, C, W, W) float32`` and ``(n, W, W) bool``.

    Window ``(r, c)`` starts at ``(r * S - margin, c * S - margin)``, ``S = W - 2 * margin``;
    outside the scene the pixels are mirrored (the pipeline's padding).
    """
    with rasterio.open(scene) as src:
        image = src.read().astype(np.float32)
    _, h, w = image.shape
    s = window - 2 * margin
    rows, cols = -(-h // s), -(-w // s)
    pad = ((0, 0), (margin, rows * s - h + margin), (margin, cols * s - w + margin))
    padded = np.pad(image, pad, mode="symmetric")
    valid = np.pad(np.ones((h, w), bool), pad[1:], mode="constant")
    cut = [(r * s, c * s) for r in range(rows) for c in range(cols)]
    x = np.stack([padded[:, y : y + window, x : x + window] for y, x in cut])
    v = np.stack([valid[y : y + window, x : x + window] for y, x in cut])
    return x, v


def measure(run: FamilyRun, tmp: Path, args: argparse.Namespace) -> tuple[str, bool]:
    """One row: train one step, then (a) and (b) interleaved ``--repeat`` times."""
    ckpt = tmp / f"{run.family.name}-{run.task}.safetensors"
    train_tiny(run, task_data(run.task, tmp, args.size), ckpt, window=64, epochs=1,
               steps_per_epoch=1, batch_size=2)  # fmt: skip
    window = fitting_window(run.arch, args.window)
    scene = sample_scene(tmp, args.size)["after"]
    opts = PredictOptions(window=window, margin=args.margin, batch_size=args.batch_size,
                          device="cpu", overwrite=True)  # fmt: skip
    predictor = load_predictor(model_spec(str(ckpt), "cpu"))  # what predict will find cached
    x, v = grid_windows(scene, window, args.margin)
    assert len(x) == n_windows(args.size, args.size, window, args.margin)
    predict = predict_panoptic if run.task == "panoptic" else predict_instances
    e2e, bare = Timing("end-to-end"), Timing("model only")
    b = args.batch_size
    for _ in range(args.repeat):
        e2e.time(lambda: predict(scene, str(ckpt), tmp / "out.tif", opts))
        bare.time(lambda: [predictor.predict_instances(x[k : k + b], v[k : k + b])
                           for k in range(0, len(x), b)])  # type: ignore[attr-defined]  # fmt: skip
    ratio = e2e.best / bare.best
    mpx = args.size**2 / e2e.best / 1e6
    cpu = e2e.cpu_best / bare.cpu_best
    row = (f"{run.label:<40} {len(x):>4} {bare.best:8.2f} {e2e.best:8.2f} {mpx:7.3f} "
           f"{ratio:7.3f} {cpu:7.3f}  {'PASS' if ratio <= TARGET else 'MISS'}")  # fmt: skip
    return row, ratio <= TARGET


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512, help="side of the generated scene, px")
    p.add_argument("--window", type=int, default=128, help="rounded up to the arch's multiple")
    p.add_argument("--margin", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--check", action="store_true")
    add_family_flags(p, ("instance", "panoptic"))
    a = p.parse_args(argv)
    say(f"CPU, scene {a.size}^2 px, window {a.window}, margin {a.margin}, batch {a.batch_size}")
    say(f"{'family (task, arch)':<40} {'wins':>4} {'model s':>8} {'e2e s':>8} {'Mpx/s':>7} "
        f"{'ratio':>7} {'cpu':>7}  verdict on ratio (<= {TARGET})")  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in selected_runs(a):
            try:
                row, ok = measure(run, Path(tmp), a)
            except GeosegError as e:
                row, ok = f"{run.label:<40} FAILED: {e}", False
            say(row)
            results.append(ok)
    return exit_code(results, a.check)


if __name__ == "__main__":
    sys.exit(main())
