"""Siblings of issue 15's hostile inputs: the Python API, LOCAL_CS grids, JSON, warnings.

What the CLI refuses the option dataclasses refuse too; maps and AOIs in a local
CRS without a datum that cannot meet another CRS are refused in one line; JSON
read back from user files is bounded; band-order and stray-label warnings reach
every command that reads the same inputs.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import ConfigError
from geoseg.pipelines.change import ChangeOptions
from geoseg.pipelines.instances import InstanceOptions
from geoseg.pipelines.predict import PredictOptions
from geoseg.pipelines.vectorize import VectorizeOptions
from geoseg.training.config import TrainConfig
from tests.change.helpers import SCHEMA, write_labels

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


# --- 4. JSON read back from user files: bounded, one error naming the file -----------

DEEP = "[" * 200_000 + "]" * 200_000


def _instance_map(tmp: Path, scores: str) -> Path:
    """A 2-object instance COG (band 1 class, band 2 id) whose scores tag is ``scores``."""
    import rasterio

    from geoseg.io.instances import SCORES_TAG

    classes = np.full((32, 32), 255, np.uint8)
    ids = np.zeros((32, 32), np.uint8)
    classes[2:8, 2:8], ids[2:8, 2:8] = 1, 1
    classes[20:30, 20:30], ids[20:30, 20:30] = 1, 2
    path = write_labels(tmp / "inst.tif", classes)
    with rasterio.open(path) as src:
        profile = src.profile | {"count": 2}
        tags = src.tags()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack([classes, ids]))
        dst.set_band_description(1, "class")
        dst.set_band_description(2, "instance")
        dst.update_tags(**tags, **{SCORES_TAG: scores})
    return path


@pytest.mark.parametrize(
    ("scores", "words"),
    [
        (DEEP, "it nests 200000 levels deep"),
        ("[0, [0.5], 0.9]", "it nests 2 levels deep"),
        ('{"1": 0.5}', "expected a list of scores between 0 and 1"),
        ('[0, "high", 0.9]', "expected a list of scores"),
        ("[0, NaN, 0.9]", "expected a list of scores"),
        ("[0, 0.5, 7]", "expected a list of scores"),
        ("[0, 0.5", "not JSON"),
    ],
)
def test_instance_scores_tag_is_read_bounded(tmp_path: Path, scores: str, words: str) -> None:
    from geoseg.errors import InvalidRasterError
    from geoseg.io.instances import read_instance_scores

    path = _instance_map(tmp_path, scores)
    with pytest.raises(
        InvalidRasterError, match=r"inst\.tif: malformed GEOSEG_INSTANCE_SCORES"
    ) as e:
        read_instance_scores(path)
    assert words in str(e.value)
    out = tmp_path / "objects.gpkg"
    run = CliRunner().invoke(cli, ["vectorize", str(path), "-o", str(out)])
    assert run.exit_code == 2, run.output
    assert "inst.tif: malformed GEOSEG_INSTANCE_SCORES tag" in run.output
    assert not out.exists()


def test_good_instance_scores_still_read(tmp_path: Path) -> None:
    from geoseg.io.instances import read_instance_scores

    scores = read_instance_scores(_instance_map(tmp_path, "[0, 0.25, 1]"))
    assert scores is not None and scores.tolist() == [0.0, 0.25, 1.0]


@pytest.mark.parametrize("text", [DEEP, "[1, 2]", '{"pid": [1]}', "\xff\xfe"])
def test_unreadable_lock_file_is_one_message(tmp_path: Path, text: str) -> None:
    from geoseg.errors import OutputLockedError
    from geoseg.io.lock import OutputLock, lock_path

    target = tmp_path / "map.tif"
    lock_path(target).write_bytes(text.encode("latin-1"))
    with pytest.raises(OutputLockedError, match=r"map\.tif: locked by .*cannot be read"):
        OutputLock.take(target)


def test_deep_resume_manifest_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from geoseg.io.parts import ChunkStore

    folder = tmp_path / ".map.tif.parts"
    folder.mkdir()
    (folder / "manifest.json").write_text(DEEP)
    with caplog.at_level(logging.WARNING):
        ChunkStore(folder, {"input": "a.tif"}, resume=True)
    assert "damaged" in caplog.text and "starting afresh" in caplog.text
    assert json.loads((folder / "manifest.json").read_text()) == {"input": "a.tif"}


def _geoparquet(tmp: Path, geo: bytes) -> Path:
    import geopandas as gpd
    import pyarrow.parquet as pq
    import shapely

    path = tmp / "aoi.parquet"
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:4326").to_parquet(path)
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"geo": geo}), path)
    return path


@pytest.mark.parametrize(
    ("geo", "words"),
    [
        (DEEP.encode(), "it nests 200000 levels deep"),
        (b"[1, 2]", "not a JSON object"),
        (b"{", "not JSON"),
    ],
)
def test_geoparquet_metadata_is_read_bounded(tmp_path: Path, geo: bytes, words: str) -> None:
    from geoseg.errors import InvalidVectorError
    from geoseg.io.vectors_crs import read_input_layer

    path = _geoparquet(tmp_path, geo)
    with pytest.raises(InvalidVectorError, match=r"aoi\.parquet: malformed GeoParquet") as e:
        read_input_layer(path)
    assert words in str(e.value)
    run = CliRunner().invoke(cli, ["info", str(path)])
    assert run.exit_code == 2, run.output
    assert "aoi.parquet: malformed GeoParquet 'geo' metadata" in run.output
