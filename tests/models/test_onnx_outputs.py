"""ONNX graphs with several outputs (one is named at import) and with a fixed batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.models.onnx_runtime import load_onnx_predictor
from tests.conftest import textured_scene
from tests.models.onnx_graphs import conv_graph, write_classes
from tests.models.test_onnx import BANDS, NORM, cli_run, import_graph


def _import(tmp_path: Path, graph: Path, *extra: object) -> tuple[int, str, Path]:
    classes = write_classes(tmp_path / "classes.yaml", ["forest", "water", "urban"])
    out = tmp_path / "two.safetensors"
    code, text = cli_run("import", graph, "-o", out, "--bands", BANDS, "--classes", classes,
                         "--window", 32, "--margin", 4, *NORM, *extra)  # fmt: skip
    return code, text, out


def test_a_graph_with_several_outputs_needs_one_named(tmp_path: Path) -> None:
    graph = conv_graph(tmp_path / "two.onnx", aux=True)  # outputs aux = -logits, logits
    code, text, out = _import(tmp_path, graph)
    assert code == 2 and len(text.strip().splitlines()) == 1, text
    assert "has 2 outputs (aux, logits)" in text and "--output-name" in text
    assert not out.exists()
    code, text, out = _import(tmp_path, graph, "--output-name", "scores")
    assert code == 2 and "no output 'scores'" in text and "aux, logits" in text, text
    assert not out.exists()

    code, text, out = _import(tmp_path, graph, "--output-name", "logits")
    assert code == 0, text
    meta = read_checkpoint_meta(out)
    assert meta.options["onnx_output"] == "logits"
    single = import_graph(tmp_path, conv_graph(tmp_path / "one.onnx"), name="one")
    batch = textured_scene(32, 32)[None].repeat(2, axis=0)
    valid = np.ones((2, 32, 32), bool)
    got = load_onnx_predictor(out, meta, "cpu").predict(batch, valid)
    want = load_onnx_predictor(single, read_checkpoint_meta(single), "cpu").predict(batch, valid)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # the auxiliary head (-logits), named, ranks the classes the other way round
    code, text, _ = _import(tmp_path, graph, "--output-name", "aux", "--overwrite")
    assert code == 0, text
    aux = load_onnx_predictor(out, read_checkpoint_meta(out), "cpu").predict(batch, valid)
    np.testing.assert_array_equal(aux.argmax(axis=1), want.argmin(axis=1))
