"""The real scenes in ../shared/data through `predict -m spectral` (skipped if absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.pipelines import PredictOptions, predict_scene

SCENES = {
    "landsat7": "landsat7_rgb_byte/RGB.byte.tif",
    "slovenia": "eolearn_slovenia_lulc/geotiff/s2_l1c_2015-09-09.tif",
    "sen1floods11": "sen1floods11_spain/Spain_7370579_S2Hand.tif",
}


def _input_nodata(src: rasterio.DatasetReader) -> np.ndarray:
    data = src.read()
    if src.nodata is None:
        return np.zeros(data.shape[1:], bool)
    return (data == src.nodata).all(axis=0)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_spectral_keeps_georeferencing_and_nodata(
    shared_data: Path, tmp_path: Path, name: str
) -> None:
    scene = shared_data / SCENES[name]
    out = tmp_path / f"{name}.tif"
    predict_scene(scene, "spectral", out, PredictOptions(chunk=256))
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.transform == src.transform
        assert dst.shape == src.shape
        nodata = _input_nodata(src)
        labels = dst.read(1)
    assert (labels[nodata] == 255).all()
    assert (labels[~nodata] < 5).all()
    if name == "landsat7":
        assert 0.3 < nodata.mean() < 0.35  # the rotated footprint's collar


def test_sen1floods11_water_iou(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "sen1floods11_spain"
    out = tmp_path / "water.tif"
    predict_scene(folder / "Spain_7370579_S2Hand.tif", "spectral", out)
    with rasterio.open(out) as dst, rasterio.open(folder / "Spain_7370579_LabelHand.tif") as ref:
        pred, truth = dst.read(1), ref.read(1)
    scored = truth >= 0  # -1 = not valid in the hand label
    p, t = (pred == 0) & scored, (truth == 1) & scored
    iou = (p & t).sum() / (p | t).sum()
    assert iou > 0.72, f"spectral water IoU {iou:.3f}"
