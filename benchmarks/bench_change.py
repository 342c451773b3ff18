"""Benchmark ``change_report`` on two synthetic label maps (CPU, no data, no network).

Reports (a) the end-to-end ``change_report`` wall time, (b) ``transition_matrix``
alone (exact area sums), against (c) a bare baseline: reading both maps whole
and one float64 ``np.bincount`` weighted by per-pixel areas. Also checks that the
transition areas are identical for two chunk sizes and prints peak RSS.

    .venv/bin/python benchmarks/bench_change.py --size 4096 --chunk 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from geoseg.areas import pixel_area_m2
from geoseg.change.align import align_label_maps
from geoseg.change.transitions import transition_codes, transition_matrix
from geoseg.pipelines.change import ChangeOptions, change_report
from geoseg.types import ClassInfo, ClassSchema

SCHEMA = ClassSchema(tuple(ClassInfo(i, f"class{i}", (40 * i, 255 - 40 * i, 90)) for i in range(6)))
TRANSFORM = Affine(10, 0, 500_000, 0, -10, 5_200_000)


def _write_map(path: Path, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 1, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": TRANSFORM, "nodata": 255, "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate"}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, 512):
            h = min(512, size - y0)
            coarse = rng.integers(0, len(SCHEMA), size=(h // 16 + 1, size // 16 + 1))
            strip = np.kron(coarse, np.ones((16, 16), np.int64))[:h, :size].astype(np.uint8)
            strip[rng.random(strip.shape) < 0.02] = 255
            dst.write(strip[None], window=rasterio.windows.Window(0, y0, size, h))
        dst.update_tags(GEOSEG_CLASSES=json.dumps(SCHEMA.to_json()))
    return path


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        maps = [_write_map(Path(tmp) / f"{i}.tif", args.size, i) for i in range(2)]
        aligned = align_label_maps(maps, args.chunk)

        def matrix(chunk: int) -> np.ndarray:
            a = align_label_maps(maps, chunk)
            m = transition_matrix(a.labels[0], a.labels[1], a.crs, a.transform,
                                  SCHEMA.ids, SCHEMA.names)  # fmt: skip
            return m.area_m2

        def baseline() -> None:
            with rasterio.open(maps[0]) as a, rasterio.open(maps[1]) as b:
                codes = transition_codes(a.read(1), b.read(1), SCHEMA.ids)
            area = pixel_area_m2(aligned.crs, aligned.transform, np.arange(args.size),
                                 np.arange(args.size))  # fmt: skip
            np.bincount(codes.ravel(), weights=area.ravel(), minlength=len(SCHEMA) ** 2 + 1)

        t_base = _timed(baseline)
        t_matrix = _timed(lambda: matrix(args.chunk))
        out = Path(tmp) / "report"
        t_report = _timed(lambda: change_report(maps, out, ChangeOptions(chunk=args.chunk)))
        same = np.array_equal(matrix(args.chunk), matrix(max(64, args.chunk // 4 + 7)))
    mpx = args.size**2 / 1e6
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scene {args.size} x {args.size} px ({mpx:.1f} Mpx), chunk {args.chunk}")
    print(f"(c) baseline whole-array bincount  {t_base:7.2f} s")
    print(f"(b) transition_matrix (exact sums) {t_matrix:7.2f} s  ratio {t_matrix / t_base:.2f}")
    print(f"(a) change_report (all outputs)    {t_report:7.2f} s  {mpx / t_report:.1f} Mpx/s")
    print(f"chunk-size invariant: {'yes' if same else 'NO'}; peak RSS {rss_mb:.0f} MB "
          "(includes the baseline's whole-array read)")  # fmt: skip
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
