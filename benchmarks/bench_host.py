"""Host cost of ``predict_scene`` around the model: the part a GPU cannot take over.

On a GPU the forward pass is fast and what the host does per pixel (decode the
input, cut windows, stitch, compress the COG) decides the end-to-end speed. This
benchmark measures that host work on the CPU by running ``predict_scene`` with a
**free model** (labels and confidence derived from the pixels by a few numpy
operations, no network), so nothing but the pipeline is timed:

(r) read: every chunk of the scene decoded through the same dask array predict
    uses (the floor of any pipeline that reads the scene);
(c) ``predict_scene`` whose chunk tasks compress the COG tiles and overviews
    (``geoseg.io.cog``; the default);
(g) the same with the chunks kept raw and GDAL's COG driver at the end
    (the path used when no tile side divides the chunk).

Ratios (c)/(r) and (g)/(r) are the host overhead over reading; (c)/(g) is the
gain of compressing in the chunk tasks (target: < 1). The serial tail (time
after the last chunk, i.e. assembling the file) is printed for both.

    .venv/bin/python benchmarks/bench_host.py --size 8192 --chunk 2048
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
from _common import Phases, Timing, exit_code, say, verdict, write_scene, write_unet_checkpoint

from geoseg.io.raster import open_scene
from geoseg.pipelines import predict as predict_module
from geoseg.pipelines.predict import PredictOptions, predict_scene

TARGET = 1.0


class FreeModel:
    """Labels from the NIR/red ratio, confidence from NIR: numpy only, ~no cost.

    Has ``predict_tops`` like :class:`~geoseg.models.runtime.TorchPredictor`, so the
    pipeline takes the same path as for a real checkpoint.
    """

    fixed_batch = False

    def predict_tops(
        self, batches: Iterator[tuple[np.ndarray, np.ndarray]]
    ) -> Iterator[np.ndarray]:
        for x, _ in batches:
            top = np.empty((len(x), 2, *x.shape[-2:]), np.uint8)
            top[:, 0] = np.minimum(x[:, 3] // np.maximum(x[:, 2], 1), 4)
            top[:, 1] = np.minimum(x[:, 3] >> 4, 254)
            yield top

    def predict(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the free model only reduces on its own")


@contextlib.contextmanager
def free_model(gdal_cog: bool) -> Iterator[None]:
    """``predict_scene`` runs :class:`FreeModel`; ``gdal_cog``: assemble with GDAL's driver."""
    model = FreeModel()
    blocks, grid = predict_module.predict_blocks, predict_module._cog_grid

    def with_free_model(data: Any, valid: Any, _load: Any, *args: Any, **kw: Any) -> Any:
        return blocks(data, valid, lambda: model, *args, **kw)

    predict_module.predict_blocks = with_free_model  # type: ignore[assignment]
    if gdal_cog:
        predict_module._cog_grid = lambda *_: None  # type: ignore[assignment]
    try:
        yield
    finally:
        predict_module.predict_blocks, predict_module._cog_grid = blocks, grid


def read_all(scene: Path, chunk: int, workers: int | None) -> None:
    """Decode every chunk of the scene with dask, as predict reads it."""
    data = open_scene(str(scene), None, chunk, None).data.data
    with dask.config.set(scheduler="threads", num_workers=workers):
        data.sum(axis=(1, 2), dtype=np.uint64).compute()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=4096, help="scene side, px")
    p.add_argument("--chunk", type=int, default=2048, help="PredictOptions.chunk")
    p.add_argument("--workers", type=int, default=None, help="dask threads (default: all)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-confidence", action="store_true", help="labels only (as bench_gpu)")
    p.add_argument("--check", action="store_true", help=f"exit 1 if (c)/(g) > {TARGET}")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="geoseg-bench-") as tmp:
        folder = Path(tmp)
        scene = write_scene(folder / "scene.tif", args.size, args.size)
        checkpoint = write_unet_checkpoint(folder / "unet.safetensors")
        out = folder / "labels.tif"
        opts = PredictOptions(
            chunk=args.chunk, confidence=not args.no_confidence, overwrite=True, device="cpu",
            workers=args.workers, batch_size=32,
        )  # fmt: skip
        times = {k: Timing(k) for k in "rcg"}
        tails = {"_assemble": "tail", "_write_cog": "tail"}
        phases = {k: Phases(predict_module, tails) for k in "cg"}
        sizes = {}

        def run(kind: str) -> None:
            if kind == "r":
                times["r"].time(lambda: read_all(scene, args.chunk, args.workers))
                return
            with free_model(gdal_cog=kind == "g"), phases[kind].installed():
                times[kind].time(lambda: predict_scene(scene, str(checkpoint), out, opts))
            sizes[kind] = out.stat().st_size

        for kind in "rcg":  # warm-up: file cache, GDAL, model check
            run(kind)
        for timing in times.values():
            timing.samples.clear()
        for phase in phases.values():
            phase.seconds["tail"].clear()
        for _ in range(args.repeat):
            for kind in "rcg":
                run(kind)

    mpx = args.size**2 / 1e6
    r, c, g = (times[k].best for k in "rcg")
    say(f"scene {args.size}^2 ({mpx:.1f} Mpx), chunk {args.chunk}, "
        f"{1 if args.no_confidence else 2} band(s) out, "
        f"best of {args.repeat}")  # fmt: skip
    say(f"(r) read only              {r:7.2f} s  {mpx / r:7.1f} Mpx/s")
    for kind, name in (("c", "COG from chunk tasks"), ("g", "GDAL COG at the end")):
        t = times[kind].best
        tail = phases[kind].best("tail")
        say(f"({kind}) {name:22s} {t:7.2f} s  {mpx / t:7.1f} Mpx/s  ratio to read {t / r:5.2f}"
            f"  serial tail {tail:.2f} s  file {sizes[kind] / 1e6:.1f} MB")  # fmt: skip
    ok = verdict("(c)/(g), COG from chunk tasks vs GDAL at the end", c / g, TARGET, args.check)
    return exit_code([ok], args.check)


if __name__ == "__main__":
    sys.exit(main())
