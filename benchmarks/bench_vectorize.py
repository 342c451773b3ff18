"""Chunked vectorization vs one whole-array ``rasterio.features.shapes`` call.

Targets (issue 5):

* time of ``label_polygons`` (chunked polygonization, seam dissolve, class names,
  true areas and perimeters) / time of a single whole-array
  ``rasterio.features.shapes`` call on the same 8 000 x 8 000 label raster:
  <= 1.5 with 2 workers. The baseline holds the whole array in memory; geoseg
  reads one chunk per worker.
* peak RSS of ``geoseg vectorize`` on a 20 000 x 20 000 label raster: < 3 GB
  (measured in a fresh process, threads scheduler so every byte is in it).

The label raster is synthetic: a smooth field (regions from ~100 px to several
thousand px across, so many span chunks) cut into 6 classes, 0.5 % speckle, and
a nodata strip; UTM 33N at 10 m, tiled and deflate-compressed, written strip by
strip.

    .venv/bin/python benchmarks/bench_vectorize.py                  # both targets
    .venv/bin/python benchmarks/bench_vectorize.py --size 4000 --memory-size 8000   # quick
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
from _common import Timing, exit_code, fmt_mb, run_measured, say, verdict
from affine import Affine

RATIO_TARGET = 1.5
RSS_TARGET_MB = 3000
STRIP = 512


def label_strip(y0: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Rows ``[y0, y0 + height)`` of the synthetic label raster, ``(height, width) uint8``."""
    y = np.arange(y0, y0 + height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    field = (
        np.sin(y / 900) * np.cos(x / 700)
        + 0.35 * np.sin(y / 97) * np.cos(x / 131)
        + 0.15 * np.sin((x + 2 * y) / 41)
    )
    labels = np.digitize(field, [-0.8, -0.3, 0.2, 0.6, 1.0]).astype(np.uint8)
    rng = np.random.default_rng([seed, y0])
    speckle = rng.random((height, width)) < 0.005
    labels[speckle] = rng.integers(0, 6, int(speckle.sum()))
    labels[:, : width // 50] = 255  # a nodata strip along the west edge
    return labels


def write_labels(path: Path, size: int) -> Path:
    profile = {
        "driver": "GTiff", "height": size, "width": size, "count": 1, "dtype": "uint8",
        "crs": "EPSG:32633", "transform": Affine(10.0, 0, 500_000.0, 0, -10.0, 5_000_000.0),
        "nodata": 255, "tiled": True, "blockxsize": 512, "blockysize": 512,
        "compress": "deflate", "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, STRIP):
            h = min(STRIP, size - y0)
            dst.write(label_strip(y0, h, size)[None], window=((y0, y0 + h), (0, size)))
    return path


@contextlib.contextmanager
def scheduler_for(args: argparse.Namespace) -> Iterator[str]:
    """The ``--scheduler`` to pass; ``cluster`` starts a LocalCluster outside the timing."""
    if args.scheduler != "cluster":
        yield args.scheduler
        return
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=args.workers, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def time_ratio(path: Path, args: argparse.Namespace) -> bool:
    from geoseg.pipelines.vectorize import VectorizeOptions, label_polygons

    with rasterio.open(path) as src:  # the baseline's read is not timed
        labels, transform = src.read(1), src.transform
    base, ours = Timing("shapes"), Timing("geoseg")
    counts = {"shapes": 0, "geoseg": 0}

    def shapes() -> None:
        found = rasterio.features.shapes(labels, labels != 255, transform=transform)
        counts["shapes"] = sum(1 for _ in found)

    with scheduler_for(args) as scheduler:
        opts = VectorizeOptions(chunk=args.chunk, scheduler=scheduler, workers=args.workers)

        def vectorize() -> None:
            counts["geoseg"] = len(label_polygons(path, opts))

        for _ in range(args.repeat):
            base.time(shapes)
            ours.time(vectorize)
    say(f"  shapes (whole array, 1 call): {base.summary()} -> {counts['shapes']} polygons")
    say(
        f"  geoseg label_polygons (chunk {args.chunk}, {args.scheduler}, "
        f"{args.workers} workers): {ours.summary()} -> {counts['geoseg']} polygons"
    )
    return verdict("time ratio geoseg / shapes", ours.best / base.best, RATIO_TARGET, args.check)


def peak_rss(path: Path, out: Path, args: argparse.Namespace) -> bool:
    script = Path(sys.executable).with_name("geoseg")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "geoseg.cli"]
    cmd += ["vectorize", str(path), "-o", str(out), "--overwrite", "--chunk", str(args.chunk)]
    cmd += ["--workers", str(args.workers)]
    result = run_measured(cmd)
    if result["rc"] != 0:
        raise SystemExit(f"geoseg vectorize failed ({result['rc']}): {' '.join(cmd)}")
    rss, wall = fmt_mb(result["maxrss_kib"]), result["wall_s"]
    say(f"  geoseg vectorize: peak RSS {rss}, wall {wall:.0f} s")
    return verdict("peak RSS (MB)", result["maxrss_kib"] / 1024, RSS_TARGET_MB, args.check)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=8000, help="side of the timed raster (px)")
    p.add_argument("--memory-size", type=int, default=20000, help="side for the RSS run (px)")
    p.add_argument(
        "--chunk", type=int, default=2048, help="vectorize chunk (geoseg vectorize's default)"
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--scheduler",
        default="threads",
        help="threads, local (started per run, timed), cluster (2-process LocalCluster "
        "started before timing, like an existing tcp:// cluster)",
    )
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--skip-memory", action="store_true", help="only the time ratio")
    p.add_argument("--skip-time", action="store_true", help="only the peak RSS")
    p.add_argument("--dir", type=Path, help="folder for rasters (default: a temp dir)")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="geoseg-vec-", dir=args.dir) as tmp:
        folder = Path(tmp)
        if not args.skip_time:
            t0 = time.perf_counter()
            path = write_labels(folder / f"labels_{args.size}.tif", args.size)
            size = args.size
            say(f"{size} x {size} label raster written in {time.perf_counter() - t0:.0f} s")
            results.append(time_ratio(path, args))
            path.unlink()
        if not args.skip_memory:
            t0 = time.perf_counter()
            big = write_labels(folder / f"labels_{args.memory_size}.tif", args.memory_size)
            size = args.memory_size
            say(f"{size} x {size} label raster written in {time.perf_counter() - t0:.0f} s")
            results.append(peak_rss(big, folder / "labels.gpkg", args))
    return exit_code(results, args.check)


if __name__ == "__main__":
    sys.exit(main())
