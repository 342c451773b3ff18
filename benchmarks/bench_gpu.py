"""GPU throughput: end-to-end ``predict_scene`` vs the bare model forward (target: <= 1.10).

Builds, in a temporary folder, a synthetic 4-band uint16 scene and a U-Net/ResNet-34
checkpoint with random weights, then measures on one CUDA GPU, per precision:

(m) model only: ``module(x)`` over exactly as many windows as predict runs
    (``ceil(H/S) * ceil(W/S)``), batches already on the GPU, channels-last, under
    autocast, synchronized at the end: the most the GPU can do for this model;
(t) model + transfers: the predictor's own calls as predict makes them
    (``predict_tops``: uint16 host batches -> pinned -> GPU, normalize, forward,
    softmax, argmax, uint8 back, two batches queued), same windows;
(e) end to end: ``predict_scene`` (read, halo, windows, model, stitch, chunk files,
    COG with overviews), split into its compute phase (``store_blocks``) and the
    COG assembly;
(h) host only: ``predict_scene`` with bench_host.py's free model (numpy, no
    network): what the host must do whatever the GPU; (e) cannot be shorter.

Mpx/s counts scene pixels (each window's core is ``S x S``). GPU utilisation is
sampled with NVML every 50 ms during (e). Interleaved runs; best wall times used.

    python benchmarks/bench_gpu.py --size 8192 --batch-size 32 --chunk 2048
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    Phases,
    Timing,
    exit_code,
    n_windows,
    say,
    verdict,
    write_scene,
    write_unet_checkpoint,
)
from bench_host import free_model

from geoseg.models.runtime import load_torch_predictor, resolve_precision
from geoseg.pipelines import predict as predict_module
from geoseg.pipelines.predict import PredictOptions, predict_scene

TARGET = 1.10
TARGET_MPX = 50.0
WINDOW, MARGIN = 256, 32


def model_only(module: torch.nn.Module, batches: list[torch.Tensor], amp: Any) -> None:
    """The bare forward pass over ``batches`` (already on the device), synchronized."""
    kind = batches[0].device.type
    ctx = torch.autocast(kind, dtype=amp) if amp is not None else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        for x in batches:
            module(x)
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Utilisation:
    """Mean GPU utilisation (%) from NVML samples taken while the block runs."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(Exception):
                self.samples.append(int(torch.cuda.utilization()))

    @contextlib.contextmanager
    def sampling(self) -> Iterator[None]:
        self._stop.clear()
        t = threading.Thread(target=self._run, daemon=True)
        t.start()
        try:
            yield
        finally:
            self._stop.set()
            t.join()

    def mean(self) -> str:
        return f"{statistics.mean(self.samples):.0f} %" if self.samples else "n/a (no NVML)"


class Profile:
    """Seconds summed over threads for named geoseg functions (``--profile``)."""

    TARGETS = (
        ("geoseg.io.raster", "_read_block", "read scene block"),
        ("geoseg.tiling.infer", "_kernel", "chunk task (_kernel)"),
        ("geoseg.models.runtime:TorchPredictor", "_top", "  model call (_top)"),
        ("geoseg.models.runtime:TorchPredictor", "to_device", "    to_device"),
        ("geoseg.tiling.infer", "_labels", "  labels"),
        ("geoseg.io.parts:ChunkStore", "__setitem__", "chunk encode + file write"),
        ("geoseg.io.cog", "compress_tiles", "  compress COG tiles"),
        ("geoseg.io.cog", "mode_halve", "  overviews (mode)"),
        ("geoseg.io.parts:ChunkStore", "load", "chunk file read"),
        ("geoseg.io.labels:BlockSink", "__setitem__", "stage GeoTIFF write"),
        ("rasterio.shutil", "copy", "COG copy (GDAL path)"),
        ("geoseg.io.labels", "write_label_cog", "COG assembly"),
    )

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {name: 0.0 for *_, name in self.TARGETS}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import functools
        import importlib

        saved = []
        for where, attr, name in self.TARGETS:
            module, _, cls = where.partition(":")
            owner = importlib.import_module(module)
            owner = getattr(owner, cls) if cls else owner
            original = getattr(owner, attr)

            def timed(*a: Any, _f: Any = original, _n: str = name, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return _f(*a, **kw)
                finally:
                    with self._lock:
                        self.seconds[_n] += time.perf_counter() - t0

            setattr(owner, attr, functools.wraps(original)(timed))
            saved.append((owner, attr, original))
        try:
            yield
        finally:
            for owner, attr, original in saved:
                setattr(owner, attr, original)

    def report(self) -> None:
        say("      profile, seconds summed over threads:")
        for name, sec in self.seconds.items():
            say(f"        {name:<26} {sec:7.2f}")


def run_precision(
    precision: str,
    scene: Path,
    ckpt: Path,
    host: list[torch.Tensor],
    tmpdir: Path,
    args: argparse.Namespace,
) -> list[bool]:
    """Measure (m), (t) and (e) at one precision; PASS/MISS of the two targets."""
    mpx = args.size**2 / 1e6
    device = torch.device(args.device)
    model = load_torch_predictor(ckpt, args.device, precision=precision)
    amp = resolve_precision(precision, device)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    dev = [x.to(device).contiguous(memory_format=fmt) * 1e-4 for x in host]
    raw = [(x.numpy().astype(np.uint16), np.ones((x.shape[0], WINDOW, WINDOW), bool)) for x in host]
    opts = PredictOptions(
        batch_size=args.batch_size, device=args.device, chunk=args.chunk, workers=args.workers,
        overwrite=True, precision=precision, scheduler=args.scheduler,
    )  # fmt: skip
    out = tmpdir / f"labels_{precision}.tif"
    m, t, e, h = Timing("model"), Timing("transfers"), Timing("predict"), Timing("host")
    phases = Phases(
        predict_module,
        {"store_blocks": "compute", "_assemble": "assemble", "_write_cog": "assemble"},
    )
    util = Utilisation()
    model_only(model.module, dev[:2], amp)  # warm-up: cuDNN, allocator
    predict_scene(scene, str(ckpt), out, opts)  # warm-up: the per-process model cache
    for _ in range(args.repeat):
        m.time(lambda: model_only(model.module, dev, amp))
        t.time(lambda: list(model.predict_tops(iter(raw))))
        with phases.installed(), util.sampling():
            e.time(lambda: predict_scene(scene, str(ckpt), out, opts))
        with free_model(gdal_cog=False):
            h.time(lambda: predict_scene(scene, str(ckpt), out, opts))
    if args.profile:
        prof = Profile()
        with prof.installed():
            predict_scene(scene, str(ckpt), out, opts)
        prof.report()
    compute = phases.best("compute")
    say(f"\n[{precision}]")
    say(f"  (m) model only      : {m.summary()}  {mpx / m.best:.1f} Mpx/s")
    say(f"  (t) model+transfers : {t.summary()}  {mpx / t.best:.1f} Mpx/s")
    say(f"  (e) predict_scene   : {e.summary()}  {mpx / e.best:.1f} Mpx/s")
    say(
        f"      compute phase {compute:.2f} s ({mpx / compute:.1f} Mpx/s), COG assembly "
        f"{phases.best('assemble'):.2f} s; GPU utilisation during (e) {util.mean()}"
    )
    say(f"  (h) host only       : {h.summary()}  {mpx / h.best:.1f} Mpx/s (free model)")
    say(f"  (t)/(m) {t.best / m.best:.3f}; compute phase/(m) {compute / m.best:.3f}")
    say(f"  (h)/(m) {h.best / m.best:.3f}: above 1.10, the host alone misses the target")
    return [
        verdict("  ratio (e)/(m) of best wall times", e.best / m.best, TARGET, args.check),
        verdict(
            f"  model-only seconds per {TARGET_MPX:.0f} Mpx",
            m.best / mpx * TARGET_MPX,
            1.0,
            args.check,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=8192, help="scene side in px (default 8192)")
    p.add_argument("--encoder", default="resnet34", help="U-Net encoder (default resnet34)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per model call")
    p.add_argument("--chunk", type=int, default=2048, help="predict --chunk (px)")
    p.add_argument("--workers", type=int, default=None, help="dask threads (default: cores)")
    p.add_argument("--precision", default="fp16,bf16", help="comma list: fp16, bf16, fp32")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--scheduler", default="threads", help="threads, or cuda (dask-cuda)")
    p.add_argument("--profile", action="store_true", help="one more run, split into phases")
    p.add_argument("--device", default="cuda", help="cuda; cpu only to try the script out")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        say("no CUDA GPU: this benchmark needs one (--device cpu to try the script out)")
        return 2

    h = w = args.size
    n = n_windows(h, w, WINDOW, MARGIN)
    mpx = h * w / 1e6
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    say(
        f"scene {h} x {w} x 4 uint16 ({mpx:.0f} Mpx), unet/{args.encoder} window {WINDOW} "
        f"margin {MARGIN}: {n} windows, batch {args.batch_size}, chunk {args.chunk}; "
        f"{name}, torch {torch.__version__}"
    )
    results: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-") as tmp:
        tmpdir = Path(tmp)
        t0 = time.perf_counter()
        scene = write_scene(tmpdir / "scene.tif", h, w)
        ckpt = write_unet_checkpoint(tmpdir / "unet.safetensors", encoder=args.encoder)
        say(f"wrote the scene in {time.perf_counter() - t0:.1f} s")
        gen = torch.Generator().manual_seed(0)
        sizes = [min(args.batch_size, n - k) for k in range(0, n, args.batch_size)]
        host = [torch.rand(b, 4, WINDOW, WINDOW, generator=gen) * 3000 for b in sizes]
        for precision in args.precision.split(","):
            results += run_precision(precision, scene, ckpt, host, tmpdir, args)
            torch.cuda.empty_cache()
    return exit_code(results, args.check)


if __name__ == "__main__":
    sys.exit(main())
