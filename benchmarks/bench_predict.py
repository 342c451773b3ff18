"""Overhead of ``predict_scene`` over the bare model forward pass (target: ratio <= 1.15).

Builds, in a temporary folder, a synthetic 4-band uint16 scene and a U-Net/ResNet-18
checkpoint with random weights, then measures on the same device and batch size:

(a) end-to-end ``predict_scene`` wall time (open, read, pad, normalize, forward,
    softmax, stitch, stage GeoTIFF, COG copy with overviews);
(b) the bare ``module(x)`` over exactly as many windows as predict runs
    (``ceil(H/S) * ceil(W/S)``), in ``torch.inference_mode`` on pre-built random
    tensors, with torch's default thread count.

(a) and (b) are interleaved run by run so machine noise hits both alike; the ratio
of medians is the figure of merit. ``--profile`` adds one instrumented run per
configuration that splits (a) into its parts.

    .venv/bin/python benchmarks/bench_predict.py --size 1536 --workers 1,2 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from _common import (
    Timing,
    exit_code,
    int_list,
    n_windows,
    say,
    verdict,
    write_scene,
    write_unet_checkpoint,
)

from geoseg.models.cache import load_predictor
from geoseg.models.runtime import load_torch_predictor
from geoseg.pipelines.predict import PredictOptions, predict_scene

TARGET = 1.15
WINDOW, MARGIN = 256, 32


def forward_only(module: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        for x in batches:
            module(x)


def make_batches(n: int, batch_size: int, channels: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    sizes = [min(batch_size, n - k) for k in range(0, n, batch_size)]
    return [torch.randn(b, channels, WINDOW, WINDOW, generator=gen) for b in sizes]


@contextlib.contextmanager
def torch_threads_in_tasks(n: int) -> Iterator[None]:
    """Make every chunk task run torch with ``n`` intra-op threads.

    ``torch.set_num_threads`` only affects the calling thread's OpenMP team size
    once that thread has run a torch op, and dask reuses its pool threads, so a
    call in the main thread does not reach the workers. The setting is therefore
    applied where the task loads its model (``predict_scene`` passes
    ``partial(load_predictor, spec)`` into the graph), i.e. in the worker thread.
    """
    from geoseg.pipelines import predict as predict_module

    real = predict_module.load_predictor
    before = torch.get_num_threads()

    def load_with_threads(spec: Any) -> Any:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return real(spec)

    predict_module.load_predictor = load_with_threads  # type: ignore[assignment]
    try:
        yield
    finally:
        predict_module.load_predictor = real
        torch.set_num_threads(before)


class Profile:
    """Thread-summed seconds per phase, collected by wrapping geoseg internals."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.kernel_threads: set[int] = set()
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.kernel_threads.clear()

    def add(self, name: str, dt: float) -> None:
        with self._lock:
            self.seconds[name] += dt
            self.calls[name] += 1

    def wrap(self, owner: Any, attr: str, name: str) -> Any:
        original = getattr(owner, attr)

        @functools.wraps(original)  # keeps the signature: dask looks for ``block_id``
        def timed(*args: Any, **kw: Any) -> Any:
            if attr == "_top":
                self.kernel_threads.add(torch.get_num_threads())
            t0 = time.perf_counter()
            try:
                return original(*args, **kw)
            finally:
                self.add(name, time.perf_counter() - t0)

        setattr(owner, attr, timed)
        return original

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import rasterio.shutil

        from geoseg.models import runtime
        from geoseg.tiling import infer

        targets = [
            (infer, "_kernel", "kernel (chunk task)"),
            (infer, "_trim_core", "  windows: stack+predict (_trim_core)"),
            (runtime.TorchPredictor, "normalize", "    normalize"),
            (runtime.TorchPredictor, "_top", "    model+softmax+argmax (_top)"),
            (infer, "_labels", "  labels (_labels)"),
            (rasterio.shutil, "copy", "COG copy (overviews, deflate)"),
        ]
        saved = [(owner, attr, self.wrap(owner, attr, name)) for owner, attr, name in targets]
        module_t0: dict[int, float] = {}

        def pre(mod: Any, args: Any) -> None:
            module_t0[threading.get_ident()] = time.perf_counter()

        def post(mod: Any, args: Any, out: Any) -> None:
            self.add("      module(x)", time.perf_counter() - module_t0[threading.get_ident()])

        load_predictor.cache_clear()  # the next predict builds a module with the hooks
        hooks: list[Any] = []
        original_init = runtime.TorchPredictor.__init__

        def init(obj: Any, *args: Any, **kw: Any) -> None:
            original_init(obj, *args, **kw)
            hooks.append(obj.module.register_forward_pre_hook(pre))
            hooks.append(obj.module.register_forward_hook(post))

        runtime.TorchPredictor.__init__ = init  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            runtime.TorchPredictor.__init__ = original_init  # type: ignore[method-assign]
            for owner, attr, original in saved:
                setattr(owner, attr, original)
            for h in hooks:
                h.remove()
            load_predictor.cache_clear()

    def report(self, wall: float) -> None:
        say(f"    profile (seconds summed over threads; wall {wall:.2f} s):")
        order = [
            "kernel (chunk task)",
            "  windows: stack+predict (_trim_core)",
            "    normalize",
            "    model+softmax+argmax (_top)",
            "      module(x)",
            "  labels (_labels)",
            "COG copy (overviews, deflate)",
        ]
        for name in order:
            say(f"      {name:<34} {self.seconds[name]:7.2f}  ({self.calls[name]} calls)")
        say(f"      torch.get_num_threads() inside chunk tasks: {sorted(self.kernel_threads)}")


def run_config(
    scene: Path,
    ckpt: Path,
    out_dir: Path,
    args: argparse.Namespace,
    module: torch.nn.Module,
    batches: list[torch.Tensor],
    workers: int | None,
    threads: int,
) -> tuple[Timing, Timing]:
    opts = PredictOptions(
        batch_size=args.batch_size,
        device="cpu",
        workers=workers,
        chunk=args.chunk,
        overwrite=True,
        scheduler=args.scheduler,
    )
    out = out_dir / "labels.tif"

    def predict() -> None:
        with torch_threads_in_tasks(threads):
            predict_scene(scene, str(ckpt), out, opts)

    fwd, pred = Timing("forward"), Timing("predict")
    predict()  # warm-up: loads the model into the per-process cache, first-touch allocations
    for _ in range(args.repeat):
        fwd.time(lambda: forward_only(module, batches))
        pred.time(predict)
    if args.profile:
        prof = Profile()
        with prof.installed():
            predict()  # loads the model again, now with hooks
            prof.reset()
            t0 = time.perf_counter()
            predict()
            prof.report(time.perf_counter() - t0)
    return fwd, pred


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=1536, help="scene side in px (default 1536)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per model call")
    p.add_argument(
        "--workers",
        default="default",
        help="comma list of dask thread counts to try, e.g. 1,2 (default: dask's default)",
    )
    p.add_argument(
        "--torch-threads",
        default="default",
        help="comma list of torch intra-op threads per chunk task, e.g. default,1",
    )
    p.add_argument("--chunk", type=int, default=1024, help="predict --chunk (px)")
    p.add_argument("--scheduler", default="threads", help="predict --scheduler")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each (the best is used)")
    p.add_argument("--profile", action="store_true", help="one extra run split into phases")
    p.add_argument("--check", action="store_true", help=f"exit 1 if a ratio is > {TARGET}")
    args = p.parse_args(argv)

    h = w = args.size
    n = n_windows(h, w, WINDOW, MARGIN)
    default_threads = torch.get_num_threads()
    say(
        f"scene {h} x {w} x 4 uint16, unet/resnet18 window {WINDOW} margin {MARGIN}: "
        f"{n} windows, batch {args.batch_size} ({math.ceil(n / args.batch_size)} model calls), "
        f"device cpu, torch {torch.__version__} default threads {default_threads}"
    )
    results: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-") as tmp:
        tmpdir = Path(tmp)
        scene = write_scene(tmpdir / "scene.tif", h, w)
        ckpt = write_unet_checkpoint(tmpdir / "unet.safetensors")
        module = load_torch_predictor(ckpt, "cpu").module
        batches = make_batches(n, args.batch_size, 4)
        forward_only(module, batches[:1])  # warm-up (oneDNN primitive cache)
        for workers in int_list(args.workers):
            for threads in int_list(args.torch_threads):
                nt = threads or default_threads
                say(f"\n[workers={workers or 'default'} torch threads per task={nt}]")
                fwd, pred = run_config(scene, ckpt, tmpdir, args, module, batches, workers, nt)
                mpx = h * w / 1e6
                say(f"  (b) bare forward : {fwd.summary()}  {mpx / fwd.best:.3f} Mpx/s")
                say(f"  (a) predict_scene: {pred.summary()}  {mpx / pred.best:.3f} Mpx/s")
                say(
                    f"  ratio of medians {pred.median / fwd.median:.3f}, "
                    f"of cpu seconds {pred.cpu_best / fwd.cpu_best:.3f}"
                )
                results.append(
                    verdict(
                        "  ratio (a)/(b) of best wall times",
                        pred.best / fwd.best,
                        TARGET,
                        args.check,
                    )
                )
    return exit_code(results, args.check)


if __name__ == "__main__":
    sys.exit(main())
