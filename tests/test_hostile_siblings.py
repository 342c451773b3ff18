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
from affine import Affine
from click.testing import CliRunner
from rasterio.crs import CRS

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


# --- 2. a local CRS without a datum meets another CRS: one line, exit 2 --------------

LOCAL = CRS.from_wkt(
    'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)
LOCAL_GRID = Affine(0.5, 0, 0, 0, -0.5, 10)  # 20 x 30 px of 0.5 m
UTM = CRS.from_epsg(32633)
UTM_GRID = Affine(0.5, 0, 500_000, 0, -0.5, 5_000_010)


def _aoi(tmp: Path, name: str, crs: Any) -> Path:
    import geopandas as gpd
    import shapely

    path = tmp / name
    frame = gpd.GeoDataFrame({"n": ["field"]}, geometry=[shapely.box(1, 1, 5, 5)], crs=crs)
    frame.to_file(path)
    return path


def _change_maps(tmp: Path) -> dict[str, Path]:
    before = np.full((20, 30), 1, np.uint8)
    after = before.copy()
    after[:8] = 4
    return {
        "local before": write_labels(tmp / "b.tif", before, crs=LOCAL, transform=LOCAL_GRID),  # type: ignore[arg-type]
        "local after": write_labels(tmp / "a.tif", after, crs=LOCAL, transform=LOCAL_GRID),  # type: ignore[arg-type]
        "utm after": write_labels(tmp / "a_utm.tif", after, crs=UTM, transform=UTM_GRID),  # type: ignore[arg-type]
        # another file of the same map: one file listed twice is refused before the AOI
        "utm after, again": write_labels(tmp / "a_utm_2.tif", after, crs=UTM, transform=UTM_GRID),  # type: ignore[arg-type]
    }


#: case -> (maps, AOI file and CRS or None, extra options, words of the message or None = runs)
LocalCase = tuple[tuple[str, str], tuple[str, Any] | None, list[str], list[str] | None]
LOCAL_CASES: dict[str, LocalCase] = {
    "local maps, UTM AOI": (
        ("local before", "local after"), ("aoi.gpkg", "EPSG:32633"), [],
        ["aoi.gpkg: cannot be reprojected onto", "b.tif", "'site grid'", "--aoi-crs raster"],
    ),
    "local maps, AOI without CRS (read as lon/lat)": (
        ("local before", "local after"), ("aoi.geojson", None), [],
        ["aoi.geojson: cannot be reprojected onto", "from 'WGS 84' to 'site grid'",
         "--aoi-crs raster"],
    ),
    "local maps, AOI without CRS, --aoi-crs raster": (
        ("local before", "local after"), ("aoi.gpkg", None), ["--aoi-crs", "raster"], None,
    ),
    "local maps, --aoi-crs EPSG:32633": (
        ("local before", "local after"), ("aoi.gpkg", None), ["--aoi-crs", "EPSG:32633"],
        ["aoi.gpkg: cannot be reprojected onto", "no place on Earth"],
    ),
    "UTM map, local AOI": (
        ("utm after", "utm after, again"), ("aoi.gpkg", LOCAL.to_wkt()), [],
        ["aoi.gpkg: cannot be reprojected onto", "a_utm.tif", "from 'site grid' to 'WGS 84 / UTM"],
    ),
    "local map, then a UTM map": (
        ("local before", "utm after"), None, [],
        ["a_utm.tif: cannot be put on the grid of", "b.tif", "give maps in one CRS"],
    ),
    "UTM map, then a local map": (
        ("utm after", "local before"), None, [],
        ["b.tif: cannot be put on the grid of", "a_utm.tif", "no place on Earth"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(LOCAL_CASES))
def test_local_crs_against_another_crs(
    tmp_path: Path, case: str, capfd: pytest.CaptureFixture[str]
) -> None:
    names, aoi, extra, words = LOCAL_CASES[case]
    maps = _change_maps(tmp_path)
    args = ["change", *(str(maps[n]) for n in names), "-o", str(tmp_path / "report"), *extra]
    if aoi is not None:
        args += ["--aoi", str(_aoi(tmp_path, *aoi))]
    run = CliRunner().invoke(cli, args)
    if words is None:
        assert run.exit_code == 0, run.output
        rows = (tmp_path / "report" / "transitions_by_aoi.csv").read_text().splitlines()
        # the 4 m x 4 m box lies on rows that stay forest: 64 px of 0.25 m²
        assert any(
            r.startswith("0,forest,forest,0.001600,0.003954,0.000016,16.000000,64,") for r in rows
        )
        return
    assert run.exit_code == 2, run.output
    assert isinstance(run.exception, SystemExit)
    message = run.output.strip().splitlines()[-1]
    assert message.startswith("geoseg: error: ")
    for word in words:
        assert word in message
    assert not (tmp_path / "report").exists()
    assert "ERROR 6" not in capfd.readouterr().err  # GDAL's PROJJSON dump stays off stderr


def test_local_labels_for_a_utm_image_are_refused(tmp_path: Path) -> None:
    from geoseg.errors import InvalidRasterError
    from geoseg.io.training_data import read_labelled_raster
    from tests.conftest import textured_scene, write_raster

    image = write_raster(tmp_path / "img.tif", textured_scene(20, 30), crs=UTM, transform=UTM_GRID)
    labels = write_labels(tmp_path / "lab.tif", np.ones((20, 30), np.uint8), crs=LOCAL,  # type: ignore[arg-type]
                          transform=LOCAL_GRID)  # fmt: skip
    with pytest.raises(
        InvalidRasterError, match=r"lab\.tif: cannot be put on the grid of .*img\.tif"
    ):
        read_labelled_raster(image, labels)


# --- 3. vectorize says its areas are planar, as change does --------------------------


@pytest.mark.parametrize(("crs", "planar"), [(LOCAL, True), (UTM, False)], ids=["local", "utm"])
def test_vectorize_names_planar_areas(tmp_path: Path, crs: CRS, planar: bool) -> None:
    from geoseg.pipelines.vectorize import vectorize_labels

    labels = np.full((20, 30), 1, np.uint8)
    labels[:8] = 4
    path = write_labels(tmp_path / "map.tif", labels, crs=crs, transform=LOCAL_GRID)  # type: ignore[arg-type]
    run = CliRunner().invoke(cli, ["vectorize", str(path), "-o", str(tmp_path / "a.gpkg")])
    assert run.exit_code == 0, run.output
    note = "note: areas are planar, from the CRS's linear unit (metre, 1 m)"
    assert (note in run.output) is planar
    assert run.output.count("note: areas are") == int(planar)
    result = vectorize_labels(path, tmp_path / "b.gpkg")
    assert result.area_method.planar is planar
    assert result.area_method.unit == ("metre" if planar else "")


def test_predict_vector_names_planar_areas(tmp_path: Path) -> None:
    from tests.conftest import textured_scene, write_raster

    scene = write_raster(tmp_path / "s.tif", textured_scene(64, 64), crs=LOCAL,
                         transform=LOCAL_GRID)  # fmt: skip
    out, vector = tmp_path / "map.tif", tmp_path / "map.gpkg"
    run = CliRunner().invoke(
        cli, ["predict", str(scene), "-m", "spectral", "--sensor", "rgbnir", "-o", str(out),
              "--vector", str(vector)],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    lines = run.output.strip().splitlines()
    assert lines[0].startswith("note: areas are planar, from the CRS's linear unit (metre")
    assert lines[-1].startswith(f"wrote {vector}")


# --- 5. evaluate warns of a guessed band order as predict does ------------------------


def _evaluate_cases() -> dict[str, tuple[Any, dict[str, Any], str | None]]:
    from tests.test_hostile_inputs_values import _farmland_rgb, _satellite_rgb, _unnamed

    return {
        "R, G, B scene, unnamed": (lambda t: _unnamed(t, _satellite_rgb()), {}, None),
        "B, G, R scene, unnamed": (
            lambda t: _unnamed(t, _satellite_rgb()[::-1]), {},
            "darkest pixels (water, shadow) are redder than blue",
        ),
        "B, G, R farmland, unnamed (one class predicted)": (
            lambda t: _unnamed(t, _farmland_rgb()[::-1]), {},
            "100.0 % of the valid pixels are water",
        ),
        "B, G, R farmland, bands named": (
            lambda t: _unnamed(t, _farmland_rgb()[::-1], descriptions=("blue", "green", "red")),
            {}, None,
        ),
        "B, G, R farmland, --bands given": (
            lambda t: _unnamed(t, _farmland_rgb()[::-1]),
            {"band_roles": {"red": 3, "green": 2, "blue": 1}}, None,
        ),
    }  # fmt: skip


@pytest.mark.parametrize("case", sorted(_evaluate_cases()))
def test_evaluate_warns_of_a_guessed_band_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    from geoseg.models.spectral import SPECTRAL_SCHEMA
    from geoseg.pipelines.evaluate import evaluate_scene
    from tests.conftest import write_raster

    make, options, words = _evaluate_cases()[case]
    scene = make(tmp_path)
    reference = np.full((1, 96, 96), SPECTRAL_SCHEMA.ids[0], np.uint8)
    labels = write_raster(tmp_path / "ref.tif", reference)
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        evaluate_scene("spectral", scene, labels, tmp_path / "eval", PredictOptions(**options))
    said = [r.getMessage() for r in caplog.records if "red=3,green=2,blue=1" in r.getMessage()]
    if words is None:
        assert said == [], said
    else:
        assert len(said) == 1 and words in said[0] and "s.tif" in said[0], said


# --- 6. train warns of label values outside the schema, in change's words -------------

#: case -> ({value: pixels} written into the labels, expected "value: N px" texts)
TRAIN_STRAYS: dict[str, tuple[dict[int, int], list[str]]] = {
    "none": ({}, []),
    "one stray value": ({7: 3}, ["7: 3 px"]),
    "two values, 255 left alone": ({0: 5, 200: 2, 255: 4}, ["0: 5 px", "200: 2 px"]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_STRAYS))
def test_training_warns_of_label_values_outside_the_schema(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    from geoseg.training.data import class_targets, load_rasters
    from tests.conftest import textured_scene, write_raster

    strays, texts = TRAIN_STRAYS[case]
    image = write_raster(tmp_path / "img.tif", textured_scene(20, 30), crs=UTM,
                         transform=UTM_GRID)  # fmt: skip
    labels = np.full((20, 30), 1, np.uint8)
    flat, start = labels.reshape(-1), 0
    for value, n in strays.items():
        flat[start : start + n] = value
        start += n
    path = write_raster(tmp_path / "lab.tif", labels[None], crs=UTM, transform=UTM_GRID)
    cfg = _train()
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        rasters = load_rasters([str(image)], [str(path)], cfg)
    said = [r.getMessage() for r in caplog.records if "not classes of its schema" in r.message]
    if not texts:
        assert said == []
        return
    assert len(said) == 1
    assert said[0].startswith(
        f"{path}: values that are not classes of its schema (ids 1, 4, 9) were counted as "
        f"nodata: {', '.join(texts)}; check the labels were written with this class schema"
    )
    targets = class_targets(rasters[0], SCHEMA)
    assert int((targets == 255).sum()) == sum(strays.values())  # strays are not trained on
