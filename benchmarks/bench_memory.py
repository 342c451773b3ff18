"""Peak RSS of ``geoseg predict`` on a large scene vs a small one (target: ratio <= 1.3, < 3 GB).

Tiled inference should keep memory bounded by the chunks in flight, so peak memory
must not grow with the scene. This benchmark writes two synthetic 4-band uint16
scenes (tiled 512 x 512, deflate, generated strip by strip), runs ``geoseg predict``
on each in a fresh process, and compares the peak resident set sizes.

Each run is isolated: a wrapper process starts ``geoseg predict`` as its only child
and reads the child's peak RSS with ``getrusage(RUSAGE_CHILDREN)``.

    .venv/bin/python benchmarks/bench_memory.py                      # spectral, 4000 vs 16000
    .venv/bin/python benchmarks/bench_memory.py --small 1000 --large 4000   # quick
    .venv/bin/python benchmarks/bench_memory.py --model unet         # torch, 2000 vs 6000
    .venv/bin/python benchmarks/bench_memory.py --model instance     # objects, 1500 vs 4500
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    exit_code,
    fmt_mb,
    run_measured,
    say,
    verdict,
    write_scene,
    write_unet_checkpoint,
)

RATIO_TARGET = 1.3
ABSOLUTE_TARGET_MB = 3000
DEFAULT_SIZES = {"spectral": (4000, 16000), "unet": (2000, 6000), "instance": (1500, 4500)}


def geoseg_command() -> list[str]:
    """``geoseg`` from this interpreter (the venv's console script if it is there)."""
    script = Path(sys.executable).with_name("geoseg")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from geoseg.cli import main; main()"]


def measure_predict(
    scene: Path, model: str, out: Path, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, float]:
    """Run ``geoseg predict`` in a fresh wrapper process; its peak RSS, CPU and wall time."""
    cmd = [*geoseg_command(), "predict", str(scene), "-m", model, "-o", str(out), "--overwrite"]
    cmd += ["--device", "cpu", "--batch-size", str(args.batch_size), "--chunk", str(args.chunk)]
    if model == "spectral":
        cmd += ["--sensor", "sentinel2"]  # B02..B08 alone are ambiguous without B8A/B11/B12
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.scheduler != "threads":
        cmd += ["--scheduler", args.scheduler]
    if args.progress:
        cmd += ["--progress"]
    result = run_measured(cmd, env)
    if result["rc"] != 0:
        raise SystemExit(f"geoseg predict failed with exit code {result['rc']}: {' '.join(cmd)}")
    return result


def build_scene(path: Path, size: int) -> Path:
    t0 = time.perf_counter()
    step = max(1, size // 10)
    shown = [0]

    def progress(done: int, total: int) -> None:
        if done - shown[0] >= step or done == total:
            shown[0] = done
            say(f"  writing {path.name}: {done}/{total} rows ({time.perf_counter() - t0:.0f} s)")

    write_scene(path, size, size, progress=progress)
    mb = path.stat().st_size / 1e6
    say(f"  {path.name}: {size} x {size} x 4 uint16, {mb:.0f} MB on disk")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model",
        choices=["spectral", "unet", "instance"],
        default="spectral",
        help="spectral (weights-free), or a random-weight U-Net/ResNet-18 checkpoint: unet "
        "(semantic) or instance (bottom-up objects: predict --task instance, stitched ids)",
    )
    p.add_argument("--small", type=int, help="small scene side (default: see DEFAULT_SIZES)")
    p.add_argument("--large", type=int, help="large scene side (default: see DEFAULT_SIZES)")
    p.add_argument("--batch-size", type=int, default=4, help="predict --batch-size")
    p.add_argument("--chunk", type=int, default=1024, help="predict --chunk (px)")
    p.add_argument("--workers", type=int, help="predict --workers (default: dask's)")
    p.add_argument(
        "--scheduler",
        default="threads",
        help="predict --scheduler; with 'local' (a LocalCluster) the peak RSS is that of the "
        "largest process: the client or one worker",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for geoseg, e.g. GDAL_CACHEMAX=64 (repeatable)",
    )
    p.add_argument("--dir", type=Path, help="folder for scenes and outputs (default: a temp dir)")
    p.add_argument("--progress", action="store_true", help="show geoseg's progress bar")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = p.parse_args(argv)
    small, large = (
        args.small or DEFAULT_SIZES[args.model][0],
        args.large or DEFAULT_SIZES[args.model][1],
    )
    env = dict(os.environ)
    env.update(dict(item.split("=", 1) for item in args.env))

    with tempfile.TemporaryDirectory(prefix="geoseg-mem-", dir=args.dir) as tmp:
        tmpdir = Path(tmp)
        model = "spectral"
        if args.model in ("unet", "instance"):
            model = str(
                write_unet_checkpoint(
                    tmpdir / "unet.safetensors", task=args.model.replace("unet", "semantic")
                )
            )
        say(
            f"model {args.model}, scenes {small}^2 and {large}^2, chunk {args.chunk}, "
            f"batch {args.batch_size}, workers {args.workers or 'default'}, "
            f"scheduler {args.scheduler}, env {args.env}"
        )
        runs = {}
        for size in (small, large):
            scene = build_scene(tmpdir / f"scene_{size}.tif", size)
            say(f"  predicting {scene.name} ...")
            r = measure_predict(scene, model, tmpdir / f"labels_{size}.tif", args, env)
            mpx = size * size / 1e6
            say(
                f"  {size} x {size}: peak RSS {fmt_mb(r['maxrss_kib'])}, wall {r['wall_s']:.1f} s, "
                f"cpu {r['cpu_s']:.1f} s, {mpx / r['wall_s']:.2f} Mpx/s"
            )
            runs[size] = r
            scene.unlink()  # keep the disk footprint to one scene at a time
    rss_small, rss_large = runs[small]["maxrss_kib"], runs[large]["maxrss_kib"]
    say(
        f"\npeak RSS: {small}^2 {fmt_mb(rss_small)}, {large}^2 {fmt_mb(rss_large)} "
        f"({(large / small) ** 2:.0f}x the pixels)"
    )
    results = [
        verdict("RSS ratio large/small", rss_large / rss_small, RATIO_TARGET, args.check),
        verdict("large-scene peak RSS (MB)", rss_large / 1024, ABSOLUTE_TARGET_MB, args.check),
    ]
    return exit_code(results, args.check)


if __name__ == "__main__":
    sys.exit(main())
