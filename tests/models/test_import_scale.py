"""Imported models are fed as their import declared, and bands by name or refused.

Before, ``predict`` replaced an import's ``--scale 6615`` (a product's own digital
numbers) by the uint16 convention (reflectance x 10000), and a scene naming some of
the model's bands but not all was fed every band in file order behind one warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.models.bands import input_scale
from geoseg.models.cache import load_predictor, model_spec
from geoseg.types import TileSpec
from tests.conftest import TINY_BANDS, textured_scene, write_raster
from tests.models.onnx_graphs import conv_graph, write_classes
from tests.models.test_onnx import BANDS, cli_run
from tests.reference import reference_top


def _import(tmp_path: Path, *scale: object, mean: float = 0.3, std: float = 0.1) -> Path:
    classes = write_classes(tmp_path / "classes.yaml", ["forest", "water", "urban"])
    out = tmp_path / "m.safetensors"
    code, text = cli_run("import", conv_graph(tmp_path / "m.onnx"), "-o", out, "--bands", BANDS,
                         "--classes", classes, "--window", 32, "--margin", 4, "--mean",
                         ",".join([str(mean)] * 4), "--std", ",".join([str(std)] * 4),
                         *scale)  # fmt: skip
    assert code == 0, text
    return out


def _reference(model: Path, data: np.ndarray, scale: float | None) -> np.ndarray:
    predictor = load_predictor(model_spec(str(model), "cpu", None, scale))
    return reference_top(
        data, np.ones(data.shape[1:], bool), TileSpec(32, 4), predictor, (0, 1, 2)
    )[0]


def test_input_scale_by_hand() -> None:
    # trained / conventional scales convert between conventions
    assert input_scale(np.float32, 1e-4, imported=False) == 1.0
    assert input_scale(np.uint16, 1.0, imported=False) == 1e-4
    assert input_scale(np.uint16, 1e-4, imported=True) is None
    assert input_scale(np.uint16, 1 / 255, imported=True) == 1e-4  # an 8-bit model on S2
    # an import's own scale is how its integer scenes are stored
    assert input_scale(np.uint16, 1 / 6615, imported=True) is None
    assert input_scale(np.uint8, 1.0, imported=True) is None  # no --scale: values as stored
    assert input_scale(np.float32, 1 / 6615, imported=True) == 1.0  # float: reflectance


@pytest.mark.parametrize(
    ("dtype", "scale", "norm"),
    [(np.uint16, ["--scale", 6615], (0.3, 0.1)), (np.uint8, [], (130.0, 40.0))],
)  # without --scale (uint8), the model takes values as stored: its mean is in those units
def test_predict_feeds_an_imported_model_its_declared_scale(
    tmp_path: Path, dtype: type, scale: list[object], norm: tuple[float, float]
) -> None:
    model = _import(tmp_path, *scale, mean=norm[0], std=norm[1])
    data = textured_scene(60, 70)
    data = data if dtype == np.uint16 else (data // 16).astype(np.uint8)
    scene = write_raster(tmp_path / "s.tif", data, descriptions=TINY_BANDS)
    out = tmp_path / "o.tif"
    code, text = cli_run("predict", scene, "-m", model, "-o", out)
    assert code == 0 and "converting" not in text, text
    with rasterio.open(out) as src:
        labels = src.read(1)
    expected = _reference(model, data, None)  # the checkpoint's own scale
    np.testing.assert_array_equal(labels, expected)
    by_dtype = _reference(model, data, 1e-4 if dtype == np.uint16 else 1 / 255)
    assert (by_dtype != expected).mean() > 0.05  # what the dtype rule gave: another map


def test_bands_named_in_part_are_refused_with_a_pick(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _import(tmp_path, "--scale", 10000)
    data = textured_scene(40, 40)
    partly = write_raster(tmp_path / "p.tif", data, descriptions=("B04", "B03", "B02", "B8A"))
    code, text = cli_run("predict", partly, "-m", model, "-o", tmp_path / "p_out.tif")
    assert code == 2 and len(text.strip().splitlines()) == 1, text
    assert "but not ['B08']" in text and "--bands (here 3,2,1,<B08>" in text
    assert not (tmp_path / "p_out.tif").exists()
    # names that say nothing of the model's bands: file order, with the warning
    unnamed = write_raster(tmp_path / "u.tif", data)  # bands 1, 2, 3, 4
    with caplog.at_level(logging.WARNING):
        code, text = cli_run("predict", unnamed, "-m", model, "-o", tmp_path / "u_out.tif")
    assert code == 0 and "using the bands in file order" in caplog.text + text


def test_models_shows_an_imports_scale_and_normalisation(tmp_path: Path) -> None:
    model = _import(tmp_path, "--scale", 6615, mean=0.25, std=0.125)
    code, text = cli_run("models", model)
    assert code == 0, text
    assert "pixel scale: model input = stored value / 6615 (geoseg import --scale 6615)" in text
    assert "mean: 0.25, 0.25, 0.25, 0.25   std: 0.125, 0.125, 0.125, 0.125" in text
