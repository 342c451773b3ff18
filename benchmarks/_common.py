"""Shared helpers of the benchmarks: synthetic scenes, a random-weight checkpoint, timing.

Scenes are written strip by strip (one 512-px row of tiles at a time), so building
a 16 000 x 16 000 scene never holds more than one strip in memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

__all__ = [
    "BANDS",
    "BLOCK",
    "Phases",
    "Timing",
    "exit_code",
    "fmt_mb",
    "int_list",
    "n_windows",
    "run_measured",
    "say",
    "scene_strip",
    "verdict",
    "write_scene",
    "write_unet_checkpoint",
]

#: Band descriptions of every synthetic scene (Sentinel-2 10 m bands).
BANDS = ("B02", "B03", "B04", "B08")
#: Tile side of the synthetic GeoTIFFs, px.
BLOCK = 512
#: Typical reflectance x 10 000 of each band, and how far the texture swings it.
_BASE = np.array([900, 1100, 1000, 2600], np.float32)
_SWING = np.array([500, 600, 700, 1800], np.float32)


def scene_strip(y0: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Rows ``[y0, y0 + height)`` of the synthetic scene: ``(4, height, width) uint16``.

    Smooth "land cover" patches (separable sines of the coordinates, so NIR/red and
    the spectral classes vary across the scene) plus uniform noise of ~2 % of the
    signal. Deterministic for a given ``(y0, seed)``.
    """
    y = np.arange(y0, y0 + height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    field = np.sin(y / 97.0) * np.cos(x / 131.0) + 0.5 * np.sin((x + 2 * y) / 41.0)
    rng = np.random.default_rng([seed, y0])
    out = np.empty((len(BANDS), height, width), np.uint16)
    for b in range(len(BANDS)):
        sign = -1.0 if b == 2 else 1.0  # red goes down where NIR goes up: vegetation
        noise = rng.integers(0, 60, size=(height, width), dtype=np.uint16)
        out[b] = (_BASE[b] + sign * _SWING[b] * field).astype(np.uint16) + noise
    return out


def write_scene(
    path: str | Path,
    height: int,
    width: int,
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a tiled (512 x 512), deflate-compressed 4-band uint16 GeoTIFF.

    UTM 33N at 10 m, band descriptions :data:`BANDS`, no nodata. Memory: one strip
    of ``4 x 512 x width`` uint16 (65 MB at 16 000 px wide).

    Args:
        path: file to write.
        height, width: scene size in pixels.
        seed: noise seed.
        progress: ``progress(rows_done, height)`` after each strip.
    """
    path = Path(path)
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": len(BANDS),
        "dtype": "uint16",
        "crs": CRS.from_epsg(32633),
        "transform": Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0),
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "predictor": 2,
        "num_threads": "all_cpus",
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for i, name in enumerate(BANDS, start=1):
            dst.set_band_description(i, name)
        for y0 in range(0, height, BLOCK):
            h = min(BLOCK, height - y0)
            dst.write(scene_strip(y0, h, width, seed), window=((y0, y0 + h), (0, width)))
            if progress:
                progress(y0 + h, height)
    return path


def write_unet_checkpoint(
    path: str | Path,
    seed: int = 0,
    window: int = 256,
    task: str = "semantic",
    encoder: str = "resnet18",
) -> Path:
    """A U-Net checkpoint (ResNet-18 encoder by default) with random weights (bands :data:`BANDS`).

    ``task="semantic"``: 5 classes. ``task="instance"``: the bottom-up instance
    model (ground, building and tree, the last two things; one more output channel
    for boundaries). Normalization ``scale=1e-4`` maps the synthetic digital
    numbers to ~0.1-0.3 reflectance; margin 32 px.
    """
    import torch

    from geoseg.io.checkpoint import save_checkpoint
    from geoseg.models.instance import build_instance_model
    from geoseg.models.registry import build_model
    from geoseg.types import ClassInfo, ClassSchema, ModelMeta, Normalization

    torch.manual_seed(seed)
    names: tuple[str, ...] = ("water", "trees", "grass", "crops", "built")
    if task == "instance":
        names = ("ground", "building", "tree")
    schema = ClassSchema(
        tuple(
            ClassInfo(
                i, n, (40 * i, 200 - 30 * i, 60 + 20 * i), is_thing=task == "instance" and i > 0
            )
            for i, n in enumerate(names)
        )
    )
    meta = ModelMeta(
        task=task,
        arch="unet",
        encoder=encoder,
        bands=BANDS,
        normalization=Normalization(
            mean=tuple(float(v) for v in _BASE * 1e-4),
            std=tuple(float(v) for v in _SWING * 1e-4),
            scale=1e-4,
        ),
        schema=schema,
        window=window,
        margin=32,
        provenance={"note": "random weights, benchmark only"},
    )
    build = build_instance_model if task == "instance" else build_model
    module = build("unet", encoder, len(BANDS), len(schema))
    return save_checkpoint(path, module.state_dict(), meta, overwrite=True)


class Phases:
    """Wall seconds of each call of some functions of a module, grouped under names.

    ``Phases(predict_module, {"store_blocks": "compute", "_write_cog": "assemble"})``;
    inside ``with phases.installed():`` the functions are timed (looked up on the
    module at call time, so callers must not hold their own reference).
    """

    def __init__(self, module: Any, names: dict[str, str]) -> None:
        self.module = module
        self.names = names
        self.seconds: dict[str, list[float]] = {name: [] for name in names.values()}

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        saved = {attr: getattr(self.module, attr) for attr in self.names}

        def timed(attr: str) -> Any:
            def run(*args: Any, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return saved[attr](*args, **kw)
                finally:
                    self.seconds[self.names[attr]].append(time.perf_counter() - t0)

            return run

        for attr in self.names:
            setattr(self.module, attr, timed(attr))
        try:
            yield
        finally:
            for attr, fn in saved.items():
                setattr(self.module, attr, fn)

    def best(self, name: str) -> float:
        """Shortest call under ``name`` (NaN if none ran)."""
        return min(self.seconds[name]) if self.seconds[name] else float("nan")


class Timing:
    """Wall-clock and process-CPU samples of one measured thing, in seconds.

    On a shared machine other processes only ever slow a run down, so the best
    (minimum) wall time is the least noisy estimate; the median is shown too. CPU
    time (all threads of this process) is insensitive to waiting for a core, and
    shows work wasted by spinning or oversubscribed threads.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.samples: list[float] = []
        self.cpu: list[float] = []

    def time(self, fn: Callable[[], object]) -> float:
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        self.samples.append(dt)
        self.cpu.append(time.process_time() - c0)
        return dt

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def cpu_best(self) -> float:
        return min(self.cpu)

    def summary(self) -> str:
        runs = ", ".join(f"{s:.2f}" for s in self.samples)
        return (
            f"best {self.best:.2f} s, median {self.median:.2f} s, "
            f"cpu {self.cpu_best:.2f} s  [{runs}]"
        )


def int_list(text: str) -> list[int | None]:
    """``"1,2,default"`` -> ``[1, 2, None]`` (``default``/``auto`` = library default)."""
    out: list[int | None] = []
    for item in text.split(","):
        item = item.strip().lower()
        out.append(None if item in ("", "default", "auto", "none") else int(item))
    return out


def n_windows(height: int, width: int, window: int, margin: int) -> int:
    """Windows of the global grid: ``ceil(H / S) * ceil(W / S)`` with ``S = W - 2m``."""
    s = window - 2 * margin
    return math.ceil(height / s) * math.ceil(width / s)


def say(*parts: object) -> None:
    """Print and flush (benchmarks run for minutes; show progress as it happens)."""
    print(*parts, flush=True)


def verdict(name: str, value: float, target: float, check: bool) -> bool:
    """Print PASS/MISS for ``value <= target``; True when the target is met."""
    ok = value <= target
    say(f"{name}: {value:.3f} (target <= {target}) -> {'PASS' if ok else 'MISS'}")
    if not ok and not check:
        say("  (informational; pass --check to fail on a missed target)")
    return ok


def exit_code(results: Sequence[bool], check: bool) -> int:
    """0 unless ``check`` and some target was missed."""
    return 1 if check and not all(results) else 0


def fmt_mb(kib: float) -> str:
    return f"{kib / 1024:.0f} MB"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("helper module; run bench_predict.py or bench_memory.py")


# Runs argv[2:] as its only child, then writes the child's peak RSS (KiB on Linux),
# CPU seconds and wall time as JSON to argv[1].
_WRAPPER = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    json.dump({"rc": rc, "maxrss_kib": ru.ru_maxrss, "cpu_s": ru.ru_utime + ru.ru_stime,
               "wall_s": time.perf_counter() - t0}, f)
"""


def run_measured(cmd: Sequence[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``cmd`` in a fresh process; its exit code ``rc``, ``maxrss_kib``, ``cpu_s``, ``wall_s``.

    A wrapper process starts ``cmd`` as its only child and reads the child's peak
    RSS with ``getrusage(RUSAGE_CHILDREN)``, so the figure is the command's alone.
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        report = Path(f.name)
    try:
        subprocess.run([sys.executable, "-c", _WRAPPER, str(report), *cmd], env=env, check=True)
        result: dict[str, float] = json.loads(report.read_text())
    finally:
        report.unlink(missing_ok=True)
    return result
