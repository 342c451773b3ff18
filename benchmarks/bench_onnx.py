"""Imported ONNX models: tiling overhead over onnxruntime alone, and memory flat in scene size.

Targets (issue 16): end-to-end ``predict`` of an imported ONNX model over
onnxruntime alone on the same windows and batch <= 1.15 on the CPU, and peak RSS of
that predict on an 8000^2 scene over a 2000^2 one <= 1.3.

    .venv/bin/python benchmarks/bench_onnx.py                  # both, ~10 min on 2 cores
    .venv/bin/python benchmarks/bench_onnx.py --sizes 2000,4000,8000,12000   # is it bounded?
    .venv/bin/python benchmarks/bench_onnx.py --size 768 --sizes 500,1500   # smoke

(a) overhead: the random-weight U-Net/ResNet-18 of ``_common.write_unet_checkpoint``
exported with ``torch.onnx.export`` (dynamic batch, 256 px windows) and brought in
with ``geoseg import``; ``predict_scene`` end to end (read, pad, normalize, run,
softmax, stitch, COG) against ``session.run`` on pre-built normalized windows, as
many as predict runs, in the same batches, with onnxruntime's default threads;
interleaved, best of ``--repeat`` after a warm-up. (b) memory: ``geoseg predict`` of
an imported small ONNX net (3x3 conv, ReLU, 1x1 conv; memory, not arithmetic, is
measured) on synthetic scenes of each ``--sizes`` side, each in a fresh process (peak
RSS of that process); the verdict compares the largest with the smallest.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import (
    BANDS,
    Timing,
    exit_code,
    fmt_mb,
    n_windows,
    run_measured,
    say,
    verdict,
    write_scene,
    write_unet_checkpoint,
)
from bench_memory import geoseg_command

OVERHEAD_TARGET = 1.15
RSS_TARGET = 1.3


def export_unet(ckpt: Path, out: Path) -> Path:
    """The checkpoint's U-Net as an ONNX graph: ``(N, 4, 256, 256)`` -> 5 logit maps."""
    import torch

    from geoseg.io.checkpoint import load_checkpoint
    from geoseg.models.registry import build_model

    tensors, meta = load_checkpoint(ckpt)
    net = build_model("unet", meta.encoder, len(meta.bands), len(meta.schema)).eval()
    net.load_state_dict(tensors)
    x = torch.zeros(1, len(meta.bands), meta.window, meta.window)
    torch.onnx.export(net, (x,), str(out), dynamo=False, input_names=["x"], opset_version=17,
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})  # fmt: skip
    return out


def light_graph(out: Path, classes: int = 5) -> Path:
    """A 3x3 conv -> ReLU -> 1x1 conv graph of random weights on dynamic windows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (classes, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "light", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes, "H", "W"])], [w1, w2],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(out))
    return out


def imported(graph: Path, ckpt: Path, out: Path) -> Path:
    """``graph`` imported with the benchmark checkpoint's bands, classes and normalization."""
    from geoseg.io.checkpoint import read_checkpoint_meta
    from geoseg.pipelines.importing import ImportOptions, import_model

    m = read_checkpoint_meta(ckpt)
    opts = ImportOptions(BANDS, m.schema, 256, 32, m.normalization.mean, m.normalization.std,
                         1 / m.normalization.scale, overwrite=True)  # fmt: skip
    return import_model(graph, out, opts).output


def overhead(model: Path, graph: Path, tmp: Path, args: argparse.Namespace) -> float:
    """Best end-to-end predict over best bare ``session.run`` on the same windows."""
    from geoseg.models.onnx_runtime import onnx_session
    from geoseg.pipelines import PredictOptions, predict_scene

    scene = write_scene(tmp / "scene.tif", args.size, args.size)
    count = n_windows(args.size, args.size, 256, 32)
    session = onnx_session(graph.read_bytes(), "cpu")
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(min(args.batch_size, count - k), 4, 256, 256)).astype(np.float32)
               for k in range(0, count, args.batch_size)]  # fmt: skip
    opts = PredictOptions(device="cpu", batch_size=args.batch_size, overwrite=True)
    e2e, bare = Timing("predict"), Timing("onnxruntime")
    predict_scene(scene, str(model), tmp / "labels.tif", opts)  # warm-up: session in the cache
    for _ in range(args.repeat):
        e2e.time(lambda: predict_scene(scene, str(model), tmp / "labels.tif", opts))
        bare.time(lambda: [session.run(["y"], {"x": b}) for b in batches])
    say(f"  {args.size}^2 px, {count} windows of 256 px in batches of {args.batch_size}")
    say(f"  (a) predict end to end: {e2e.summary()}")
    say(f"  (b) onnxruntime alone:  {bare.summary()}")
    return e2e.best / bare.best


def same_geoseg_env() -> dict[str, str]:
    """The environment with this process's ``geoseg`` first on the path.

    Without it the venv's ``geoseg`` script imports whichever checkout the editable
    install points at, which need not be the one being measured.
    """
    import geoseg

    root = str(Path(geoseg.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def peak_rss(model: Path, tmp: Path, size: int, args: argparse.Namespace) -> float:
    """Peak RSS (KiB) of ``geoseg predict`` of ``model`` on a ``size``^2 scene, fresh process."""
    scene = write_scene(tmp / f"scene_{size}.tif", size, size)
    cmd = [*geoseg_command(), "predict", str(scene), "-m", str(model), "-o",
           str(tmp / f"labels_{size}.tif"), "--overwrite", "--device", "cpu",
           "--batch-size", str(args.batch_size), "--chunk", str(args.chunk)]  # fmt: skip
    r = run_measured(cmd, same_geoseg_env())
    scene.unlink()
    (tmp / f"labels_{size}.tif").unlink(missing_ok=True)
    if r["rc"] != 0:
        raise SystemExit(f"geoseg predict failed ({r['rc']}): {' '.join(cmd)}")
    say(f"  {size:>6}^2 {size * size / 1e6:6.1f} Mpx: peak RSS {fmt_mb(r['maxrss_kib']):>7}, "
        f"wall {r['wall_s']:5.1f} s, {size * size / 1e6 / r['wall_s']:.2f} Mpx/s")  # fmt: skip
    return float(r["maxrss_kib"])


def memory(model: Path, tmp: Path, args: argparse.Namespace) -> float:
    """Peak RSS of each ``--sizes`` scene; the largest's over the smallest's."""
    sizes = sorted(args.sizes)
    peaks = [peak_rss(model, tmp, s, args) for s in sizes]
    for (a, pa), (b, pb) in itertools.pairwise(zip(sizes, peaks, strict=True)):
        say(f"  {a}^2 -> {b}^2: {(b / a) ** 2:.1f}x the pixels, peak RSS x{pb / pa:.3f} "
            f"({(pb - pa) / 1024:+.0f} MB)")  # fmt: skip
    return peaks[-1] / peaks[0]


def _sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",")]
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError("give at least two positive sides, e.g. 2000,8000")
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=1536, help="(a) scene side, px (64 windows)")
    p.add_argument("--sizes", type=_sizes, default=[2000, 8000],
                   help="(b) scene sides, px, comma-separated (default 2000,8000)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--chunk", type=int, default=1024, help="(b) predict --chunk")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--memory-only", action="store_true", help="run (b) alone")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="geoseg-onnx-") as name:
        tmp = Path(name)
        ckpt = write_unet_checkpoint(tmp / "unet.safetensors")
        if not args.memory_only:
            say("(a) overhead: U-Net/ResNet-18 exported to ONNX, imported, CPU")
            graph = export_unet(ckpt, tmp / "unet.onnx")
            ratio = overhead(imported(graph, ckpt, tmp / "unet_onnx.safetensors"), graph, tmp, args)
            results.append(verdict("predict / onnxruntime alone", ratio, OVERHEAD_TARGET,
                                   args.check))  # fmt: skip
        say("(b) memory: small imported ONNX net, fresh process per scene")
        light = imported(light_graph(tmp / "light.onnx"), ckpt, tmp / "light.safetensors")
        ratio = memory(light, tmp, args)
        name = f"RSS {max(args.sizes)}^2 / {min(args.sizes)}^2"
        results.append(verdict(name, ratio, RSS_TARGET, args.check))
    return exit_code(results, args.check)


if __name__ == "__main__":
    sys.exit(main())
