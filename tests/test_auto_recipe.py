"""sample_data/models/auto_recipe.py: the ``--auto`` mode of the shipped-model recipe."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoseg.io.checkpoint import read_checkpoint_meta
from tests.conftest import TINY_BANDS, TINY_SCHEMA, textured_scene, write_raster

ROOT = Path(__file__).resolve().parents[1]


def _auto() -> Any:
    path = ROOT / "sample_data" / "models" / "auto_recipe.py"
    spec = importlib.util.spec_from_file_location("auto_recipe", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECIPE = {"miou": 0.427, "kappa": 0.763}


@pytest.mark.parametrize(
    "auto, replaces",
    [
        ({"miou": 0.458, "kappa": 0.770}, True),  # +0.031 mIoU, kappa up
        ({"miou": 0.450, "kappa": 0.800}, False),  # +0.023: within the noise margin
        ({"miou": 0.500, "kappa": 0.760}, False),  # mIoU up, kappa down: a rare class's luck
        ({"miou": 0.372, "kappa": 0.680}, False),  # worse (the 8 min run on the Slovenia patch)
    ],
)
def test_planned_model_replaces_the_shipped_one_only_beyond_noise(
    auto: dict[str, float], replaces: bool
) -> None:
    assert _auto().MARGIN_MIOU == 0.03
    assert _auto().is_better(auto, RECIPE) is replaces


def test_side_by_side_prints_both_scores_and_the_difference() -> None:
    classes = [{"name": "forest", "iou": 0.8, "support": 60},
               {"name": "water", "iou": None, "support": 0}]  # fmt: skip
    old = {"pixels": 100, "overall_accuracy": 0.9, "kappa": 0.8, "miou": 0.5, "mean_f1": 0.6,
           "classes": classes}  # fmt: skip
    new = old | {"miou": 0.55, "classes": [classes[0] | {"iou": 0.75}, classes[1]]}
    lines = _auto().side_by_side("tiny", old, new).splitlines()
    assert lines[1].split() == ["pixels", "100", "100"]
    assert lines[4].split() == ["miou", "0.5000", "0.5500", "+0.0500"]
    assert lines[6].split() == ["IoU", "forest", "(60", "px)", "0.8000", "0.7500", "-0.0500"]
    assert len(lines) == 7  # water: no reference pixel, no IoU, no line


def _pair(tmp_path: Path, tag: str, height: int, seed: int) -> tuple[Path, Path]:
    image = textured_scene(height, 96, bands=4, seed=seed)
    labels = np.where(image[0] > 2000, 1, np.where(image[1] > 2000, 4, 9)).astype(np.uint8)
    return (
        write_raster(tmp_path / f"{tag}.tif", image, descriptions=TINY_BANDS),
        write_raster(tmp_path / f"{tag}_labels.tif", labels[None]),
    )


def test_plan_and_train_trains_the_plan_from_the_train_block(tmp_path: Path) -> None:
    parts = {"train": [_pair(tmp_path, "train", 96, 0)], "val": [_pair(tmp_path, "val", 64, 1)]}
    reports: list[Any] = []
    ckpt, best, secs, plan = _auto().plan_and_train(
        "tiny", parts, TINY_SCHEMA, tmp_path, 2.0, {"data": "fabricated"}, reports.append
    )
    meta = read_checkpoint_meta(ckpt)
    assert ckpt == tmp_path / "tiny_auto.safetensors"
    assert (meta.window, meta.margin) == (plan["window"], plan["margin"])
    assert meta.window % 16 == 0 and meta.window >= 64
    assert meta.options["encoder_depth"] == plan["options"]["encoder_depth"]
    assert (meta.arch, meta.encoder, meta.bands) == ("unet", "tu-resnet18", TINY_BANDS)
    assert meta.provenance["data"] == "fabricated" and "step_s" in meta.provenance["plan"]
    assert meta.provenance["lr"] == 0.003 and meta.provenance["seed"] == 0
    assert len(reports) == plan["epochs"] and best is not None and 0 <= best <= 1
    assert secs > 0 and (tmp_path / "tiny.plan.yaml").is_file()
