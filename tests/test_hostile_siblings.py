"""Siblings of issue 15's hostile inputs: the Python API, LOCAL_CS grids, JSON, warnings.

What the CLI refuses the option dataclasses refuse too; maps and AOIs in a local
CRS without a datum that cannot meet another CRS are refused in one line; JSON
read back from user files is bounded; band-order and stray-label warnings reach
every command that reads the same inputs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from geoseg.errors import ConfigError
from geoseg.pipelines.change import ChangeOptions
from geoseg.pipelines.instances import InstanceOptions
from geoseg.pipelines.predict import PredictOptions
from geoseg.pipelines.vectorize import VectorizeOptions
from geoseg.training.config import TrainConfig
from tests.change.helpers import SCHEMA

# --- 1. the option dataclasses refuse what the CLI refuses --------------------------


def _train(**kw: Any) -> TrainConfig:
    return TrainConfig(images=("a.tif",), labels=("b.tif",), classes=SCHEMA, output="m", **kw)


#: case -> (constructor, keyword arguments, text of the message)
BAD_OPTIONS: dict[str, tuple[Any, dict[str, Any], str]] = {
    "predict chunk 0": (PredictOptions, {"chunk": 0}, "chunk must be a whole number >= 1, got 0"),
    "predict chunk -1024": (PredictOptions, {"chunk": -1024}, "chunk must be"),
    "predict window 0": (PredictOptions, {"window": 0}, "window must be a whole number >= 1"),
    "predict margin -1": (PredictOptions, {"margin": -1}, "margin must be a whole number >= 0"),
    "predict batch size 0": (PredictOptions, {"batch_size": 0}, "batch_size must be"),
    "predict workers 0": (PredictOptions, {"workers": 0}, "workers must be"),
    "predict torch threads -2": (PredictOptions, {"torch_threads": -2}, "torch_threads must"),
    "predict chunk 2.5": (PredictOptions, {"chunk": 2.5}, "chunk must be a whole number"),
    "predict chunk True": (PredictOptions, {"chunk": True}, "got True"),
    "predict chunk '512'": (PredictOptions, {"chunk": "512"}, "got '512'"),
    "instances chunk 0": (InstanceOptions, {"chunk": 0}, "InstanceOptions: chunk must"),
    "instances margin 0": (InstanceOptions, {"margin": 0}, "margin must be a whole number >= 1"),
    "instances batch size -1": (InstanceOptions, {"batch_size": -1}, "batch_size must"),
    "instances min_iou 1.5": (InstanceOptions, {"min_iou": 1.5}, "min_iou must be a finite"),
    "change chunk 0": (ChangeOptions, {"chunk": 0}, "ChangeOptions: chunk must"),
    "change workers -3": (ChangeOptions, {"workers": -3}, "workers must"),
    "change consistency 0": (ChangeOptions, {"consistency": 0}, "consistency must"),
    "change mmu -1 ha": (ChangeOptions, {"mmu_ha": -1.0}, "mmu_ha must be a finite number"),
    "change mmu nan": (ChangeOptions, {"mmu_ha": math.nan}, "mmu_ha must"),
    "change samples_se 2": (ChangeOptions, {"samples_se": 2.0}, "samples_se must"),
    "vectorize chunk 0": (VectorizeOptions, {"chunk": 0}, "chunk must be a whole number >= 16"),
    "vectorize workers 0": (VectorizeOptions, {"workers": 0}, "VectorizeOptions: workers"),
    "vectorize simplify inf": (VectorizeOptions, {"simplify_m": math.inf}, "simplify_m must"),
    "train window 0": (_train, {"window": 0}, "TrainConfig: window must be"),
    "train margin -8": (_train, {"margin": -8}, "margin must be a whole number >= 0"),
    "train batch size 0": (_train, {"batch_size": 0}, "batch_size must"),
    "train epochs -1": (_train, {"epochs": -1}, "epochs must"),
    "train lr 0": (_train, {"lr": 0.0}, "lr must be a finite number"),
    "train lr nan": (_train, {"lr": math.nan}, "lr must"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_option_dataclasses_refuse_bad_counts(case: str) -> None:
    make, kw, message = BAD_OPTIONS[case]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        make(**kw)
    assert isinstance(err.value, ValueError)


def test_option_dataclasses_keep_their_defaults_and_limits() -> None:
    assert PredictOptions(chunk=1, margin=0, window=None, workers=None).chunk == 1
    assert InstanceOptions(min_iou=1.0).min_iou == 1.0
    assert ChangeOptions(mmu_ha=0.0, samples_se=0.05).mmu_ha == 0.0
    assert VectorizeOptions(chunk=16, simplify_m=0.0).chunk == 16
    assert _train(margin=0, lr=1e-4).margin == 0


def test_score_instances_refuses_chunk_zero(tmp_path: Path) -> None:
    from geoseg.pipelines.evaluate_instances import score_instances

    with pytest.raises(ConfigError, match="chunk must be a whole number >= 1, got 0"):
        score_instances(tmp_path / "p.tif", tmp_path / "r.gpkg", tmp_path / "out", chunk=0)
    assert not (tmp_path / "out").exists()
