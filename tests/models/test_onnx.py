"""ONNX models: ``geoseg import`` -> checkpoint -> ``geoseg predict`` through onnxruntime."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import rasterio
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

from geoseg.cli import cli
from geoseg.errors import CheckpointError, GeosegError
from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.onnx_runtime import GRAPH_TENSOR, OnnxPredictor, load_onnx_predictor
from geoseg.models.registry import model_family
from geoseg.tiling.tta import TtaPredictor
from geoseg.types import TileSpec
from tests.conftest import TINY_BANDS, textured_scene, write_raster
from tests.models.onnx_graphs import cloud_graph, conv_graph, write_classes
from tests.reference import reference_top

BANDS = ",".join(TINY_BANDS)
NORM = ["--mean", "0.2,0.2,0.2,0.2", "--std", "0.1,0.1,0.1,0.1", "--scale", "10000"]


def cli_run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def import_graph(tmp_path: Path, graph: Path, *extra: object, name: str = "m") -> Path:
    classes = write_classes(tmp_path / "classes.yaml", ["forest", "water", "urban"])
    out = tmp_path / f"{name}.safetensors"
    code, text = cli_run("import", graph, "-o", out, "--bands", BANDS, "--classes", classes,
                         "--window", 32, "--margin", 4, *NORM, *extra)  # fmt: skip
    assert code == 0, text
    return out


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    return import_graph(tmp_path, conv_graph(tmp_path / "m.onnx"))


def test_import_writes_a_self_describing_checkpoint(imported: Path) -> None:
    meta = read_checkpoint_meta(imported)
    assert (meta.task, meta.arch, meta.bands) == ("semantic", "onnx", TINY_BANDS)
    assert (meta.window, meta.margin, meta.normalization.scale) == (32, 4, 1e-4)
    assert meta.schema.names == ("forest", "water", "urban")
    assert meta.options["onnx_batch"] is None and meta.options["onnx_fixed_window"] is None
    assert model_family(str(imported)).name == "onnx"
    code, text = cli_run("models", imported)
    assert code == 0 and "family: onnx" in text and "runtime: onnx" in text


def test_predictor_is_the_graph_softmaxed(tmp_path: Path, imported: Path) -> None:
    predictor = load_onnx_predictor(imported, read_checkpoint_meta(imported), "cpu")
    batch = textured_scene(32, 32)[None].repeat(2, axis=0)
    valid = np.ones((2, 32, 32), bool)
    valid[1, :5] = False
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = (batch.astype(np.float32) * np.float32(1e-4) - np.float32(0.2)) * np.float32(10.0)
    x[1, :, :5] = 0.0
    logits = session.run(None, {"x": x})[0].astype(np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    probs = predictor.predict(batch, valid)

    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_predict_equals_window_by_window_and_any_chunking(tmp_path: Path, imported: Path) -> None:
    data = textured_scene(90, 110)
    scene = write_raster(tmp_path / "s.tif", data, descriptions=TINY_BANDS)
    outs = []
    for chunk in (24, 72):
        out = tmp_path / f"o{chunk}.tif"
        code, text = cli_run("predict", scene, "-m", imported, "-o", out, "--chunk", chunk,
                             "--confidence", "--batch-size", 3)  # fmt: skip
        assert code == 0, text
        with rasterio.open(out) as src:
            outs.append(src.read())
    predictor = load_predictor(model_spec(str(imported), "cpu"))
    labels, conf = reference_top(
        data, np.ones(data.shape[1:], bool), TileSpec(32, 4), predictor, (0, 1, 2)
    )
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0][0], labels)
    np.testing.assert_array_equal(outs[0][1], conf)
    assert len(np.unique(labels)) == 3  # the map is not trivially one class


def test_a_graph_of_fixed_batch_and_size_runs_window_by_window(tmp_path: Path) -> None:
    graph = conv_graph(tmp_path / "fixed.onnx", size=32, batch=1)
    model = import_graph(tmp_path, graph)
    meta = read_checkpoint_meta(model)
    assert (meta.options["onnx_batch"], meta.options["onnx_fixed_window"]) == (1, 32)
    dynamic = import_graph(tmp_path, conv_graph(tmp_path / "dyn.onnx"), name="dyn")
    batch = textured_scene(32, 32)[None].repeat(3, axis=0)
    valid = np.ones((3, 32, 32), bool)
    fixed_p = load_onnx_predictor(model, meta, "cpu").predict(batch, valid)
    dyn_p = load_onnx_predictor(dynamic, read_checkpoint_meta(dynamic), "cpu").predict(batch, valid)
    np.testing.assert_allclose(fixed_p, dyn_p, atol=1e-6)
    scene = write_raster(tmp_path / "s.tif", textured_scene(40, 40), descriptions=TINY_BANDS)
    code, text = cli_run("predict", scene, "-m", model, "-o", tmp_path / "w.tif", "--window", 64)
    assert code == 2 and "(--window 32)" in text and len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / "w.tif").exists()


def test_tta_runs_an_onnx_graph_of_fixed_batch_and_size_on_each_transform(tmp_path: Path) -> None:
    model = import_graph(tmp_path, conv_graph(tmp_path / "fixed.onnx", size=32, batch=1))
    data = textured_scene(60, 70)
    scene = write_raster(tmp_path / "s.tif", data, descriptions=TINY_BANDS)
    maps = {}
    for tta in ("none", "d4"):
        out = tmp_path / f"{tta}.tif"
        code, text = cli_run("predict", scene, "-m", model, "-o", out, "--tta", tta,
                             "--confidence", "--chunk", 24)  # fmt: skip
        assert code == 0, text
        with rasterio.open(out) as src:
            maps[tta] = src.read()
    predictor = TtaPredictor(load_predictor(model_spec(str(model), "cpu")), "d4")
    labels, conf = reference_top(
        data, np.ones(data.shape[1:], bool), TileSpec(32, 4), predictor, (0, 1, 2)
    )
    np.testing.assert_array_equal(maps["d4"][0], labels)
    np.testing.assert_array_equal(maps["d4"][1], conf)
    assert (maps["none"][0] != labels).any()  # random 3x3 kernels: the transforms disagree


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter
def test_torch_exported_unet_matches_torch(tmp_path: Path) -> None:
    import torch

    from geoseg.models.registry import build_model

    torch.manual_seed(0)
    net = build_model("unet", "resnet18", 4, 3, encoder_depth=3, decoder_channels=[32, 16, 8])
    net.eval()
    x = torch.zeros(1, 4, 32, 32)
    torch.onnx.export(net, (x,), str(tmp_path / "unet.onnx"), dynamo=False,
                      input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n"}})  # fmt: skip
    model = import_graph(tmp_path, tmp_path / "unet.onnx")
    batch = textured_scene(32, 32)[None].repeat(2, axis=0)
    valid = np.ones((2, 32, 32), bool)
    predictor = load_onnx_predictor(model, read_checkpoint_meta(model), "cpu")
    with torch.no_grad():
        xs = (torch.from_numpy(batch.astype(np.float32)) * 1e-4 - 0.2) / 0.1
        expected = torch.softmax(net(xs), dim=1).numpy()
    np.testing.assert_allclose(predictor.predict(batch, valid), expected, atol=1e-4)


# --- bad input: one line, exit 2, nothing written -------------------------------------


def _not_onnx(tmp: Path) -> Path:
    (tmp / "bad.onnx").write_bytes(b"this is not a protobuf" * 20)
    return tmp / "bad.onnx"


BAD_IMPORTS = {
    "fixed size that is not the window": (
        lambda t: conv_graph(t / "f.onnx", size=48), [], "size 48 x 48 px, not the --window 32"),
    "not an ONNX file": (_not_onnx, [], "not a loadable ONNX graph"),
    "classes disagree with the outputs": (
        lambda t: conv_graph(t / "k.onnx", classes=5), [],
        "outputs 5 classes, the class file lists 3"),
    "too few bands": (
        lambda t: conv_graph(t / "b.onnx", bands=3), [],
        "takes 3 bands, --bands lists 4"),
    "mean of the wrong length": (
        lambda t: conv_graph(t / "m.onnx"), ["--mean", "0.1,0.2"], "--mean has 2 and --std 4"),
    "a torch pickle": (
        lambda t: (t / "w.pth").write_bytes(b"\x80\x04") and t / "w.pth", [],
        "not a PyTorch weights file"),
    "no such file": (lambda t: t / "missing.onnx", [], "no such model file"),
    "margin too wide": (
        lambda t: conv_graph(t / "g.onnx"), ["--margin", 20], "margin must be between 0"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_IMPORTS))
def test_bad_imports_get_one_line_and_no_output(tmp_path: Path, case: str) -> None:
    make, extra, words = BAD_IMPORTS[case]
    source = make(tmp_path)
    classes = write_classes(tmp_path / "classes.yaml", ["forest", "water", "urban"])
    out = tmp_path / "out.safetensors"
    code, text = cli_run("import", source, "-o", out, "--bands", BANDS, "--classes", classes,
                         "--window", 32, "--margin", 4, *NORM, *extra)  # fmt: skip
    assert code == 2, text
    assert words in text and len(text.strip().splitlines()) == 1, text
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors") == []


@pytest.mark.parametrize("name", ["g.onnx", "g.bin"])
def test_a_graph_given_to_predict_is_told_to_go_through_import(tmp_path: Path, name: str) -> None:
    """Told from its name or its protobuf bytes, not "header too large" (safetensors')."""
    graph = conv_graph(tmp_path / name)
    scene = write_raster(tmp_path / "s.tif", textured_scene(16, 16), descriptions=TINY_BANDS)
    code, text = cli_run("predict", scene, "-m", graph, "-o", tmp_path / "o.tif")
    assert code == 2, text
    assert text.startswith(f"geoseg: error: {graph}: is an ONNX graph, not a geoseg checkpoint")
    assert f"`geoseg import {tmp_path / 'g.onnx'} -o model.safetensors --bands" in text
    assert not (tmp_path / "o.tif").exists()
    # and the command it names works on the graph (named .onnx)
    (tmp_path / "g.onnx").write_bytes(graph.read_bytes())
    assert import_graph(tmp_path, tmp_path / "g.onnx").is_file()


def _flip_a_graph_byte(path: Path) -> None:
    tensors = load_file(path)
    graph = tensors[GRAPH_TENSOR].copy()
    graph[len(graph) // 2] ^= 0xFF
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + n])["__metadata__"]
    save_file({GRAPH_TENSOR: graph}, path, metadata=meta)


def _add_a_tensor(path: Path) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + n])["__metadata__"]
    save_file({**load_file(path), "extra": np.zeros(3, np.float32)}, path, metadata=meta)


def _edit_meta(key: str, value: object):  # type: ignore[no-untyped-def]
    def edit(path: Path) -> None:
        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        meta = json.loads(header["__metadata__"]["geoseg"])
        meta[key] = value(meta[key]) if callable(value) else value
        header["__metadata__"]["geoseg"] = json.dumps(meta)
        new = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])

    return edit


TAMPERED = {
    "graph byte flipped": (_flip_a_graph_byte, "SHA-256 is not the one recorded"),
    "extra tensor": (_add_a_tensor, "holds one tensor"),
    "a class dropped": (_edit_meta("classes", lambda c: c[:2]), "outputs 3 classes"),
    "digest replaced": (_edit_meta("options", lambda o: {**o, "onnx_sha256": "0" * 64}),
                        "SHA-256 is not the one recorded"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_imports_are_refused(tmp_path: Path, case: str) -> None:
    edit, words = TAMPERED[case]
    model = import_graph(tmp_path, conv_graph(tmp_path / "m.onnx"))
    edit(model)
    scene = write_raster(tmp_path / "s.tif", textured_scene(40, 40), descriptions=TINY_BANDS)
    code, text = cli_run("predict", scene, "-m", model, "-o", tmp_path / "o.tif")
    assert code == 2 and words in text and len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / "o.tif").exists()


def test_missing_onnxruntime_says_which_extra(
    imported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(CheckpointError, match=r"pip install 'geoseg\[onnx\]'"):
        load_onnx_predictor(imported, read_checkpoint_meta(imported), "cpu")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="has a CUDA provider"
)
def test_cuda_without_the_provider_is_an_error(imported: Path) -> None:
    with pytest.raises(CheckpointError, match="onnxruntime-gpu"):
        load_onnx_predictor(imported, read_checkpoint_meta(imported), "cuda")
    auto = load_onnx_predictor(imported, read_checkpoint_meta(imported), "auto")
    assert isinstance(auto, OnnxPredictor)
    assert auto.session.get_providers() == ["CPUExecutionProvider"]


# --- predict --mask-clouds ------------------------------------------------------------------


def _cloudy(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``data`` with a bright (band 1 > 0.5 reflectance) 20 x 30 px cloud, and its mask."""
    cloudy = data.copy()
    cloudy[0, 10:30, 40:70] = 8000
    mask = np.zeros(data.shape[1:], bool)
    mask[10:30, 40:70] = True
    return cloudy, mask


def test_mask_clouds_sets_cloud_pixels_to_nodata_and_change_skips_them(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    classes = write_classes(tmp_path / "clouds.yaml", ["clear", "cloud", "cloud shadow"])
    clouds = tmp_path / "clouds.safetensors"
    code, text = cli_run("import", cloud_graph(tmp_path / "c.onnx"), "-o", clouds, "--bands",
                         BANDS, "--classes", classes, "--window", 64, "--scale", 10000)  # fmt: skip
    assert code == 0, text
    data = textured_scene(80, 100)
    after, cloud = _cloudy(data)
    before_tif = write_raster(tmp_path / "scene_before.tif", data, descriptions=TINY_BANDS)
    after_tif = write_raster(tmp_path / "scene_after.tif", after, descriptions=TINY_BANDS)
    maps = {}
    for name, scene, extra in [("before", before_tif, []), ("plain", after_tif, []),
                               ("masked", after_tif, ["--mask-clouds", clouds])]:  # fmt: skip
        out = tmp_path / f"{name}.tif"
        code, text = cli_run("predict", scene, "-m", tiny_checkpoint, "-o", out, "--confidence",
                             "--chunk", 48, *extra)  # fmt: skip
        assert code == 0, text
        with rasterio.open(out) as src:
            maps[name] = src.read()
    plain, masked = maps["plain"], maps["masked"]
    assert (masked[:, cloud] == 255).all()
    np.testing.assert_array_equal(masked[:, ~cloud], plain[:, ~cloud])
    assert (plain[0, cloud] != maps["before"][0, cloud]).any()  # the cloud looks like change
    codes = {}
    for name in ("plain", "masked"):
        report = tmp_path / f"report_{name}"
        code, text = cli_run("change", tmp_path / "before.tif", tmp_path / f"{name}.tif",
                             "-o", report)  # fmt: skip
        assert code == 0, text
        with rasterio.open(report / "change.tif") as src:
            codes[name] = src.read(1)
    k = 3  # classes: code = from * K + to
    changed = codes["plain"][cloud] != 255
    assert (codes["plain"][cloud][changed] // k != codes["plain"][cloud][changed] % k).any()
    assert (codes["masked"][cloud] == 255).all()  # no transition counted under the cloud
    np.testing.assert_array_equal(codes["masked"][~cloud], codes["plain"][~cloud])


def test_mask_clouds_needs_a_cloud_model(tmp_path: Path, imported: Path) -> None:
    scene = write_raster(tmp_path / "s.tif", textured_scene(40, 40), descriptions=TINY_BANDS)
    code, text = cli_run("predict", scene, "-m", imported, "-o", tmp_path / "o.tif",
                         "--mask-clouds", imported)  # fmt: skip
    assert code == 2 and "cloud or shadow classes" in text, text
    assert not (tmp_path / "o.tif").exists()


def test_workflow_mask_clouds_key(tmp_path: Path, tiny_checkpoint: Path) -> None:
    import shutil

    from geoseg.pipelines.workflow import load_workflow, run_workflow

    classes = write_classes(tmp_path / "clouds.yaml", ["clear", "cloud", "cloud shadow"])
    code, text = cli_run("import", cloud_graph(tmp_path / "c.onnx"), "-o",
                         tmp_path / "clouds.safetensors", "--bands", BANDS, "--classes", classes,
                         "--window", 64, "--scale", 10000)  # fmt: skip
    assert code == 0, text
    shutil.copy(tiny_checkpoint, tmp_path / "lc.safetensors")
    data = textured_scene(80, 100)
    after, cloud = _cloudy(data)
    write_raster(tmp_path / "a.tif", data, descriptions=TINY_BANDS)
    write_raster(tmp_path / "b.tif", after, descriptions=TINY_BANDS)
    doc = "scenes: [a.tif, b.tif]\nmodel: lc.safetensors\noutput: out\n"
    (tmp_path / "wf.yaml").write_text(doc + "mask_clouds: clouds.safetensors\n")
    (tmp_path / "bad.yaml").write_text(doc + "mask_clouds: lc.safetensors\n")

    result = run_workflow(load_workflow(tmp_path / "wf.yaml", tmp_path))

    with rasterio.open(result.maps[1]) as src:
        labels = src.read(1)
    assert (labels[cloud] == 255).all() and (labels[~cloud] != 255).all()
    with pytest.raises(GeosegError, match=r"mask_clouds: .*cloud or shadow classes"):
        load_workflow(tmp_path / "bad.yaml", tmp_path)
