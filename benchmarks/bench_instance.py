"""Overhead of instance stitching over the bare instance model (target: ratio <= 1.15).

Builds, in a temporary folder, the synthetic 4-band scene and a random-weight
bottom-up instance model (U-Net/ResNet-18, semantic + boundary heads), then
measures on the CPU with the same batch size:

(a) end-to-end ``segment_instances`` (read, pad, forward, grouping, ownership,
    seam edges, staging, id resolution, relabel, COG copy with overviews);
(b) ``predict_instances`` (forward + grouping) over exactly as many windows as
    the global grid has, ``ceil(H/S) * ceil(W/S)``, on pre-built random input.

Each window runs once whatever the chunking (checked: "model calls"), so the
ratio measures what stitching adds: ownership, seam edges, painting, staging,
id resolution, relabelling and the COG copy.

    .venv/bin/python benchmarks/bench_instance.py --size 1024 --chunk 1024 --repeat 2
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import BANDS, Timing, exit_code, n_windows, say, verdict, write_scene

from geoseg.models.instance import BottomUpInstancePredictor, build_instance_model
from geoseg.pipelines.instances import InstanceOptions, segment_instances
from geoseg.stitching import plan_chunks
from geoseg.types import ClassInfo, ClassSchema, ModelMeta, Normalization, TileSpec

TARGET = 1.15
SCHEMA = ClassSchema(
    (
        ClassInfo(0, "ground", (90, 90, 90)),
        ClassInfo(1, "building", (200, 0, 0), is_thing=True),
        ClassInfo(2, "tree", (0, 150, 0), is_thing=True),
    )
)


@functools.lru_cache(maxsize=1)
def load_model(window: int = 256, margin: int = 32) -> BottomUpInstancePredictor:
    """A random-weight instance model, built once per process."""
    torch.manual_seed(0)
    meta = ModelMeta(
        task="instance", arch="unet", encoder="resnet18", bands=BANDS,
        normalization=Normalization((0.2,) * 4, (0.1,) * 4, scale=1e-4), schema=SCHEMA,
        window=window, margin=margin,
    )  # fmt: skip
    module = build_instance_model("unet", "resnet18", len(BANDS), len(SCHEMA))
    return BottomUpInstancePredictor(module, meta, torch.device("cpu"))


def model_only(n: int, window: int, batch: int) -> None:
    model = load_model()
    x = np.random.default_rng(0).integers(300, 4000, (batch, len(BANDS), window, window))
    x = x.astype(np.float32)
    v = np.ones((batch, window, window), bool)
    for k in range(0, n, batch):
        model.predict_instances(x[: min(batch, n - k)], v[: min(batch, n - k)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--margin", type=int, default=32)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    s = a.window - 2 * a.margin
    n = n_windows(a.size, a.size, a.window, a.margin)
    c = max(1, round(a.chunk / s))
    grid = TileSpec(a.window, a.margin, c)
    runs = sum(len(p.own_rows) * len(p.own_cols) for p in plan_chunks(a.size, a.size, grid))
    say(f"scene {a.size}^2 px, window {a.window}, margin {a.margin}, chunk {c * s} px")
    say(f"model calls: end-to-end {runs} windows, {n} in the grid")
    e2e, bare = Timing("end-to-end"), Timing("model only")
    with tempfile.TemporaryDirectory() as tmp:
        scene = write_scene(Path(tmp) / "scene.tif", a.size, a.size)
        opts = InstanceOptions(
            window=a.window, margin=a.margin, chunk=a.chunk, batch_size=a.batch_size,
            overwrite=True,
        )  # fmt: skip
        load = functools.partial(load_model, a.window, a.margin)
        for _ in range(a.repeat):
            e2e.time(lambda: segment_instances(scene, load, Path(tmp) / "inst.tif", opts))
            bare.time(lambda: model_only(n, a.window, a.batch_size))
    say(f"(a) {e2e.name}: {e2e.summary()}")
    say(f"(b) {bare.name}: {bare.summary()}")
    ok = verdict("stitching overhead (a)/(b), medians", e2e.median / bare.median, TARGET, a.check)
    return exit_code([ok], a.check)


if __name__ == "__main__":
    sys.exit(main())
