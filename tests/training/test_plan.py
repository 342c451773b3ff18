"""The rules of ``geoseg plan`` on fabricated fingerprints, and the plan file's comments."""

from __future__ import annotations

import math

import pytest
import yaml

from geoseg.errors import ConfigError
from geoseg.training.fingerprint import (
    PERCENTILES,
    BandStats,
    DataFingerprint,
    DeviceFingerprint,
    ObjectSizes,
)
from geoseg.training.plan import (
    Choice,
    choose_batch,
    choose_class_weights,
    choose_normalization,
    choose_schedule,
    choose_window,
)
from geoseg.training.plan_file import parse_duration, plan_text
from geoseg.types import ClassInfo, ClassSchema

SCHEMA = ClassSchema((ClassInfo(1, "field", (0, 120, 0)), ClassInfo(2, "road", (200, 0, 0)),
                      ClassInfo(3, "pond", (0, 0, 200))))  # fmt: skip
LAPTOP = DeviceFingerprint(cpu_cores=2, ram_gb=8.0)
GPU16 = DeviceFingerprint(cpu_cores=16, ram_gb=64.0, gpu_name="T4", gpu_memory_gb=16.0)


def _normal_band(name: str = "B1") -> BandStats:
    """A normal band, mean 0.2, sigma 0.05: percentiles from the normal quantiles."""
    z = {0.1: -3.09, 0.5: -2.576, 25.0: -0.674, 50.0: 0.0, 75.0: 0.674, 99.5: 2.576, 99.9: 3.09}
    return BandStats(name, 0.2, 0.05, tuple(0.2 + 0.05 * z[q] for q in PERCENTILES))


def _heavy_band(name: str = "VV") -> BandStats:
    """Log-normal-like: a narrow body and a long bright tail (speckle, specular roofs)."""
    return BandStats(name, 0.1, 0.3, (0.01, 0.02, 0.05, 0.07, 0.1, 1.2, 3.5))


def _fp(
    objects: dict[int, ObjectSizes], class_px: dict[int, int] | None = None,
    bands: tuple[BandStats, ...] | None = None, scene: int = 2000,
) -> DataFingerprint:  # fmt: skip
    return DataFingerprint(
        gsd_m=10.0, dtype="uint16", scale=1e-4, bands=bands or (_normal_band(),),
        class_px=class_px or {1: 9000, 2: 800, 3: 200}, objects=objects,
        scene_shapes=((scene, scene),), nodata_share=0.0, sampled_px=10_000,
    )  # fmt: skip


TINY = {1: ObjectSizes(3, 8000.0, 9000.0), 2: ObjectSizes(200, 4.0, 9.0),
        3: ObjectSizes(50, 2.0, 4.0)}  # fmt: skip
LARGE = {1: ObjectSizes(3, 8000.0, 9000.0), 2: ObjectSizes(20, 900.0, 10_000.0),
         3: ObjectSizes(5, 1500.0, 2500.0)}  # fmt: skip


def test_tiny_objects_get_the_smallest_window_and_a_shallower_encoder() -> None:
    window, margin, options = choose_window(_fp(TINY), GPU16, "unet", {})
    # the largest non-background object is 3 px across: 2 x 3 px is under the 64 px floor
    assert (window.value, margin.value) == (64, 8)
    assert options.value == {"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}
    big_window, big_margin, big_options = choose_window(_fp(LARGE), GPU16, "unet", {})
    # roads of 100 px across (p90 area 10 000 px): 200 px (1/32: 6 px) -> 224, depth 5
    assert (big_window.value, big_margin.value) == (224, 50)
    assert big_options.value == {"encoder_depth": 5}
    assert "100 px (class 2" in big_window.why and "multiple 32" in big_window.why


def test_one_lake_among_specks_sets_the_window() -> None:
    specks = {1: ObjectSizes(3, 8000.0, 9000.0), 2: ObjectSizes(1000, 2.0, 4.0, 4000.0)}
    window = choose_window(_fp(specks, {1: 9000, 2: 6000}), GPU16, "unet", {})[0]
    # the p90 by count is a 2 px speck; the pixel-weighted median is the 4000 px lake
    assert window.value == 128  # 2 x sqrt(4000) = 126.5 -> 128 (depth 4: multiple 16)


def test_a_16_gb_gpu_and_a_2_core_cpu_get_different_windows_and_batches() -> None:
    huge = {1: ObjectSizes(3, 8000.0, 9000.0), 2: ObjectSizes(20, 40_000.0, 90_000.0)}
    fp = _fp(huge, {1: 9000, 2: 1000})
    gpu_window = choose_window(fp, GPU16, "unet", {})[0].value
    cpu_window = choose_window(fp, LAPTOP, "unet", {})[0].value
    assert (gpu_window, cpu_window) == (512, 128)  # 2 x 300 px, capped by the device
    per_px = 2000.0  # bytes of activations per pixel
    gpu = choose_batch(gpu_window, GPU16, per_px)
    cpu = choose_batch(cpu_window, LAPTOP, per_px)
    # GPU: 8 GiB / (2000 B x 512^2 = 500 MiB) = 16; CPU: 2 GiB fits 65 but 2 per core = 4
    assert (gpu.value, cpu.value) == (16, 4)
    assert "2 per CPU core" in cpu.why and "half the GPU" in gpu.why


def test_a_small_memory_limits_the_batch() -> None:
    tight = DeviceFingerprint(cpu_cores=64, ram_gb=1.0)
    # a quarter of 1 GiB = 256 MiB; 64 MiB per 128 px window (4096 B/px): 4 fit, under 128
    assert choose_batch(128, tight, 4096.0).value == 4


def test_a_heavy_tailed_band_gets_percentile_clipping() -> None:
    normal = _fp(TINY, bands=(_normal_band("B02"), _normal_band("B03")))
    heavy = _fp(TINY, bands=(_normal_band("VH"), _heavy_band("VV")))
    assert _normal_band().tail_ratio == pytest.approx(3.09 / 1.348, rel=1e-3)
    assert choose_normalization(normal).value == "zscore"
    chosen = choose_normalization(heavy)
    assert chosen.value == "percentile"
    assert "VV (68.6)" in chosen.why and "VH" not in chosen.why  # (3.5 - 0.07) / 0.05


def test_a_rare_class_is_weighed_up() -> None:
    fp = _fp(TINY, {1: 9000, 2: 800, 3: 20})
    chosen = choose_class_weights(fp, SCHEMA)
    # shares 9000/9820, 800/9820, 20/9820: median = road's; pond is under a quarter of it
    assert chosen.value == {"pond": round(math.sqrt(800 / 20), 2)}
    assert "pond 0.20%" in chosen.why
    even = choose_class_weights(_fp(TINY, {1: 400, 2: 300, 3: 300}), SCHEMA)
    assert even.value is None


def test_very_rare_classes_are_capped_and_absent_ones_left_out() -> None:
    chosen = choose_class_weights(_fp(TINY, {1: 1_000_000, 2: 10}), SCHEMA)
    # median of (10, 1e6) by index is 1e6: sqrt(1e5) = 316 -> capped at 10; pond absent
    assert chosen.value == {"road": 10.0}


def test_the_budget_sets_the_epochs() -> None:
    epochs, steps = choose_schedule(step_s=0.5, budget_s=1800)
    # 80 % of 1800 s at 0.5 s = 2880 steps = 57 epochs of 50
    assert (epochs.value, steps.value) == (57, 50)
    short_epochs, short_steps = choose_schedule(step_s=2.0, budget_s=60)
    assert (short_epochs.value, short_steps.value) == (1, 24)
    assert choose_schedule(step_s=100.0, budget_s=10)[1].value == 1  # at least one step


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("1.5h", 5400)])
def test_time_budgets_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "-5m", "0s", "soon"])
def test_a_budget_without_a_unit_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="positive number with a unit"):
        parse_duration(text)


def test_every_key_of_the_plan_has_its_comment_above_it() -> None:
    window, margin, options = choose_window(_fp(TINY), LAPTOP, "unet", {})
    entries = [
        ("task", Choice("semantic", "as asked")), ("options", options), ("window", window),
        ("margin", margin), ("class_weights", choose_class_weights(_fp(TINY), SCHEMA)),
        ("classes", Choice(SCHEMA.to_json(), "the class file")),
    ]  # fmt: skip
    text = plan_text(entries, ["header line"])
    lines = text.splitlines()
    assert lines[0] == "# header line"
    for key, choice in entries:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[at - 1] == f"# {choice.why}", key
    assert yaml.safe_load(text) == {k: c.value for k, c in entries}
