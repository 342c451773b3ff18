"""Transition matrix of two label maps vs one in-memory weighted ``numpy.bincount``.

Target (issue 6): on two 20 000 x 20 000 uint8 maps, time of geoseg's transition
matrix / time of the in-memory baseline <= 1.2, with geoseg's peak RSS < 2 GB.

* geoseg: ``align_label_maps`` + ``transition_matrix`` on the two files, the calls
  ``geoseg change`` makes (``--chunk``, threads scheduler with ``--workers``);
  exact integer sums of its pixel areas, chunk-size invariant.
* baseline: what a user with everything in memory does. Not timed: both maps read
  whole, and the true area of every pixel in one float64 array (filled strip by
  strip with ``geoseg.areas.pixel_area_m2``, ~3.2 GB at 20 000²). Timed: the codes
  ``from * K + to`` (``K * K`` where either date is nodata) and one ``np.bincount``
  weighted by those areas. Codes + an unweighted ``bincount`` are timed too, for
  information.

Each side runs in a fresh process of its own, so each peak RSS (``ru_maxrss`` of a
wrapper's only child) is its own. Wall times are the best of ``--repeat`` runs (on
a shared machine other load only slows a run down). The areas of both sides are
compared (geoseg counts each pixel of a UTM grid as 1/B² of the exact area of its
B x B cell, see geoseg/change/area_cells.py), pixel counts must be identical, and
at a small size two chunk sizes must give bit-identical areas.

The maps: 6 classes drawn per 16 x 16 px patch, independently for each date, 2 %
nodata speckle; UTM 33N at 10 m; tiled, deflate-compressed (as ``geoseg predict``
writes them), written strip by strip.

    .venv/bin/python benchmarks/bench_change.py                  # 20 000², a few minutes
    .venv/bin/python benchmarks/bench_change.py --size 8000      # quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from _common import Timing, exit_code, fmt_mb, run_measured, say, verdict
from affine import Affine

RATIO_TARGET = 1.2
RSS_TARGET_MB = 2000
CLASSES = 6
STRIP = 512  # rows per strip when writing a map
AREA_STRIP = 128  # rows per pixel_area_m2 call when filling the baseline's area array
SMALL = 2000  # side of the maps of the chunk-size invariance check
TRANSFORM = Affine(10, 0, 500_000, 0, -10, 5_200_000)


def write_map(path: Path, size: int, seed: int) -> Path:
    """A ``size x size`` uint8 label map (classes 0-5, 255 nodata), one strip at a time."""
    from geoseg.types import ClassInfo, ClassSchema

    schema = ClassSchema(
        tuple(ClassInfo(i, f"class{i}", (40 * i, 255 - 40 * i, 90)) for i in range(CLASSES))
    )
    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 1, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": TRANSFORM, "nodata": 255, "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate",
               "BIGTIFF": "IF_SAFER"}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, STRIP):
            h = min(STRIP, size - y0)
            coarse = rng.integers(0, CLASSES, size=(h // 16 + 1, size // 16 + 1), dtype=np.uint8)
            strip = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:h, :size]
            strip[rng.random(strip.shape) < 0.02] = 255
            dst.write(strip[None], window=((y0, y0 + h), (0, size)))
        dst.update_tags(GEOSEG_CLASSES=json.dumps(schema.to_json()))
    return path


def geoseg_matrix(maps: list[Path], chunk: int, workers: int | None) -> Any:
    """The transition matrix as ``geoseg change`` computes it."""
    from geoseg.change.align import align_label_maps
    from geoseg.change.transitions import transition_matrix

    aligned = align_label_maps(maps, chunk)
    return transition_matrix(
        aligned.labels[0], aligned.labels[1], aligned.crs, aligned.transform,
        aligned.schema.ids, aligned.schema.names, workers=workers,
    )  # fmt: skip


def run_geoseg(maps: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    timing, out = Timing("geoseg"), {}

    def once() -> None:
        out["m"] = geoseg_matrix(maps, args.chunk, args.workers)

    for _ in range(args.repeat):
        timing.time(once)
    m = out["m"]
    return {
        "best_s": timing.best, "cpu_s": timing.cpu_best, "summary": timing.summary(),
        "area_m2": [*m.area_m2.ravel().tolist(), m.nodata_area_m2],
        "pixels": [*m.pixels.ravel().tolist(), m.nodata_pixels],
    }  # fmt: skip


def run_baseline(maps: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    from geoseg.areas import pixel_area_m2

    t0 = time.perf_counter()
    with rasterio.open(maps[0]) as src:
        before, crs, transform = src.read(1), src.crs, src.transform
    with rasterio.open(maps[1]) as src:
        after = src.read(1)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    height, width = before.shape
    area = np.empty((height, width))  # filled strip by strip: never two copies
    cols = np.arange(width)
    for y0 in range(0, height, AREA_STRIP):
        rows = np.arange(y0, min(y0 + AREA_STRIP, height))
        area[rows[0] : rows[-1] + 1] = pixel_area_m2(crs, transform, rows, cols)
    t_area = time.perf_counter() - t0
    k = CLASSES
    weighted, plain, out = Timing("weighted"), Timing("unweighted"), {}

    def codes() -> np.ndarray:
        c = np.multiply(before, k, dtype=np.intp)
        c += after
        c[(before == 255) | (after == 255)] = k * k
        return c.ravel()

    def with_weights() -> None:
        out["area"] = np.bincount(codes(), weights=area.ravel(), minlength=k * k + 1)

    def without_weights() -> None:
        out["pixels"] = np.bincount(codes(), minlength=k * k + 1)

    for _ in range(args.repeat):
        weighted.time(with_weights)
        plain.time(without_weights)
    return {
        "best_s": weighted.best, "summary": weighted.summary(), "plain": plain.summary(),
        "read_s": t_read, "area_s": t_area,
        "area_m2": out["area"].tolist(), "pixels": out["pixels"].tolist(),
    }  # fmt: skip


def in_fresh_process(kind: str, maps: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Run ``--run kind`` in a new process; its results plus its peak RSS (KiB)."""
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-", dir=args.dir) as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--run", kind, "--result", str(result),
               "--chunk", str(args.chunk), "--workers", str(args.workers),
               "--repeat", str(args.repeat), *[str(m) for m in maps]]  # fmt: skip
        rusage = run_measured(cmd)
        if rusage["rc"] != 0:
            raise SystemExit(f"the {kind} run failed ({rusage['rc']}): {' '.join(cmd)}")
        return {**json.loads(result.read_text()), "maxrss_kib": rusage["maxrss_kib"]}


def chunk_invariant(folder: Path, args: argparse.Namespace) -> bool:
    size = min(args.size, SMALL)
    maps = [write_map(folder / f"small{i}.tif", size, 10 + i) for i in range(2)]
    other = max(64, args.chunk // 4 + 7)
    a, b = (geoseg_matrix(maps, c, args.workers) for c in (args.chunk, other))
    same = np.array_equal(a.area_m2, b.area_m2) and a.nodata_area_m2 == b.nodata_area_m2
    say(f"chunk-size invariance ({size}², chunks {args.chunk} vs {other}): "
        f"{'identical areas' if same else 'AREAS DIFFER'}")  # fmt: skip
    return same


def compare(ours: dict[str, Any], base: dict[str, Any]) -> bool:
    """Same pixel counts; print how far geoseg's areas are from the per-pixel sums."""
    k2 = CLASSES * CLASSES
    pixels = np.array(ours["pixels"])
    same_pixels = np.array_equal(pixels, np.array(base["pixels"]))
    a, b = np.array(ours["area_m2"]), np.array(base["area_m2"])
    rel = np.abs(a - b)[b > 0] / b[b > 0]
    say(f"  pixel counts identical: {'yes' if same_pixels else 'NO'}; areas: max relative "
        f"difference {rel.max():.1e} over {k2} transitions + nodata "
        f"(total {a.sum() / 1e6:.3f} vs {b.sum() / 1e6:.3f} km²)")  # fmt: skip
    return same_pixels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=20000, help="side of the two maps (px)")
    p.add_argument("--chunk", type=int, default=1024, help="geoseg's chunk side (px)")
    p.add_argument("--workers", type=int, default=2, help="geoseg's threads")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each side")
    p.add_argument("--dir", type=Path, help="folder for the maps (default: a temp dir)")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--run", choices=["geoseg", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("maps", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run:  # one side, in the fresh process started by in_fresh_process
        run = run_geoseg if args.run == "geoseg" else run_baseline
        args.result.write_text(json.dumps(run(args.maps, args)))
        return 0
    with tempfile.TemporaryDirectory(prefix="geoseg-change-", dir=args.dir) as tmp:
        folder = Path(tmp)
        invariant = chunk_invariant(folder, args)
        t0 = time.perf_counter()
        maps = [write_map(folder / f"date{i}.tif", args.size, i) for i in range(2)]
        mpx = args.size**2 / 1e6
        say(f"two {args.size} x {args.size} maps ({mpx:.0f} Mpx each), {CLASSES} classes, "
            f"written in {time.perf_counter() - t0:.0f} s")  # fmt: skip
        base = in_fresh_process("baseline", maps, args)
        say(f"  baseline (fresh process): read both maps {base['read_s']:.1f} s and pixel "
            f"areas {base['area_s']:.1f} s, not timed")  # fmt: skip
        say(f"  baseline codes + weighted bincount: {base['summary']}")
        say(f"  (codes + unweighted bincount: {base['plain']})")
        say(f"  baseline peak RSS {fmt_mb(base['maxrss_kib'])}")
        ours = in_fresh_process("geoseg", maps, args)
        say(f"  geoseg transition_matrix (chunk {args.chunk}, {args.workers} threads, fresh "
            f"process): {ours['summary']}; peak RSS {fmt_mb(ours['maxrss_kib'])}")  # fmt: skip
        consistent = compare(ours, base)
    results = [
        verdict("time ratio geoseg / baseline", ours["best_s"] / base["best_s"], RATIO_TARGET,
                args.check),
        verdict("geoseg peak RSS (MB)", ours["maxrss_kib"] / 1024, RSS_TARGET_MB, args.check),
    ]  # fmt: skip
    if not (invariant and consistent):
        return 1
    return exit_code(results, args.check)


if __name__ == "__main__":
    sys.exit(main())
