"""Plans train: ``train --plan`` = ``--config``, ``--auto``, percentile clipping, class weights."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner
from torch import nn

from geoseg.cli import cli
from geoseg.errors import ConfigError
from geoseg.io.checkpoint import load_checkpoint
from geoseg.models.runtime import TorchPredictor
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.synthetic import TRUTH_SCHEMA, write_sample_data
from geoseg.training import load_train_config, train_model
from geoseg.training.fingerprint import data_fingerprint
from geoseg.training.objectives import semantic_loss

SMALL_NET = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sample_data(tmp_path_factory.mktemp("sample"), height=96, width=96, seed=3)


def _config(sample: dict[str, Path], out: Path, **kw: Any) -> Any:
    base: dict[str, Any] = {
        "images": [str(sample["before"])], "labels": [str(sample["truth_before"])],
        "classes": TRUTH_SCHEMA.to_json(), "output": str(out), "arch": "unet",
        "encoder": "resnet18", "options": SMALL_NET, "window": 32, "margin": 4, "epochs": 1,
        "steps_per_epoch": 1, "batch_size": 2, "device": "cpu",
    }  # fmt: skip
    return load_train_config(None, **(base | kw))


def _invoke(args: list[object]) -> Any:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_percentile_clipping_is_stored_and_applied_at_predict(
    sample: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "clip.safetensors"
    train_model(_config(sample, out, normalization="percentile"))
    _, meta = load_checkpoint(out)
    norm = meta.normalization
    with rasterio.open(sample["before"]) as src:
        data, profile = src.read(), src.profile
    valid = (data != 0).any(axis=0)
    pixels = data[:, valid].astype(np.float64) * 1e-4
    lo, hi = np.percentile(pixels, (0.5, 99.5), axis=1)
    np.testing.assert_allclose(norm.clip_low, lo, rtol=1e-9)
    np.testing.assert_allclose(norm.clip_high, hi, rtol=1e-9)
    clipped = np.clip(pixels, lo[:, None], hi[:, None])
    np.testing.assert_allclose(norm.mean, clipped.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(norm.std, clipped.std(axis=1), rtol=1e-5)
    # a block far over band 1's 99.5th percentile predicts as if it were just over it
    maps = []
    for name, value in (("far", 60_000), ("near", int(np.ceil(hi[0] * 1e4)) + 1)):
        scene = data.copy()
        scene[0, 30:60, 30:60] = value
        with rasterio.open(tmp_path / f"{name}.tif", "w", **profile) as dst:
            dst.write(scene)
        predict_scene(tmp_path / f"{name}.tif", str(out), tmp_path / f"{name}_map.tif",
                      PredictOptions(device="cpu"))  # fmt: skip
        with rasterio.open(tmp_path / f"{name}_map.tif") as src:
            maps.append(src.read(1))
    np.testing.assert_array_equal(maps[0], maps[1])
    x = TorchPredictor(nn.Identity(), meta, torch.device("cpu")).normalize(
        np.array([[[[60_000.0]]] * len(norm.mean)]).reshape(1, -1, 1, 1), np.ones((1, 1, 1), bool)
    )
    np.testing.assert_allclose(x.ravel(), (hi - norm.mean) / norm.std, rtol=1e-5)


def test_class_weights_weigh_the_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    target[0, 0, 0] = 255
    want = F.cross_entropy(logits, target, torch.tensor([1.0, 1.0, 5.0]), ignore_index=255)
    got = semantic_loss(logits, target, 0.0, (1.0, 1.0, 5.0))
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    assert float(got) != pytest.approx(float(semantic_loss(logits, target, 0.0)), rel=1e-3)


def test_class_weights_are_named_by_class(sample: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(sample, tmp_path / "m.safetensors", class_weights={"cloud": 4, "2": 2.5})
    assert cfg.class_weight_vector() == (1.0, 1.0, 2.5, 1.0, 1.0, 1.0, 4.0)
    with pytest.raises(ConfigError, match="names 'clouds', which is no class; classes: water"):
        _config(sample, tmp_path / "m.safetensors", class_weights={"clouds": 4})
    with pytest.raises(ConfigError, match="must be a number > 0"):
        _config(sample, tmp_path / "m.safetensors", class_weights={"cloud": 0})


def test_train_plan_equals_train_config_with_the_same_values(
    sample: dict[str, Path], tmp_path: Path
) -> None:
    plan = tmp_path / "plan.yaml"
    args = ["--image", sample["before"], "--labels", sample["truth_before"], "--device", "cpu"]
    _invoke(["plan", *args, "--time-budget", "5s", "-o", plan])
    text = plan.read_text()
    assert re.search(r"^# .+\nwindow: \d+$", text, re.M)
    config = tmp_path / "config.yaml"
    config.write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("#")))
    assert yaml.safe_load(config.read_text()) == yaml.safe_load(text)
    short = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2"]
    _invoke(["train", "--plan", plan, "-o", tmp_path / "a.safetensors", *short])
    _invoke(["train", "--config", config, "-o", tmp_path / "b.safetensors", *short])
    (ta, ma), (tb, mb) = (load_checkpoint(tmp_path / f"{n}.safetensors") for n in "ab")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert (ma.window, ma.margin, ma.normalization) == (mb.window, mb.margin, mb.normalization)
    assert ma.provenance["plan"] == yaml.safe_load(text)["provenance"]["plan"]


def test_train_auto_plans_beside_the_checkpoint_on_real_data(
    shared_data: Path, tmp_path: Path
) -> None:
    lulc = shared_data / "eolearn_slovenia_lulc" / "geotiff"
    out = tmp_path / "lulc.safetensors"
    result = _invoke([
        "train", "--auto", "--image", lulc / "s2_l1c_2015-09-09.tif", "--labels",
        lulc / "lulc.tif", "--time-budget", "10s", "--device", "cpu", "-o", out,
    ])  # fmt: skip
    plan = yaml.safe_load((tmp_path / "lulc.plan.yaml").read_text())
    assert f"  window: {plan['window']}\n" in result.output
    _, meta = load_checkpoint(out)
    assert (meta.window, meta.margin) == (plan["window"], plan["margin"])
    fp = meta.provenance["plan"]
    assert fp["gsd_m"] == 9.9948 and fp["scenes_px"] == [[101, 100]]
    # eo-learn's counts without the 155 unlabelled px (nodata 0): 11, 7601, 1777, 358, 198
    counts = {"1": 11, "2": 7601, "3": 1777, "4": 358, "8": 198}
    assert fp["class_share"] == {k: round(v / 9945, 5) for k, v in counts.items()}
    # cultivated land (11 px, 0.11 %) is rare: weighed sqrt(358 / 11) (the median is shrubland)
    assert plan["class_weights"] == {"class_1": round(float(np.sqrt(358 / 11)), 2)}


def test_instance_fingerprint_of_the_spacenet_buildings(shared_data: Path) -> None:
    from geoseg.types import ClassInfo, ClassSchema

    chip = shared_data / "spacenet_atlanta_buildings"
    schema = ClassSchema((ClassInfo(0, "background", (0, 0, 0)),
                          ClassInfo(1, "building", (200, 0, 0), is_thing=True)))  # fmt: skip
    image, labels = chip / "sample_geotiff.tif", chip / "geotiff_labels.geojson"
    fp = data_fingerprint([str(image)], [str(labels)], schema=schema, task="instance")
    assert fp.gsd_m == 0.5 and fp.dtype == "uint16"
    assert fp.objects[1].count == 43
    # footprints of 18-377 m2 are 72-1508 px of 0.25 m2 (rasterized: within a few px)
    assert 60 < fp.objects[1].median_px < 1508 and fp.objects[1].p90_px < 1600


def _clipped_meta() -> Any:
    from geoseg.types import ModelMeta, Normalization

    norm = Normalization((0.2, 0.2), (0.1, 0.1), 1e-4, (0.05, 0.05), (0.3, 0.3))
    return ModelMeta(task="semantic", arch="unet", encoder="resnet18", bands=("a", "b"),
                     normalization=norm, schema=TRUTH_SCHEMA)  # fmt: skip


def test_clip_bounds_round_trip_and_bad_ones_are_refused() -> None:
    from geoseg.errors import GeosegError
    from geoseg.types import ModelMeta, Normalization

    meta = _clipped_meta()
    assert ModelMeta.from_json(meta.to_json()) == meta
    assert "clip_low" not in ModelMeta.from_json({**meta.to_json(), "normalization": {
        "mean": [0.2, 0.2], "std": [0.1, 0.1]}}).to_json()["normalization"]  # fmt: skip
    with pytest.raises(GeosegError, match="low <= high"):
        Normalization((0.2,), (0.1,), 1.0, (0.5,), (0.1,))
    with pytest.raises(GeosegError, match="come together"):
        Normalization((0.2,), (0.1,), 1.0, (0.5,), None)


@pytest.mark.gpu
def test_cuda_normalization_clips_as_the_cpu_does() -> None:
    predictor = TorchPredictor(nn.Identity(), _clipped_meta(), torch.device("cuda"))
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 60_000, (2, 2, 8, 8)).astype(np.uint16)
    valid = rng.random((2, 8, 8)) > 0.2
    got = predictor.to_device(raw, valid).cpu().numpy()
    np.testing.assert_allclose(got, predictor.normalize(raw, valid), rtol=1e-6, atol=1e-6)
    assert got.max() == pytest.approx((0.3 - 0.2) / 0.1, rel=1e-6)
