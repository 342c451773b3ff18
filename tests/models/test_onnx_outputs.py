"""ONNX graphs with several outputs (one is named at import) and with a fixed batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.errors import CheckpointError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.models.onnx_runtime import OnnxPredictor, load_onnx_predictor
from tests.conftest import TINY_BANDS, textured_scene, write_raster
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


def test_a_graph_of_fixed_batch_3_runs_any_number_of_windows(tmp_path: Path) -> None:
    fixed = import_graph(tmp_path, conv_graph(tmp_path / "b3.onnx", batch=3), name="b3")
    assert read_checkpoint_meta(fixed).options["onnx_batch"] == 3
    dynamic = import_graph(tmp_path, conv_graph(tmp_path / "dyn.onnx"), name="dyn")
    p3 = load_onnx_predictor(fixed, read_checkpoint_meta(fixed), "cpu")
    pd = load_onnx_predictor(dynamic, read_checkpoint_meta(dynamic), "cpu")
    for n in (1, 2, 4, 7):  # short of one batch, and one or two windows past a whole batch
        batch = np.stack([textured_scene(32, 32, seed=k) for k in range(n)])
        valid = np.ones((n, 32, 32), bool)
        got = p3.predict(batch, valid)
        assert got.shape == (n, 3, 32, 32)
        np.testing.assert_allclose(got, pd.predict(batch, valid), atol=1e-6)
    # 3 x 3 windows of stride 24 in chunks of 48 px: 4, 2, 2 and 1 windows a chunk
    scene = write_raster(tmp_path / "s.tif", textured_scene(70, 50), descriptions=TINY_BANDS)
    maps = []
    for model in (fixed, dynamic):
        out = tmp_path / f"{model.stem}.tif"
        code, text = cli_run("predict", scene, "-m", model, "-o", out, "--chunk", 48,
                             "--batch-size", 5, "--confidence")  # fmt: skip
        assert code == 0, text
        with rasterio.open(out) as src:
            maps.append(src.read())
    np.testing.assert_array_equal(maps[0], maps[1])


def test_a_failing_graph_blames_the_window_only_when_it_differs() -> None:
    class Failing:
        def run(self, names: object, feeds: object) -> object:
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got: 1 Expected: 3")

    predictor = object.__new__(OnnxPredictor)
    predictor.session, predictor.where, predictor._input, predictor._output = (
        Failing(), "m.safetensors", "x", "logits",
    )  # fmt: skip
    predictor.meta = type("M", (), {"window": 32})()  # type: ignore[assignment]
    with pytest.raises(CheckpointError) as own:
        predictor._run_one(np.zeros((1, 4, 32, 32), np.float32))
    assert "batch of 1 windows of 32 x 32 px (Got: 1 Expected: 3)" in str(own.value)
    assert "--window" not in str(own.value)
    with pytest.raises(CheckpointError, match=r"\(--window 32\)"):
        predictor._run_one(np.zeros((1, 4, 64, 64), np.float32))


def test_a_graph_with_two_inputs_is_refused_by_name(tmp_path: Path) -> None:
    """A second input (``offset`` here) would go unfed: refused at import, naming both
    (it read "...; check --window" before)."""
    from onnx import TensorProto, helper

    dims = ["n", 4, "h", "w"]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "offset"], ["logits"])], "two_inputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims),
         helper.make_tensor_value_info("offset", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims)],
    )  # fmt: skip
    path = tmp_path / "two_in.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    classes = write_classes(tmp_path / "c4.yaml", ["a", "b", "c", "d"])
    out = tmp_path / "two_in.safetensors"
    code, text = cli_run("import", path, "-o", out, "--bands", BANDS, "--classes", classes,
                         "--window", 32, *NORM)  # fmt: skip
    assert code == 2 and len(text.strip().splitlines()) == 1, text
    assert "has 2 inputs (x, offset)" in text and "only input" in text
    assert not out.exists()
