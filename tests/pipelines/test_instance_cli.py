"""`geoseg predict/evaluate --task instance`: an instance checkpoint end to end, and scores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
import torch
from affine import Affine
from click.testing import CliRunner
from scipy import ndimage

from geoseg.cli import cli
from geoseg.io.checkpoint import save_checkpoint
from geoseg.io.labels import CLASSES_TAG
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.instance import BottomUpInstancePredictor
from geoseg.types import ClassInfo, ClassSchema, ModelMeta, Normalization
from tests.conftest import TINY_BANDS, make_instance_checkpoint, textured_scene, write_raster

SCHEMA = ClassSchema(
    (
        ClassInfo(0, "ground", (90, 90, 90)),
        ClassInfo(1, "building", (200, 0, 0), is_thing=True),
    )
)
TRANSFORM = Affine(10, 0, 500000, 0, -10, 5100000)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """The shared 2-core test machine is oversubscribed with torch's default threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def instance_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained U-Net/ResNet-18 with K + 1 = 3 outputs, saved with task "instance"."""
    path = tmp_path_factory.mktemp("ckpt") / "buildings.safetensors"
    return make_instance_checkpoint(path, SCHEMA)


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "scene.tif", textured_scene(100, 120), descriptions=TINY_BANDS)


def test_instance_checkpoint_loads_as_instance_predictor(instance_checkpoint: Path) -> None:
    model = load_predictor(model_spec(str(instance_checkpoint), "cpu"))
    assert isinstance(model, BottomUpInstancePredictor)
    assert model.schema == SCHEMA and model.bands == TINY_BANDS


@pytest.mark.usefixtures("one_torch_thread")
def test_predict_instance_writes_consistent_ids_and_one_row_per_id(
    tmp_path: Path, scene: Path, instance_checkpoint: Path
) -> None:
    out, gpkg = tmp_path / "inst.tif", tmp_path / "inst.gpkg"
    args = ["predict", str(scene), "-m", str(instance_checkpoint), "-o", str(out),
            "--vector", str(gpkg), "--device", "cpu", "--chunk", "48", "--torch-threads", "1",
            "--workers", "1"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as src:
        assert src.dtypes == ("uint32", "uint32")
        assert src.descriptions == ("class", "instance")
        classes, ids = src.read()
    found = np.unique(ids[ids > 0])
    assert found.size > 0 and found.tolist() == list(range(1, found.size + 1))
    assert f"({found.size} instances)" in res.output
    assert (classes[ids == 0] == 255).all()
    parts = {}
    for i in found:
        mask = ids == i
        assert np.unique(classes[mask]).tolist() == [1]  # one class per id: the thing
        parts[int(i)] = ndimage.label(mask, structure=np.ones((3, 3)))[1]
    # An untrained model sees different objects in overlapping windows, so the
    # stitcher can join fragments whose trimmed cores do not touch: such an id has
    # several 8-connected parts; the layer still has one row (a MultiPolygon) per id.
    layer = gpd.read_file(gpkg)
    assert sorted(layer["instance_id"]) == found.tolist()
    assert set(layer["class_name"]) == {"building"}
    pieces = shapely.get_num_geometries(layer.geometry)
    n_parts = dict(zip(layer["instance_id"], pieces, strict=True))
    assert all(n_parts[i] >= n for i, n in parts.items())  # corner contacts may split a part
    assert any(n > 1 for n in parts.values()), "the case should hold an object in pieces"
    with rasterio.open(out) as src:
        back = rasterio.features.rasterize(
            zip(layer.geometry, layer["instance_id"], strict=True), out_shape=ids.shape,
            transform=src.transform, fill=0, dtype="uint32",
        )  # fmt: skip
    np.testing.assert_array_equal(back, ids)  # every object's pixels, exactly, in one row
    # Each object's score: the best detection score of its fragments, kept in the COG.
    with rasterio.open(out) as src:
        scores = json.loads(src.tags()["GEOSEG_INSTANCE_SCORES"])
    assert len(scores) == found.size + 1 and scores[0] == 0
    assert all(0 < v <= 1 for v in scores[1:])
    np.testing.assert_allclose(layer["score"], [scores[i] for i in layer["instance_id"]])
    pixel_ha = 10 * 10 / 1e4  # UTM 10 m pixels, ~true area within 0.1 %
    for i, area in zip(layer["instance_id"], layer["area_ha"], strict=True):
        assert area == pytest.approx((ids == i).sum() * pixel_ha, rel=2e-3)


@pytest.mark.usefixtures("one_torch_thread")
def test_predict_panoptic_gives_every_pixel_a_class(
    tmp_path: Path, scene: Path, instance_checkpoint: Path
) -> None:
    inst, pan = tmp_path / "inst.tif", tmp_path / "pan.tif"
    args = ["predict", str(scene), "-m", str(instance_checkpoint), "-o", str(inst),
            "--panoptic", str(pan), "--device", "cpu", "--torch-threads", "1"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    with rasterio.open(inst) as a, rasterio.open(pan) as b:
        (ic, ii), (pc, pi) = a.read(), b.read()
    np.testing.assert_array_equal(pi, ii)
    np.testing.assert_array_equal(pc[ii > 0], ic[ii > 0])
    assert set(np.unique(pc[ii == 0])) <= {0, 255}  # stuff from the semantic head, or void
    assert (pc[ii == 0] == 0).any()


def test_task_mismatch_is_an_error_naming_the_file(
    tmp_path: Path, scene: Path, tiny_checkpoint: Path
) -> None:
    args = ["predict", str(scene), "-m", str(tiny_checkpoint), "-o", str(tmp_path / "x.tif"),
            "--task", "instance"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    assert str(tiny_checkpoint) in res.output and "semantic model" in res.output
    assert not (tmp_path / "x.tif").exists()
    res = CliRunner().invoke(
        cli, ["evaluate", "-m", str(tiny_checkpoint), "--image", str(scene), "--labels",
              str(scene), "-o", str(tmp_path / "ev"), "--task", "instance"],
    )  # fmt: skip
    assert res.exit_code == 2 and str(tiny_checkpoint) in res.output


# Hand-built case on a 20 x 20 grid, one thing class ("building"):
#   reference A rows 2-7 x cols 2-7 (36 px), reference B rows 12-15 x cols 12-15 (16 px);
#   prediction A' rows 2-7 x cols 3-8 (36 px): 30 px shared, union 42, IoU 5/7 -> match;
#   B has no prediction (FN); prediction C rows 12-15 x cols 2-5 touches nothing (FP).
# PQ = SQ x RQ = 5/7 x 1 / (1 + 0.5 + 0.5) = 5/14; AP50 = precision x recall = 1/2 x 1/2.
BOXES = {"A": (2, 8, 2, 8), "B": (12, 16, 12, 16), "A'": (2, 8, 3, 9), "C": (12, 16, 2, 6)}


def _paint(names: list[str]) -> np.ndarray:
    ids = np.zeros((20, 20), np.uint32)
    for i, name in enumerate(names, start=1):
        r0, r1, c0, c1 = BOXES[name]
        ids[r0:r1, c0:c1] = i
    return ids


@pytest.fixture
def prediction(tmp_path: Path) -> Path:
    ids = _paint(["A'", "C"])
    classes = np.where(ids > 0, 1, 255).astype(np.uint32)
    path = write_raster(
        tmp_path / "pred.tif", np.stack([classes, ids]), transform=TRANSFORM,
        descriptions=("class", "instance"),
    )  # fmt: skip
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: json.dumps(SCHEMA.to_json())})
    return path


def _evaluate(tmp_path: Path, prediction: Path, reference: Path, name: str) -> dict:  # type: ignore[type-arg]
    out = tmp_path / name
    args = ["evaluate", "--prediction", str(prediction), "--labels", str(reference),
            "-o", str(out), "--task", "instance"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return dict(json.loads((out / "metrics.json").read_text()))


def test_evaluate_instance_matches_hand_computed_pq_and_ap50(
    tmp_path: Path, prediction: Path
) -> None:
    reference = write_raster(tmp_path / "ref.tif", _paint(["A", "B"])[None], transform=TRANSFORM)
    report = _evaluate(tmp_path, prediction, reference, "ev")
    assert report["pq"] == pytest.approx(5 / 14)
    assert report["sq"] == pytest.approx(5 / 7)
    assert report["rq"] == pytest.approx(0.5)
    assert report["ap50"] == pytest.approx(0.25)
    (building,) = report["classes"]
    assert (building["name"], building["tp"], building["fp"], building["fn"]) == (
        "building",
        1,
        1,
        1,
    )
    assert building["ap50"] == pytest.approx(0.25)


def test_polygon_reference_scores_like_the_equivalent_raster(
    tmp_path: Path, prediction: Path
) -> None:
    def box(name: str) -> shapely.Polygon:
        r0, r1, c0, c1 = BOXES[name]
        x0, y0 = TRANSFORM @ (c0, r1)
        x1, y1 = TRANSFORM @ (c1, r0)
        return shapely.box(x0, y0, x1, y1)

    layer = gpd.GeoDataFrame(
        {"class": ["building", "building"]}, geometry=[box("A"), box("B")], crs="EPSG:32633"
    )
    gj = tmp_path / "ref.geojson"
    layer.to_file(gj, driver="GeoJSON")
    raster = write_raster(tmp_path / "ref.tif", _paint(["A", "B"])[None], transform=TRANSFORM)
    from_polygons = _evaluate(tmp_path, prediction, gj, "ev_poly")
    from_raster = _evaluate(tmp_path, prediction, raster, "ev_raster")
    for key in ("pq", "sq", "rq", "ap50"):
        assert from_polygons[key] == pytest.approx(from_raster[key])
    assert from_polygons["pq"] == pytest.approx(5 / 14)
    assert from_polygons["classes"] == from_raster["classes"]


@pytest.fixture(scope="module")
def panoptic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained Panoptic-DeepLab checkpoint for the test scene's 4 bands."""
    from geoseg.models.panoptic import build_panoptic_model

    torch.manual_seed(1)
    module = build_panoptic_model("unet", "resnet18", len(TINY_BANDS), len(SCHEMA))
    meta = ModelMeta(
        task="panoptic", arch="panoptic-deeplab", encoder="resnet18", bands=TINY_BANDS,
        normalization=Normalization((0.2,) * 4, (0.1,) * 4, scale=1e-4), schema=SCHEMA,
        window=64, margin=8, options={"body": "unet", "encoder_depth": 5},
    )  # fmt: skip
    path = tmp_path_factory.mktemp("panoptic") / "pan.safetensors"
    return save_checkpoint(path, module.state_dict(), meta)


@pytest.mark.usefixtures("one_torch_thread")
def test_panoptic_deeplab_checkpoint_runs_through_predict(
    tmp_path: Path, scene: Path, panoptic_checkpoint: Path
) -> None:
    """A Panoptic-DeepLab checkpoint: loaded by the registry, stitched, panoptic COG written."""
    from geoseg.models.panoptic import PanopticPredictor

    ckpt = panoptic_checkpoint
    assert isinstance(load_predictor(model_spec(str(ckpt), "cpu")), PanopticPredictor)
    out = tmp_path / "pan.tif"
    args = ["predict", str(scene), "-m", str(ckpt), "-o", str(out), "--device", "cpu",
            "--torch-threads", "1", "--workers", "1"]  # fmt: skip
    res = CliRunner().invoke(cli, args)  # the checkpoint's own task: panoptic
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as src:
        assert src.descriptions == ("class", "instance")
        classes, ids = src.read()
    assert set(np.unique(classes)) <= {0, 1, 255}
    assert (ids[classes == 0] == 0).all()  # stuff has no id
    for i in np.unique(ids[ids > 0]):
        assert set(np.unique(classes[ids == i])) == {1}  # an id is one thing class


def test_ap50_ranks_objects_by_the_scores_predict_stores(tmp_path: Path, prediction: Path) -> None:
    """A' (the hit, id 1) and C (the false positive, id 2): AP50 follows their ranking."""
    reference = write_raster(tmp_path / "ref.tif", _paint(["A", "B"])[None], transform=TRANSFORM)
    # hit first: precision 1 at recall 1/2 -> 0.5; false positive first: 1/2 at 1/2 -> 0.25
    for scores, expected in (([0, 0.9, 0.3], 0.5), ([0, 0.2, 0.95], 0.25)):
        with rasterio.open(prediction, "r+") as dst:
            dst.update_tags(GEOSEG_INSTANCE_SCORES=json.dumps(scores))
        report = _evaluate(tmp_path, prediction, reference, f"ev{expected}")
        assert report["ap50"] == pytest.approx(expected)
        assert report["pq"] == pytest.approx(5 / 14)  # PQ does not depend on scores


def _label_map(path: Path, labels: np.ndarray, classes: list[tuple[int, str]]) -> Path:
    """A label map as `geoseg predict` writes it: uint8 classes with names in a tag."""
    write_raster(path, labels[None].astype(np.uint8), nodata=255)
    schema = ClassSchema(tuple(ClassInfo(i, n, (10 * i, 20, 30)) for i, n in classes))
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: json.dumps(schema.to_json())})
    return path


@pytest.mark.usefixtures("one_torch_thread")
def test_panoptic_from_an_instance_model_and_a_semantic_map(
    tmp_path: Path, scene: Path, instance_checkpoint: Path
) -> None:
    """Two models (Panoptic FPN rules): objects from -m, stuff from the label map."""
    labels = np.full((100, 120), 2, np.uint8)  # forest
    labels[:, 60:] = 3  # water
    labels[40:60, :] = 4  # "building" in the label map: a thing, left to the instance model
    lc = _label_map(tmp_path / "lc.tif", labels, [(2, "forest"), (3, "water"), (4, "Building")])
    pan = tmp_path / "pan.tif"
    args = ["predict", str(scene), "-m", str(instance_checkpoint), "--task", "panoptic",
            "-o", str(pan), "--stuff-labels", str(lc), "--device", "cpu",
            "--torch-threads", "1", "--workers", "1"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    with rasterio.open(pan) as src:
        classes, ids = src.read()
        tagged = ClassSchema.from_json(json.loads(src.tags()[CLASSES_TAG]))
    assert [(c.id, c.name, c.is_thing) for c in tagged.classes] == [
        (1, "building", True), (2, "forest", False), (3, "water", False),
    ]  # fmt: skip
    assert (classes[ids > 0] == 1).all()
    free = ids == 0
    stuff = free & (labels != 4)
    np.testing.assert_array_equal(classes[stuff], labels[stuff])  # stuff from the map
    assert (classes[free & (labels == 4)] == 255).all()  # a thing nobody detected: void
    # A class id that means two different classes is refused, before any work.
    clash = _label_map(tmp_path / "clash.tif", labels, [(1, "cultivated"), (2, "forest")])
    res = CliRunner().invoke(cli, [*args[:7], str(tmp_path / "pan2.tif"), "--stuff-labels",
                                   str(clash), *args[10:]])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "clash.tif: class 1 is 'cultivated' here but 'building'" in res.output
    assert not (tmp_path / "pan2.tif").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_evaluate_a_panoptic_checkpoint(
    tmp_path: Path, scene: Path, panoptic_checkpoint: Path
) -> None:
    """`evaluate -m panoptic.safetensors` runs it (task panoptic) and scores stuff too."""
    ckpt = panoptic_checkpoint
    ids = np.zeros((100, 120), np.uint32)
    ids[10:30, 10:30], ids[50:70, 60:90] = 1, 2
    classes = np.where(ids > 0, 1, 0).astype(np.uint32)
    reference = write_raster(
        tmp_path / "ref.tif", np.stack([ids, classes]), descriptions=("instance", "class")
    )
    out = tmp_path / "ev"
    res = CliRunner().invoke(cli, ["evaluate", "-m", str(ckpt), "--image", str(scene),
                                   "--labels", str(reference), "-o", str(out),
                                   "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["task"] == "panoptic"
    assert 0 in {c["id"] for c in report["classes"]}  # stuff ("ground") is scored too
    assert 0.0 <= report["pq"] <= 1.0
