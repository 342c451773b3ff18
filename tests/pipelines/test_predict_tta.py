"""``--tta`` through predict and evaluate: chunk-invariant maps, recorded, refused for objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.cli.app import TTA_CHOICES
from geoseg.errors import GeosegError
from geoseg.models.runtime import load_torch_predictor
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.pipelines.evaluate import evaluate_scene
from geoseg.pipelines.instances import predict_instances
from geoseg.tiling.tta import TTA_MODES, TtaPredictor
from geoseg.types import TileSpec
from tests.conftest import (
    TINY_BANDS,
    TINY_SCHEMA,
    make_instance_checkpoint,
    textured_scene,
    write_raster,
)
from tests.reference import reference_top


def _scene(tmp_path: Path, h: int = 150, w: int = 173) -> tuple[Path, np.ndarray]:
    data = textured_scene(h, w)
    data[:, : h // 4, : w // 5] = 0  # nodata corner
    return write_raster(tmp_path / "scene.tif", data, nodata=0, descriptions=TINY_BANDS), data


def _read(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    with rasterio.open(path) as src:
        return src.read(), src.tags()


def cli_run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize("blend", ["trim", "hann"])
def test_tta_map_is_identical_for_any_chunking_and_equals_the_window_loop(
    tmp_path: Path, tiny_checkpoint: Path, blend: str
) -> None:
    scene, data = _scene(tmp_path, 100, 130)  # 3 x 3 windows, the last ones cut by the edge
    stride = 64 - 2 * 8
    maps, probs = [], []
    for chunk in (stride, 2 * stride, 4096):
        out, prob = tmp_path / f"lc_{chunk}.tif", tmp_path / f"p_{chunk}.tif"
        opts = PredictOptions(chunk=chunk, device="cpu", tta="d4", confidence=True,
                              blend=blend, probabilities=prob)  # fmt: skip
        predict_scene(scene, str(tiny_checkpoint), out, opts)
        maps.append(_read(out))
        probs.append(_read(prob)[0])
    for (got, tags), p in zip(maps[1:], probs[1:], strict=True):
        np.testing.assert_array_equal(got, maps[0][0])
        np.testing.assert_array_equal(p, probs[0])
        assert tags["GEOSEG_TTA"] == "d4"
    model = TtaPredictor(load_torch_predictor(tiny_checkpoint, "cpu"), "d4")
    valid = ~(data == 0).all(axis=0)
    labels, conf = reference_top(data, valid, TileSpec(64, 8, blend=blend), model, TINY_SCHEMA.ids)
    np.testing.assert_array_equal(maps[0][0][0], labels)
    assert np.abs(maps[0][0][1].astype(int) - conf).max() <= (blend == "hann")  # float32 sums
    plain = tmp_path / "plain.tif"
    predict_scene(scene, str(tiny_checkpoint), plain, PredictOptions(device="cpu", blend=blend))
    without, tags = _read(plain)
    assert "GEOSEG_TTA" not in tags
    changed = (without[0] != labels) & valid
    assert 0 < changed.sum() < 0.5 * valid.sum()  # TTA moves some pixels, not the map


def test_evaluate_with_tta_scores_the_tta_map(tmp_path: Path, tiny_checkpoint: Path) -> None:
    scene, data = _scene(tmp_path, 120, 100)
    truth = np.asarray(TINY_SCHEMA.ids, np.uint8)[(data[0] // 7) % 3][None]
    labels = write_raster(tmp_path / "truth.tif", truth)
    out = tmp_path / "lc.tif"
    predict_scene(scene, str(tiny_checkpoint), out, PredictOptions(device="cpu", tta="flips"))
    pred = _read(out)[0][0]
    ids = list(TINY_SCHEMA.ids)
    scored = pred != 255
    expected = np.zeros((3, 3), np.int64)
    np.add.at(expected, ([ids.index(v) for v in truth[0][scored]],
                         [ids.index(v) for v in pred[scored]]), 1)  # fmt: skip

    result = evaluate_scene(str(tiny_checkpoint), scene, labels, tmp_path / "ev",
                            PredictOptions(device="cpu", tta="flips", chunk=96))  # fmt: skip

    np.testing.assert_array_equal(result.confusion, expected)
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["tta"] == "flips"


def test_tta_is_refused_for_an_instance_model(tmp_path: Path) -> None:
    model = make_instance_checkpoint(tmp_path / "inst.safetensors")
    scene, _ = _scene(tmp_path, 64, 64)
    out = tmp_path / "inst.tif"
    code, text = cli_run("predict", scene, "-m", model, "-o", out, "--tta", "d4")
    assert code == 2 and len(text.strip().splitlines()) == 1, text
    assert "--tta d4 averages per-pixel class probabilities" in text
    assert "--task instance gives objects" in text and "leave --tta out" in text
    assert not out.exists()
    ids = write_raster(tmp_path / "ids.tif", np.zeros((1, 64, 64), np.uint32))
    code, text = cli_run("evaluate", "-m", model, "--image", scene, "--labels", ids,
                         "-o", tmp_path / "ev", "--tta", "flips")  # fmt: skip
    assert code == 2 and "--tta flips" in text and "--task instance" in text, text
    assert not (tmp_path / "ev" / "metrics.json").exists()
    with pytest.raises(GeosegError, match="--tta flips averages"):
        predict_instances(scene, str(model), out, PredictOptions(device="cpu", tta="flips"))


def test_tta_option_parses_and_is_recorded(tmp_path: Path, tiny_checkpoint: Path) -> None:
    assert TTA_CHOICES == TTA_MODES  # the CLI's copy (it does not import dask)
    scene, _ = _scene(tmp_path, 60, 70)
    out = tmp_path / "lc.tif"
    code, text = cli_run("predict", scene, "-m", tiny_checkpoint, "-o", out, "--tta", "d8")
    assert code == 2 and "Invalid value for '--tta'" in text and "'flips'" in text, text
    assert not out.exists()
    code, text = cli_run("predict", scene, "-m", tiny_checkpoint, "-o", out, "--tta", "flips",
                         "--device", "cpu")  # fmt: skip
    assert code == 0, text
    assert _read(out)[1]["GEOSEG_TTA"] == "flips"
    with pytest.raises(GeosegError, match="--tta must be one of none, flips, d4, not 'D4'"):
        PredictOptions(tta="D4")
