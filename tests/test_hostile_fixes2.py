"""A new user's second trial: misleading messages and confident wrong readings that must
now be a plain one-line refusal (exit 2, naming the file) or a stated result.

Table-driven: each case builds its inputs in ``tmp_path``, runs the CLI and names what
the messages (output and log records together) must and must not say.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.io.labels import CLASSES_TAG
from geoseg.types import ClassInfo, ClassSchema
from tests.cli_cases import CliCase, run_cli_case
from tests.conftest import (
    TINY_BANDS,
    textured_scene,
    write_raster,
)

#: grass is stuff, building a thing class.
PANOPTIC_SCHEMA = ClassSchema(
    (ClassInfo(1, "grass", (0, 120, 0)), ClassInfo(2, "building", (200, 0, 0), is_thing=True))
)


def _scene(tmp: Path) -> Path:
    return write_raster(tmp / "s.tif", textured_scene(90, 110), nodata=0, descriptions=TINY_BANDS)


def _polygons(tmp: Path) -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    frame = gpd.GeoDataFrame({"class": [1]}, geometry=[box(500100, 5099500, 500600, 5099900)])
    frame.set_crs("EPSG:32633").to_file(tmp / "x.gpkg")
    return tmp / "x.gpkg"


def _classes(tmp: Path) -> Path:
    path = tmp / "classes.yaml"
    path.write_text(
        "- {id: 1, name: forest, colour: [0, 120, 0]}\n"
        "- {id: 4, name: building, colour: [200, 0, 0], is_thing: true}\n"
    )
    return path


def _train(tmp: Path, task: str, labels: Path) -> list[str]:
    return ["train", "--task", task, "--image", str(_scene(tmp)), "--labels", str(labels),
            "--classes", str(_classes(tmp)), "-o", str(tmp / "m.safetensors"), "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "2", "--device", "cpu"]  # fmt: skip


def _plan_semantic_polygons(tmp: Path) -> list[str]:
    return ["plan", "--image", str(_scene(tmp)), "--labels", str(_polygons(tmp)),
            "--classes", str(_classes(tmp)), "-o", str(tmp / "p.yaml")]  # fmt: skip


def _import_pt(tmp: Path, content: object, preset: str = "hiera_t") -> list[str]:
    """``geoseg import fake.pt --sam-config PRESET``; ``content`` saved by torch (bytes: as is)."""
    import torch

    path = tmp / "fake.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return ["import", str(path), "-o", str(tmp / "f.safetensors"), "--bands", "R,G,B",
            "--sam-config", preset]  # fmt: skip


def _sam2_patch_only() -> dict[str, object]:
    import torch

    return {"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(96, 3, 7, 7)}}


def _not_sam() -> dict[str, object]:
    import torch

    return {"model": {"backbone.conv1.weight": torch.zeros(8, 3, 3, 3)}}


def _panoptic_map(tmp: Path, name: str = "pan.tif") -> Path:
    """A 40 x 40 panoptic COG (band 1 class, band 2 id): grass stuff, two buildings."""
    cls = np.full((40, 40), 1, np.uint32)
    ids = np.zeros((40, 40), np.uint32)
    cls[5:15, 5:15], ids[5:15, 5:15] = 2, 1
    cls[20:30, 20:30], ids[20:30, 20:30] = 2, 2
    path = write_raster(tmp / name, np.stack([cls, ids]), descriptions=("class", "instance"))
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: json.dumps(PANOPTIC_SCHEMA.to_json())})
    return path


def _ids_only_reference(tmp: Path) -> Path:
    """The panoptic map's object ids alone: no class band, so no stuff."""
    with rasterio.open(_panoptic_map(tmp)) as src:
        ids = src.read(2)
    return write_raster(tmp / "ids.tif", ids[None])


def _full_reference(tmp: Path) -> Path:
    with rasterio.open(_panoptic_map(tmp)) as src:
        data = src.read()
    return write_raster(tmp / "ref.tif", data[::-1], descriptions=("instance", "class"))


def _score_panoptic(tmp: Path, reference: Callable[[Path], Path]) -> list[str]:
    ref = reference(tmp)
    return ["evaluate", "--task", "panoptic", "--prediction", str(tmp / "pan.tif"),
            "--labels", str(ref), "-o", str(tmp / "ev")]  # fmt: skip


def _mask(tmp: Path, shape: tuple[int, int] = (40, 40)) -> Path:
    """A 0/1 building mask with two separate buildings."""
    mask = np.zeros((1, *shape), np.uint8)
    mask[0, 5:15, 5:15] = 1
    mask[0, 20:30, 20:30] = 1
    return write_raster(tmp / "mask.tif", mask)


def _score_mask(tmp: Path, task: str) -> list[str]:
    _panoptic_map(tmp)
    return ["evaluate", "--task", task, "--prediction", str(tmp / "pan.tif"),
            "--labels", str(_mask(tmp)), "-o", str(tmp / "ev")]  # fmt: skip


def _train_on_mask(tmp: Path) -> list[str]:
    return _train(tmp, "instance", _mask(tmp, (90, 110)))


def _two_thing_prediction(tmp: Path) -> Path:
    """The panoptic map with a schema of two thing classes (building, car)."""
    schema = ClassSchema((*PANOPTIC_SCHEMA.classes, ClassInfo(3, "car", (0, 0, 200), True)))
    with rasterio.open(_panoptic_map(tmp)) as src:
        data = src.read()
    path = write_raster(tmp / "pred.tif", data, descriptions=("class", "instance"))
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: json.dumps(schema.to_json())})
    return path


def _kinds(tmp: Path) -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    frame = gpd.GeoDataFrame({"kind": ["tree"]}, geometry=[box(500050, 5099700, 500100, 5099750)])
    frame.set_crs("EPSG:32633").to_file(tmp / "kinds.gpkg")
    return tmp / "kinds.gpkg"


def _score_two_things(tmp: Path, reference: Path, *extra: str) -> list[str]:
    return ["evaluate", "--task", "panoptic", "--prediction", str(_two_thing_prediction(tmp)),
            "--labels", str(reference), "-o", str(tmp / "ev"), *extra]  # fmt: skip


Case = CliCase


_RASTER_NEEDED = (
    "x.gpkg: is a polygon layer",
    "needs a label raster (a single-band integer GeoTIFF of class ids on the image's grid",
    "gdal_rasterize",
    "-te 500000.0 5099100.0 501100.0 5100000.0 -ts 110 90",
)

CASES = {
    # 1: "not a raster GDAL can read ...; re-export it or download it again"
    "train_semantic_polygon_labels": Case(
        lambda tmp: _train(tmp, "semantic", _polygons(tmp)),
        2,
        ("--task semantic training", *_RASTER_NEEDED),
        ("re-export", "download it again"),
        ("m.safetensors",),
    ),
    "train_change_polygon_labels": Case(
        lambda tmp: _train(tmp, "change", _polygons(tmp)),
        2,
        ("--task change training", *_RASTER_NEEDED),
        ("re-export",),
    ),
    "plan_semantic_polygon_labels": Case(
        _plan_semantic_polygons,
        2,
        ("--task semantic training", *_RASTER_NEEDED),
        ("re-export",),
        ("p.yaml",),
    ),
    "predict_polygon_scene": Case(
        lambda tmp: ["predict", str(_polygons(tmp)), "-m", "spectral", "-o", str(tmp / "o.tif")],
        2,
        ("x.gpkg: is a polygon layer, not a raster", "give a raster"),
        ("re-export", "download it again"),
        ("o.tif",),
    ),
    "vectorize_polygon_layer": Case(
        lambda tmp: ["vectorize", str(_polygons(tmp)), "-o", str(tmp / "v.gpkg")],
        2,
        ("x.gpkg: is a polygon layer, not a raster",),
        ("re-export",),
        ("v.gpkg",),
    ),
    # 2: a SAM 2 preset was answered with "give --sam-config CONFIG.json"
    "sam2_preset_on_text_file": Case(
        lambda tmp: _import_pt(tmp, b"hello\n"),
        2,
        ("fake.pt: not a SAM 2 checkpoint", "--sam-config hiera_t takes Meta's SAM 2"),
        ("JSON",),
        ("f.safetensors",),
    ),
    "sam2_preset_on_another_model": Case(
        lambda tmp: _import_pt(tmp, _not_sam(), "hiera_b+"),
        2,
        ("fake.pt: not a SAM 2 checkpoint", "--sam-config hiera_b+ names a SAM 2 model"),
        ("JSON", "SAM's own .pth files"),
        ("f.safetensors",),
    ),
    "sam2_preset_on_a_trunk_without_blocks": Case(
        lambda tmp: _import_pt(tmp, _sam2_patch_only()),
        2,
        ("fake.pt: not a complete SAM 2 checkpoint", "so not SAM 2 hiera_t"),
        ("JSON",),
        ("f.safetensors",),
    ),
    # 4: PQ was one mean; stuff and things are now reported apart, and a reference that
    # labels no stuff is said to make PQ_stuff 0
    "panoptic_reference_with_stuff": Case(
        lambda tmp: _score_panoptic(tmp, _full_reference),
        0,
        ("PQ 1.0000", "PQ_things 1.0000  PQ_stuff 1.0000"),
        ("labels no stuff",),
    ),
    "panoptic_reference_without_stuff": Case(
        lambda tmp: _score_panoptic(tmp, _ids_only_reference),
        0,
        (
            "PQ 0.5000",
            "PQ_things 1.0000  PQ_stuff 0.0000",
            "ids.tif: labels no stuff class (only objects), so each predicted stuff class (grass)",
            "give a reference with a class band for every pixel, or score --task instance",
        ),
    ),
    # 5: a 0/1 mask as instance labels was read as ONE object (PQ 0, "TP 0, FP 2, FN 1")
    "evaluate_instance_on_a_mask": Case(
        lambda tmp: _score_mask(tmp, "instance"),
        2,
        (
            "mask.tif: holds only 0 and 1, with 2 separate patches of 1",
            "ONE object",
            "one id per object",
            "geoseg vectorize mask.tif -o objects.gpkg --classes 1",
        ),
        ("AP50",),
        ("ev/metrics.json",),
    ),
    "evaluate_panoptic_on_a_mask": Case(
        lambda tmp: _score_mask(tmp, "panoptic"),
        2,
        ("mask.tif: holds only 0 and 1, with 2 separate patches of 1",),
        ("PQ",),
        ("ev/metrics.json",),
    ),
    "train_instance_on_a_mask": Case(
        _train_on_mask,
        2,
        ("mask.tif: holds only 0 and 1, with 2 separate patches of 1", "one id per object"),
        ("epoch",),
        ("m.safetensors",),
    ),
    # 6: scoring a prediction file (no model) blamed "the model"
    "prediction_ids_without_class_band": Case(
        lambda tmp: _score_two_things(tmp, _ids_only_reference(tmp)),
        2,
        ("ids.tif: has no class band and the prediction", "pred.tif has no single thing class"),
        ("the model",),
        ("ev/metrics.json",),
    ),
    "prediction_polygons_without_class_field": Case(
        lambda tmp: _score_two_things(tmp, _kinds(tmp)),
        2,
        ("kinds.gpkg: no 'class' field and the prediction", "pred.tif has no single thing"),
        ("the model",),
    ),
    "prediction_polygons_of_another_class": Case(
        lambda tmp: _score_two_things(tmp, _kinds(tmp), "--class-field", "kind"),
        2,
        ("kinds.gpkg: kind='tree' is not a class of the prediction", "(grass, building, car)"),
        ("the model",),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fixes2_case(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_cli_case(CASES[name], tmp_path, caplog)


@pytest.mark.parametrize("ext", ["gpkg", "shp", "parquet", "fgb", "geojson"])
def test_panoptic_stuff_features_have_a_null_instance_id(tmp_path: Path, ext: str) -> None:
    """Item 3: stuff regions were written with instance_id 0, read by a GIS as object 0."""
    import geopandas as gpd
    import pyarrow.parquet as pq
    import pyogrio

    out = tmp_path / f"pan.{ext}"
    result = CliRunner().invoke(cli, ["vectorize", str(_panoptic_map(tmp_path)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    frame = gpd.read_parquet(out) if ext == "parquet" else pyogrio.read_dataframe(out)
    field = "inst_id" if ext == "shp" else "instance_id"
    rows = sorted(zip(frame["class_name"], frame[field].tolist(), strict=True), key=str)
    assert [r[0] for r in rows] == ["building", "building", "grass"]
    assert [r[1] for r in rows[:2]] == [1, 2]
    assert pd.isna(rows[2][1])  # NULL, not 0
    if ext == "parquet":
        assert str(pq.read_schema(out).field(field).type) == "int64"
    elif ext != "geojson":  # GeoJSON has no field types
        info = pyogrio.read_info(out)
        assert dict(zip(info["fields"], info["dtypes"], strict=True))[field] == "int64"


def test_a_mask_made_into_polygons_as_the_refusal_says_scores_each_object(
    tmp_path: Path,
) -> None:
    """Item 5's fix, followed: `geoseg vectorize mask.tif --classes 1` gives one feature
    per patch, and the two buildings then score as two matched objects."""
    runner = CliRunner()
    objects = tmp_path / "objects.gpkg"
    args = ["vectorize", str(_mask(tmp_path)), "-o", str(objects), "--classes", "1"]
    assert runner.invoke(cli, args).exit_code == 0
    argv = ["evaluate", "--task", "instance", "--prediction", str(_panoptic_map(tmp_path)),
            "--labels", str(objects), "-o", str(tmp_path / "ev")]  # fmt: skip
    result = runner.invoke(cli, argv)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["pq"] == 1.0 and report["classes"][0]["tp"] == 2


def test_an_id_raster_with_ids_0_and_1_and_one_patch_is_one_object(tmp_path: Path) -> None:
    """One patch of 1 is a legitimate single object, not a mask: scored, not refused."""
    from geoseg.io.instance_masks import refuse_binary_mask

    ids = np.zeros((1, 20, 20), np.uint8)
    ids[0, 2:6, 2:6] = 1
    refuse_binary_mask(write_raster(tmp_path / "one.tif", ids))
    ids[0, 10:12, 10:12] = 2  # ids over 1: an id raster, whatever its patches
    ids[0, 15:17, 15:17] = 1
    refuse_binary_mask(write_raster(tmp_path / "two.tif", ids))
