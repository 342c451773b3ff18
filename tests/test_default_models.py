"""The models shipped in sample_data/models/, scored again on their held-out real data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import rasterio
from rasterio.windows import Window

from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.pipelines import PredictOptions
from geoseg.pipelines.evaluate import evaluate_scene
from geoseg.types import ClassSchema

MODELS = Path(__file__).resolve().parents[1] / "sample_data" / "models"
SHIPPED = ("landcover_s2", "water_s2")


def _crop(src_path: Path, dst: Path, rows: list[int], cols: list[int]) -> Path:
    with rasterio.open(src_path) as src:
        win = Window.from_slices(slice(*rows), slice(*cols))
        data = src.read(window=win)
        profile = src.profile | {
            "height": data.shape[1], "width": data.shape[2], "transform": src.window_transform(win),
        }  # fmt: skip
        with rasterio.open(dst, "w", **profile) as out:
            out.write(data)
            for i, d in enumerate(src.descriptions, start=1):
                if d:
                    out.set_band_description(i, d)
    return dst


def _maps(saved: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: {int(a): int(b) for a, b in v.items()} for k, v in saved.items() if k != "classes"
    }
    if "classes" in saved:
        out["classes"] = ClassSchema.from_json(saved["classes"])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_keeps_its_recorded_scores(
    shared_data: Path, tmp_path: Path, name: str
) -> None:
    model = MODELS / f"{name}.safetensors"
    meta = read_checkpoint_meta(model)
    held = meta.provenance["heldout"]
    image = _crop(shared_data / held["image"], tmp_path / "image.tif", held["rows"], held["cols"])
    labels = _crop(
        shared_data / held["labels"], tmp_path / "labels.tif", held["rows"], held["cols"]
    )
    opts = PredictOptions(device="cpu")
    recorded = meta.metrics["test"]
    got = evaluate_scene(str(model), image, labels, tmp_path / "full", opts).metrics
    assert got.pixels == recorded["model"]["pixels"]
    assert got.miou >= recorded["model"]["miou"] - 0.01
    coarse = evaluate_scene(
        str(model), image, labels, tmp_path / "coarse", opts, **_maps(held["model_maps"])
    ).metrics
    spectral = evaluate_scene(
        "spectral", image, labels, tmp_path / "spectral", opts, **_maps(held["spectral_maps"])
    ).metrics
    assert coarse.pixels == spectral.pixels
    assert coarse.miou > spectral.miou, (coarse.miou, spectral.miou)


def test_shipped_models_are_small_and_documented() -> None:
    for name in SHIPPED:
        path = MODELS / f"{name}.safetensors"
        assert path.stat().st_size <= 15 * 2**20
        meta = read_checkpoint_meta(path)
        assert meta.gsd_m is not None and meta.bands == ("B02", "B03", "B04", "B08", "B11", "B12")
        assert meta.metrics["test"]["model"]["pixels"] > 0
        assert "heldout" in meta.provenance


@pytest.mark.slow
def test_water_model_flood_area_on_the_held_out_block(shared_data: Path, tmp_path: Path) -> None:
    """Mapped water area (true ha, EPSG:4326 pixels) against the hand label's, same pixels."""
    import numpy as np

    from geoseg.areas import pixel_area_m2
    from geoseg.pipelines import predict_scene

    model = MODELS / "water_s2.safetensors"
    held = read_checkpoint_meta(model).provenance["heldout"]
    image = _crop(shared_data / held["image"], tmp_path / "image.tif", held["rows"], held["cols"])
    labels = _crop(
        shared_data / held["labels"], tmp_path / "labels.tif", held["rows"], held["cols"]
    )
    out = tmp_path / "water.tif"
    predict_scene(image, str(model), out, PredictOptions(device="cpu"))
    with rasterio.open(out) as dst, rasterio.open(labels) as ref:
        pred, truth = dst.read(1), ref.read(1)
        area = pixel_area_m2(ref.crs, ref.transform, np.arange(ref.height), np.arange(ref.width))
    scored = truth >= 0
    pred_ha = float(area[(pred == 1) & scored].sum()) / 1e4
    true_ha = float(area[(truth == 1) & scored].sum()) / 1e4
    iou = ((pred == 1) & (truth == 1) & scored).sum() / (
        ((pred == 1) | (truth == 1)) & scored
    ).sum()
    print(f"water IoU {iou:.3f}; mapped {pred_ha:.1f} ha, hand label {true_ha:.1f} ha")
    assert iou > 0.8
    assert abs(pred_ha - true_ha) / true_ha < 0.15


@pytest.mark.slow
def test_buildings_model_keeps_its_recorded_scores(shared_data: Path, tmp_path: Path) -> None:
    """The SpaceNet buildings model on its held-out right quarter, as its recipe scored it."""
    from geoseg.models.cache import load_predictor, model_spec
    from geoseg.models.registry import window_multiple
    from geoseg.stitching import InstancePredictor
    from geoseg.training.instances import read_instance_raster, score_instance_model

    model = MODELS / "buildings_spacenet.safetensors"
    meta = read_checkpoint_meta(model)
    recorded = meta.metrics["test"]
    src = shared_data / "spacenet_atlanta_buildings"
    block = _crop(src / "sample_geotiff.tif", tmp_path / "test.tif", [0, 900], [675, 900])
    test = read_instance_raster(block, src / "geotiff_labels.geojson", None, meta.schema)
    predictor = load_predictor(model_spec(str(model), "cpu", threads=1))
    assert isinstance(predictor, InstancePredictor)

    got = score_instance_model(predictor, [test], window_multiple(meta.arch, meta.options))

    assert (got.truth, got.predicted) == (recorded["truth"], recorded["predicted"]) == (9, 30)
    assert got.ap50 == pytest.approx(recorded["ap50"], abs=1e-6)
    assert got.pq == pytest.approx(recorded["pq"], abs=1e-3)
    assert got.sq == pytest.approx(recorded["sq"], abs=1e-3)
