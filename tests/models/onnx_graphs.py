"""Tiny ONNX graphs built with ``onnx.helper`` (no export, milliseconds) for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["cloud_graph", "conv_graph", "write_classes"]


def _dims(batch: int | None, channels: int, size: int | None) -> list[int | str]:
    return [batch or "N", channels, size or "H", size or "W"]


def conv_graph(
    path: Path, bands: int = 4, classes: int = 3, size: int | None = None,
    batch: int | None = None, seed: int = 0, hidden: int = 6, softmax: bool = False,
    aux: bool = False,
) -> Path:  # fmt: skip
    """A 3x3 conv -> ReLU -> 1x1 conv net of random weights: ``(N, bands, H, W)`` -> logits
    (``softmax``: probabilities, a Softmax over the classes appended; ``aux``: a first
    output ``aux`` = -logits before ``logits``, like an auxiliary head).

    ``size``/``batch``: fixed input dimensions (None: dynamic). The 3x3 conv gives each
    pixel a 1-px context, so tiling with a margin is exercised.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.6, (hidden, bands, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.8, (classes, hidden, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["z" if softmax else "logits"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["logits"], axis=1))
    outputs = ["aux", "logits"] if aux else ["logits"]
    if aux:
        nodes.append(helper.make_node("Neg", ["logits"], ["aux"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, _dims(batch, bands, size))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, _dims(batch, classes, size))
         for o in outputs],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def cloud_graph(path: Path, bands: int = 4) -> Path:
    """A pixel-wise "cloud model": class 1 (cloud) where band 1 > 0.5, else class 0 (clear).

    Logits per pixel: clear 0, cloud ``40 (b1 - 0.5)``, shadow -100 (never).
    """
    w = np.zeros((3, bands, 1, 1), np.float32)
    w[1, 0] = 40.0
    b = np.array([0.0, -20.0, -100.0], np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"])
    graph = helper.make_graph(
        [node], "clouds",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", bands, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def write_classes(path: Path, names: list[str]) -> Path:
    """A classes.yaml with ids 0.. and grey colours."""
    lines = [f"- {{id: {i}, name: {n}, colour: [{i * 40}, {i * 40}, {i * 40}]}}\n"
             for i, n in enumerate(names)]  # fmt: skip
    path.write_text("".join(lines))
    return path
