"""Training data pipeline: share of each family's step time outside the model (target <= 10 %).

    python benchmarks/bench_train.py [--steps 6] [--batch-size 8] [--window 64]
        [--tasks semantic,change,instance,panoptic] [--families smp,maskrcnn]

For every trainable family of the registry (each task it trains; its first
``--arch``, a ResNet-18 encoder where it takes one) trains two short epochs on a
generated scene (see ``_families.py``) with the loop's timing hook
(:class:`geoseg.training.timing.StepTimes`) and splits the steps of the second
epoch (the first includes warm-up) into:

- batch: window sampling, augmentation, normalization (the sampler and loop);
- targets: the objective's work before the model's forward (target building:
  boundary maps, centre heatmaps, Mask R-CNN boxes and masks, SOLOv2 grids);
- model: forward, loss, backward, optimizer and scheduler steps.

The data share is ``(batch + targets) / step total``; ``ckpt`` is the share of the
whole fit spent outside the steps (checkpoint and state writes once per epoch).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from _common import exit_code, say
from _families import add_family_flags, selected_runs, task_data, train_tiny

from geoseg.errors import GeosegError
from geoseg.models.registry import training_tasks
from geoseg.training.timing import StepTimes

TARGET = 0.10
HEADER = (
    f"{'family (task, arch)':<44} {'win/s':>6} {'batch':>6} {'targets':>7} {'fwd':>6} "
    f"{'loss':>6} {'update':>6} {'data':>6} {'ckpt':>6}  verdict"
)


def measure(run: object, data: dict[str, object], out: Path, args: argparse.Namespace) -> str:
    """One row: train the run, split its second epoch's steps."""
    timing = StepTimes()
    train_tiny(
        run, data, out, timing, window=args.window, batch_size=args.batch_size,
        steps_per_epoch=args.steps, epochs=2,
    )  # fmt: skip
    t = timing.totals(skip=args.steps)
    total = sum(t.values())
    share = timing.data_share(skip=args.steps)
    steps_all = sum(sum(r) for r in timing.steps)
    pct = {k: f"{100 * v / total:5.1f}%" for k, v in t.items()}
    ok = share <= TARGET
    return (
        f"{run.label:<44} {args.steps * args.batch_size / total:6.1f} {pct['batch']:>6} "  # type: ignore[attr-defined]
        f"{pct['targets']:>7} {pct['forward']:>6} {pct['loss']:>6} {pct['update']:>6} "
        f"{100 * share:5.1f}% {100 * (1 - steps_all / timing.fit_s):5.1f}%  "
        f"{'PASS' if ok else 'MISS'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per epoch (2 epochs)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--window", type=int, default=64, help="rounded up to the arch's multiple")
    parser.add_argument("--size", type=int, default=384, help="side of the generated scene, px")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    add_family_flags(parser, training_tasks())
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    say(f"CPU, batch {args.batch_size}, window {args.window} px, {args.steps} steps timed, "
        f"torch threads {torch.get_num_threads()}; data target <= {TARGET:.0%}")  # fmt: skip
    say(HEADER)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(selected_runs(args)):
            data = task_data(run.task, Path(tmp), args.size)
            try:
                row = measure(run, data, Path(tmp) / f"m{i}.safetensors", args)
            except GeosegError as e:  # a family that cannot train this tiny setup: say why
                row = f"{run.label:<44} FAILED: {e}"
            say(row)
            results.append(row.endswith("PASS"))
    return exit_code(results, args.check)


if __name__ == "__main__":
    sys.exit(main())
