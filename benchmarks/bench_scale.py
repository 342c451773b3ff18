"""Scaling out: wall time of `predict` on a 2-worker vs a 1-worker LocalCluster (CPU).

    python benchmarks/bench_scale.py [--size 8000] [--repeat 1]

Each worker is one process with one torch thread (one core), so the ratio shows
how well geoseg spreads chunks over workers: target 2 workers / 1 worker <= 0.65 on
a 2-core machine. Both runs write the same output bytes (checked).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

from _common import say, verdict, write_scene, write_unet_checkpoint

from geoseg.pipelines import PredictOptions, predict_scene


def _run(scene: Path, ckpt: Path, out: Path, workers: int) -> tuple[float, str]:
    opts = PredictOptions(
        device="cpu", scheduler="local", workers=workers, torch_threads=1, overwrite=True,
        chunk=1024, batch_size=4,
    )  # fmt: skip
    t0 = time.perf_counter()
    predict_scene(scene, str(ckpt), out, opts)
    return time.perf_counter() - t0, hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scene = write_scene(work / "scene.tif", args.size, args.size)
        ckpt = write_unet_checkpoint(work / "unet.safetensors")
        best: dict[int, float] = {}
        digests = set()
        for _ in range(args.repeat):
            for workers in (1, 2):
                wall, digest = _run(scene, ckpt, work / f"out{workers}.tif", workers)
                best[workers] = min(best.get(workers, wall), wall)
                digests.add(digest)
                say(f"{workers} worker(s): {wall:.1f} s, {args.size**2 / wall / 1e6:.2f} Mpx/s")
    say(f"outputs identical across worker counts: {len(digests) == 1}")
    ok = verdict("2 workers / 1 worker wall time", best[2] / best[1], 0.65, args.check)
    return 1 if args.check and not (ok and len(digests) == 1) else 0


if __name__ == "__main__":
    sys.exit(main())
